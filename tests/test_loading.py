import os
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import studio
from studio.samples.data import digits_arrays_from_sklearn, digits_split


def test_safetensors_state_dict_finds_its_sample_architecture(tmp_path, samples):
    sample = samples["digits-cnn"]
    path = tmp_path / "cnn.safetensors"
    save_file(sample.model.state_dict(), str(path))
    model = studio.load_model(path)
    x = sample.eval_data[0][:16]
    assert torch.equal(model(x), sample.model(x))


def test_torchscript_and_weights_only_files(tmp_path, samples):
    sample = samples["digits-mlp"]
    x = sample.eval_data[0][:16]
    scripted = tmp_path / "mlp.pt"
    torch.jit.script(sample.model).save(str(scripted))
    assert torch.allclose(studio.load_model(scripted)(x), sample.model(x))
    state = tmp_path / "mlp_state.pth"
    torch.save({"state_dict": sample.model.state_dict()}, state)
    assert torch.equal(studio.load_model(state)(x), sample.model(x))


def test_torchscript_model_can_be_evaluated(tmp_path, samples):
    sample = samples["digits-mlp"]
    path = tmp_path / "mlp.pt"
    torch.jit.script(sample.model).save(str(path))
    session = studio.Session(studio.load_model(path), sample.eval_data)
    assert session.layer_names == ["fc1", "fc2", "fc3"]
    assert session.evaluate(studio.Plan.uniform(8)).delta >= -0.005


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/studio-pwned",))


def test_pickled_code_is_never_run(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"x": Evil()}, f)
    torch.save({"w": Evil()}, tmp_path / "evil2.pt")
    for p in (path, tmp_path / "evil2.pt"):
        with pytest.raises(ValueError, match="cannot be loaded safely"):
            studio.load_model(p)
    assert not os.path.exists("/tmp/studio-pwned")


def test_unknown_state_dict_and_garbage(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(path))
    with pytest.raises(ValueError, match="match none of the sample architectures"):
        studio.load_model(path)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        studio.load_model(junk)
    with pytest.raises(ValueError, match="no model file"):
        studio.load_model(tmp_path / "missing.pt")


def test_samples_list_and_records(samples):
    assert studio.list_samples() == ["digits-mlp", "digits-cnn", "digits-resnet", "digits-vit"]
    for sample in samples.values():
        assert not sample.model.training
        x, y = sample.eval_data
        assert x.shape == (500, 1, 8, 8) and y.shape == (500,)
        with torch.no_grad():
            acc = float((sample.model(x).argmax(1) == y).float().mean())
        assert acc == pytest.approx(sample.float_accuracy, abs=1e-6)
    with pytest.raises(ValueError, match="available samples"):
        studio.load_sample("resnet50")


def test_bundled_digits_match_scikit_learn():
    images, labels = digits_arrays_from_sklearn()
    (train_x, _), (eval_x, eval_y) = digits_split()
    assert len(train_x) + len(eval_x) == len(labels) == 1797
    with np.load(studio.samples.data.DIGITS_NPZ) as bundled:
        assert np.array_equal(bundled["images"], images) and np.array_equal(bundled["labels"], labels)

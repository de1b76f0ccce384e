import copy
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import studio
from studio.engine import Cancelled, LayerSpec, Plan, Report, Session


def test_readme_api_names(samples):
    sample = samples["digits-cnn"]
    session = studio.Session(sample.model, sample.eval_data)
    assert [layer.name for layer in session.layers] == ["features.0", "features.3", "features.7", "classifier.1"]
    assert session.layers[0].kind == "Conv2d" and session.layers[0].weight_shape == (16, 1, 3, 3)
    assert session.layers[0].params == 16 * 9 + 16  # the folded BatchNorm adds a bias
    assert session.layers[0].folded_bn == "features.1"
    plan = studio.Plan.uniform(bits=8).with_layer("features.0", bits=4, prune=0.5)
    report = session.evaluate(plan)
    assert report.delta == pytest.approx(report.metric - report.baseline_metric)
    assert report.compression_ratio == pytest.approx(report.float_size_bytes / report.size_bytes)
    layer = report.layers["features.0"]
    assert layer.total == layer.codes + layer.scales + layer.index + layer.other
    assert Report.from_dict(report.to_dict()) == report


@pytest.mark.parametrize("name", studio.list_samples())
def test_uniform_8bit_loses_at_most_half_a_point(samples, name):
    sample = samples[name]
    report = Session(sample.model, sample.eval_data).evaluate(Plan.uniform(8))
    assert report.baseline_metric >= 0.95
    assert report.delta >= -0.005
    assert report.fidelity.agreement >= 0.99


def test_mlp_4bit_half_pruned_compresses_8x(mlp_session):
    report = mlp_session.evaluate(Plan.uniform(4, prune=0.5))
    assert report.compression_ratio >= 8
    for layer in report.layers.values():
        assert layer.total == layer.codes + layer.scales + layer.index + layer.other
        assert layer.sparsity == pytest.approx(0.5, abs=1e-3)
    assert report.size_bytes == sum(layer.total for layer in report.layers.values()) + report.rest_bytes + report.container_bytes


def test_never_mutates_the_users_model(samples):
    sample = samples["digits-resnet"]
    before = copy.deepcopy(sample.model.state_dict())
    training = sample.model.training
    session = Session(sample.model, sample.eval_data)
    session.evaluate(Plan.uniform(2, prune=0.9, cluster=True))
    session.compressed_model(Plan.uniform(4))
    after = sample.model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sample.model.training == training


def test_float_plan_reproduces_baseline_and_bn_fold_is_exact(samples):
    sample = samples["digits-cnn"]
    session = Session(sample.model, sample.eval_data)
    report = session.evaluate(Plan())
    assert report.delta == 0 and report.fidelity.agreement == 1.0
    with torch.no_grad():
        ref = sample.model(sample.eval_data[0])
        folded = session.compressed_model(Plan())(sample.eval_data[0])
    assert torch.allclose(ref, folded, atol=1e-4)
    assert float((ref.argmax(1) == sample.eval_data[1]).float().mean()) == pytest.approx(report.baseline_metric)


def test_pruned_weights_stay_exactly_zero(cnn_session):
    for spec in [LayerSpec(bits=4, prune=0.6), LayerSpec(bits=3, prune=0.6, cluster=True), LayerSpec(bits=5, prune=0.6, symmetric=False)]:
        result = cnn_session.compressed("features.3", spec)
        assert torch.all(result.dequant_view[~result.keep] == 0)


def test_changing_one_layer_recompresses_only_that_layer(samples, monkeypatch):
    sample = samples["digits-vit"]
    session = Session(sample.model, sample.eval_data)
    session.evaluate(Plan.uniform(8))
    calls = []
    import studio.engine.prepared as session_module

    real = session_module.compress_view
    monkeypatch.setattr(session_module, "compress_view", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    session.evaluate(Plan.uniform(8).with_layer("head", bits=4))
    assert calls == [LayerSpec(bits=4)]
    session.evaluate(Plan.uniform(8))
    assert len(calls) == 1  # cached


def test_unknown_layer_names_fail_with_the_valid_list(mlp_session):
    with pytest.raises(ValueError, match=r"does not have.*fc1"):
        mlp_session.evaluate(Plan().with_layer("features.0", bits=4))


def test_eval_data_that_does_not_fit_names_the_expected_input(samples):
    sample = samples["digits-mlp"]
    with pytest.raises(ValueError, match="in_features=64"):
        Session(sample.model, (torch.randn(10, 3, 5), torch.zeros(10, dtype=torch.long)))
    cnn = samples["digits-cnn"].model
    with pytest.raises(ValueError, match=r"in_channels=1"):
        Session(cnn, (torch.randn(10, 3, 8, 8), torch.zeros(10, dtype=torch.long)))


def test_bad_models_and_data(tiny):
    model, data = tiny
    with pytest.raises(ValueError, match="no compressible layers"):
        Session(nn.Sequential(nn.ReLU()), data)
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        Session(broken, data)
    with pytest.raises(ValueError, match="empty"):
        Session(model, (torch.empty(0, 8), torch.empty(0, dtype=torch.long)))
    with pytest.raises(ValueError, match="empty"):
        Session(model, [])
    with pytest.raises(ValueError, match="must match"):
        Session(model, (torch.randn(5, 8), torch.zeros(4, dtype=torch.long)))
    with pytest.raises(ValueError, match="torch.nn.Module"):
        Session("model.pt", data)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            Session(model, data, device="cuda")


def test_eval_data_forms_agree(tiny):
    model, (x, y) = tiny
    plan = Plan.uniform(3)
    expected = Session(model, (x, y)).evaluate(plan)
    loader = DataLoader(TensorDataset(x, y), batch_size=7)
    batches = [(x[i : i + 9], y[i : i + 9]) for i in range(0, 40, 9)]
    for data in (loader, batches):
        got = Session(model, data).evaluate(plan)
        assert got.metric == pytest.approx(expected.metric)
        assert got.size_bytes == expected.size_bytes


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.head = nn.Linear(8, 5)

    def forward(self, input_ids, attention_mask=None):
        h = self.embed(input_ids)
        if attention_mask is not None:
            h = h * attention_mask.unsqueeze(-1)
        return {"logits": self.head(h), "hidden": h}


def test_dict_inputs_dict_outputs_and_token_targets():
    torch.manual_seed(0)
    model = TwoInputs().eval()
    ids = torch.randint(0, 20, (12, 6))
    mask = torch.ones(12, 6)
    targets = model(ids, mask)["logits"].argmax(-1)
    targets[:, -1] = -100  # ignored positions
    session = Session(model, ({"input_ids": ids, "attention_mask": mask}, targets))
    assert [layer.kind for layer in session.layers] == ["Embedding", "Linear"]
    assert session.baseline_metric == 1.0
    report = session.evaluate(Plan.uniform(2))
    assert 0 <= report.metric <= 1
    tuple_session = Session(model, ((ids, mask), None))
    assert tuple_session.metric_name == "top-1 agreement with float"
    assert tuple_session.evaluate(Plan()).metric == 1.0


def test_custom_metric_and_output_fn(tiny):
    model, (x, y) = tiny

    def neg_mse(outputs, targets):
        return -float(((outputs - torch.nn.functional.one_hot(targets, 4).float()) ** 2).mean())

    session = Session(model, (x, y), metric=neg_mse, output_fn=lambda out: out * 1.0)
    report = session.evaluate(Plan.uniform(2))
    assert session.metric_name == "neg_mse"
    assert report.delta_stderr is None and report.metric < 0


def test_delta_noise_estimate(mlp_session):
    report = mlp_session.evaluate(Plan.uniform(3))
    assert report.delta_stderr is not None and report.delta_stderr > 0
    assert report.delta_within_noise == (abs(report.delta) <= 1.96 * report.delta_stderr)
    assert mlp_session.evaluate(Plan()).delta_stderr == 0


def test_progress_and_cancel(mlp_session):
    seen = []
    mlp_session.evaluate(Plan.uniform(6), progress=lambda d, t: seen.append((d, t)))
    # progress counts module calls: 2 batches (500 samples by 256) x 3 Linear layers
    assert seen[-1][0] == seen[-1][1] == 6
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    with pytest.raises(Cancelled):
        mlp_session.evaluate(Plan.uniform(5), cancel=lambda: True)
    # a cancelled evaluation leaves the session usable
    assert mlp_session.evaluate(Plan()).delta == 0


def test_engine_imports_no_ui_packages():
    code = (
        "import sys, studio.engine, studio\n"
        "bad = [m for m in ('ipywidgets', 'plotly', 'IPython', 'voila') if m in sys.modules]\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_torch_export_loads_into_the_original_architecture(samples, tmp_path):
    from safetensors.torch import load_file

    sample = samples["digits-cnn"]
    session = Session(sample.model, sample.eval_data)
    plan = Plan.uniform(4).with_layer("features.3", bits=2, prune=0.5)
    path = session.export(plan, tmp_path / "out.safetensors", format="torch")
    model = studio.samples.SAMPLES["digits-cnn"].build()
    model.load_state_dict(load_file(str(path)))
    model.eval()
    x = sample.eval_data[0]
    with torch.no_grad():
        assert torch.allclose(model(x), session.compressed_model(plan)(x), atol=1e-4)
    assert not list(tmp_path.glob(".*tmp"))  # nothing half-written left behind
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # as readable as any file the user writes


def test_plan_export_round_trips(mlp_session, tmp_path):
    plan = Plan.uniform(3).with_layer("fc3", bits=8)
    path = mlp_session.export(plan, tmp_path, format="plan")
    assert Plan.from_json(path.read_text()) == plan
    with pytest.raises(ValueError, match="unknown export format"):
        mlp_session.export(plan, tmp_path, format="zip")


class SentenceEncoder(nn.Module):
    """sentence-transformers style: forward takes one dict of features."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(30, 8)
        self.proj = nn.Linear(8, 4)

    def forward(self, features: dict) -> torch.Tensor:
        h = self.embed(features["input_ids"]) * features["attention_mask"].unsqueeze(-1)
        return self.proj(h.mean(1))


def test_a_forward_taking_one_dict_is_detected_or_chosen():
    torch.manual_seed(0)
    model = SentenceEncoder().eval()
    ids = torch.randint(0, 30, (12, 5))
    data = ({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, None)
    session = Session(model, data)
    assert session.input_mode == "dict"
    assert session.evaluate(Plan.uniform(8)).fidelity.cosine > 0.99
    assert Session(model, data, input_mode="dict").baseline_metric == 1.0
    with pytest.raises(studio.StudioError, match="forward pass failed"):
        Session(model, data, input_mode="kwargs")
    with pytest.raises(ValueError, match="input_mode must be one of"):
        Session(model, data, input_mode="keywords")


def test_float_model_is_a_trainable_copy(samples):
    sample = samples["digits-cnn"]
    session = Session(sample.model, sample.eval_data)
    model = session.float_model()
    assert all(p.requires_grad for p in model.parameters())  # folded layers too
    assert not any(p.data_ptr() == q.data_ptr() for p in model.parameters() for q in sample.model.parameters())

"""Exports of plans with float16 scales, codebooks and biases (``param_dtype="float16"``)."""

import os

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import studio
from studio.engine import LayerSpec, Plan
from studio.engine.formats import export_bytes
from studio.engine.formats.studio import read

HALF = "float16"


def _plans(session: studio.Session) -> dict[str, Plan]:
    first, second = session.layer_names[0], session.layer_names[1]
    return {
        "channel": Plan.uniform(4, param_dtype=HALF),
        "tensor-asym": Plan.uniform(5, granularity="tensor", symmetric=False, param_dtype=HALF),
        "kmeans": Plan.uniform(3, cluster=True, param_dtype=HALF),
        "pruned-huffman": Plan.preset("deep-compression", session).with_all(param_dtype=HALF),
        "mixed": Plan.uniform(8, param_dtype=HALF).with_layer(first, bits=3, prune=0.5, clip="mse").with_layer(second, bits=None),
    }


PLAN_NAMES = ["channel", "tensor-asym", "kmeans", "pruned-huffman", "mixed"]


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn"])
@pytest.mark.parametrize("plan_name", PLAN_NAMES)
def test_studio_file_holds_float16_params_and_is_the_reported_size(samples, tmp_path, name, plan_name):
    sample = samples[name]
    session = studio.Session(sample.model, sample.eval_data)
    plan = _plans(session)[plan_name]
    full = plan.with_all(param_dtype="float32")
    path = session.export(plan, tmp_path / "m.studio", format="studio")
    report = session.size(plan)
    assert os.path.getsize(path) == report.size_bytes < session.size(full).size_bytes
    decoded = read(path.read_bytes())
    compiled = session.compile(plan)
    for info in compiled.layers:  # the biases read back are the rounded ones, exactly
        bias = compiled.biases[info.name]
        if bias is not None:
            assert bias.dtype == torch.float16
            assert torch.equal(decoded.state[f"{info.name}.bias"], bias.to(torch.float32))
    x = sample.eval_data[0][:128]
    with torch.no_grad():
        assert torch.equal(studio.load_compressed(path)(x), session.compressed_model(plan)(x))
    check = session.verify(path)
    assert check.metric == check.studio_metric == session.evaluate(plan).metric
    assert check.file_bytes == check.estimated_bytes


@pytest.mark.parametrize("fmt", ["onnx", "onnx-fast", "torch"])
@pytest.mark.parametrize("plan_name", ["channel", "kmeans", "pruned-huffman"])
def test_other_formats_reproduce_float16_params(cnn_session, tmp_path, fmt, plan_name):
    plan = _plans(cnn_session)[plan_name]
    path = cnn_session.export(plan, tmp_path / "m", format=fmt)
    check = cnn_session.verify(path)
    assert abs(check.metric - check.studio_metric) <= 0.003
    assert check.studio_metric == cnn_session.evaluate(plan).metric


def test_onnx_holds_the_float16_values_and_matches_the_studio_outputs(mlp_session):
    plan = Plan.uniform(4, param_dtype=HALF).with_layer("fc3", bits=3, cluster=True, param_dtype=HALF)
    data, _ = export_bytes(mlp_session.compile(plan), "onnx")
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load_from_string(data).graph.initializer}
    compiled = mlp_session.compile(plan)
    for name in mlp_session.layer_names:
        bias = inits[f"{name}.bias"]
        assert bias.dtype == np.float32 and np.array_equal(bias, compiled.biases[name].to(torch.float32).numpy())
    scales = [v for k, v in inits.items() if "_scale" in k and k.startswith("fc1")]
    assert scales and np.array_equal(scales[0], scales[0].astype(np.float16).astype(np.float32))
    import onnxruntime as ort

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = mlp_session.batches()[0][0]
    with torch.no_grad():
        expected = mlp_session.compressed_model(plan)(x).numpy()
    np.testing.assert_allclose(sess.run(None, {"input": x.numpy()})[0], expected, rtol=1e-5, atol=1e-5)


def test_torch_file_of_a_folded_layer_gives_the_rounded_bias_back(cnn_session, tmp_path):
    plan = Plan.uniform(8, param_dtype=HALF)
    assert cnn_session.folds  # digits-cnn folds BatchNorms into its convolutions
    compiled = cnn_session.compile(plan)
    state = compiled.original_state_dict()
    from studio.engine.bn import fold_state_dict

    folded = fold_state_dict(state, list(compiled.folds), compiled.bn_eps)
    for layer, _ in compiled.folds:
        got = folded[f"{layer}.bias"]
        want = compiled.biases[layer].to(torch.float32)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_a_float32_layer_spec_reads_old_style(mlp_session, tmp_path):
    plan = Plan.uniform(4).with_layer("fc2", LayerSpec(bits=4, param_dtype=HALF))
    path = mlp_session.export(plan, tmp_path / "m.studio", format="studio")
    decoded = read(path.read_bytes())
    assert decoded.plan == plan
    assert torch.equal(decoded.state["fc1.bias"], mlp_session.compile(plan).biases["fc1"])

import pytest
import torch

import studio
from studio.engine import LayerSpec, Plan, Session
from studio.engine.activations import ActStats, choose_qparams, fake_quant, qparams_for_range


def _stats(x: torch.Tensor) -> ActStats:
    stats = ActStats()
    stats.observe_range(x)
    stats.observe_hist(x)
    return stats


def test_uint8_range_holds_zero_and_matches_torch():
    q = qparams_for_range(0.5, 3.0, 8)  # widened to [0, 3]
    assert (q.qmin, q.qmax, q.zero_point) == (0, 255, 0)
    x = torch.linspace(-1, 4, 1001)
    ref = torch.fake_quantize_per_tensor_affine(x, q.scale, q.zero_point, 0, 255)
    assert torch.allclose(fake_quant(x, q), ref, atol=q.scale * 1.01)  # equal but for exact ties
    assert fake_quant(torch.zeros(1), qparams_for_range(-1.3, 2.2, 8)).item() == 0.0
    q16 = qparams_for_range(-2.0, 1.0, 16)
    assert (q16.zero_point, q16.qmin, q16.qmax) == (0, -32767, 32767)


@pytest.mark.parametrize("method", ["percentile", "mse", "kl"])
def test_range_methods_clip_a_rare_outlier(method):
    torch.manual_seed(0)
    x = torch.cat([torch.randn(100_000), torch.tensor([40.0])])
    stats = _stats(x)
    full = choose_qparams(stats, 8, "minmax")
    clipped = choose_qparams(stats, 8, method)
    assert clipped.scale < full.scale
    err = lambda q: float(((fake_quant(x[:-1], q) - x[:-1]) ** 2).mean())  # noqa: E731
    assert err(clipped) < err(full)


def test_unknown_calibration_method():
    with pytest.raises(ValueError, match="calibration must be one of"):
        Plan(calibration="entropy2")
    with pytest.raises(ValueError, match="act_bits must be 8, 16 or None"):
        LayerSpec(act_bits=4)


@pytest.mark.parametrize("name", studio.list_samples())
def test_full_integer_and_16x8_presets_keep_accuracy(samples, name):
    sample = samples[name]
    session = Session(sample.model, sample.eval_data)
    for preset in ("full-integer", "16x8", "dynamic-range", "float16"):
        report = session.evaluate(Plan.preset(preset, session))
        assert report.delta >= -0.01, (preset, report.delta)


def test_activation_params_are_counted_and_applied(mlp_session):
    weights_only = mlp_session.size(Plan.uniform(8))
    full = mlp_session.size(Plan.uniform(8, act_bits=8))
    # every Linear stores an input and an output scale (fp32) and zero-point (uint8);
    # the zlib-compressed header (which holds the plan) may differ by a byte or so
    layer_bytes = lambda r: r.size_bytes - r.container_bytes  # noqa: E731
    assert layer_bytes(full) - layer_bytes(weights_only) == 3 * 2 * (4 + 1)
    params = mlp_session.activation_params(Plan.uniform(8, act_bits=8))
    assert set(params) == {"fc1", "fc2", "fc3"}
    q_in, q_out = params["fc1"]
    assert q_in.zero_point == 0 and q_in.scale == pytest.approx(1 / 255, rel=1e-6)  # pixels in [0, 1]
    model = mlp_session.compressed_model(Plan.uniform(8, act_bits=8))
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert not torch.equal(model(x), mlp_session.compressed_model(Plan.uniform(8))(x))


def test_calibration_data_can_be_given(samples):
    sample = samples["digits-cnn"]
    x, y = sample.train_data
    session = Session(sample.model, sample.eval_data, calibration_data=(x[:64], y[:64]))
    assert session.evaluate(Plan.preset("full-integer", session)).delta >= -0.01


def test_presets_registry_and_deep_compression(cnn_session):
    assert Plan.presets() == ["dynamic-range", "full-integer", "float16", "16x8", "deep-compression"]
    plan = Plan.preset("deep-compression", cnn_session)
    assert plan.spec_for("features.0") == LayerSpec(bits=6, prune=0.2, cluster=True)
    assert plan.spec_for("classifier.1") == LayerSpec(bits=5, prune=0.3, cluster=True)
    assert plan.huffman
    with pytest.raises(ValueError, match="unknown preset"):
        Plan.preset("int3")


def test_torchscript_models_refuse_activation_quantization(tmp_path, samples):
    sample = samples["digits-mlp"]
    path = tmp_path / "m.pt"
    torch.jit.script(sample.model).save(str(path))
    session = Session(studio.load_model(path), sample.eval_data)
    with pytest.raises(ValueError, match="eager PyTorch model"):
        session.evaluate(Plan.uniform(8, act_bits=8))
    assert session.evaluate(Plan.uniform(8)).delta >= -0.005


def _count_passes(session):
    calls = []
    calibrator = session._m.calibrator
    original = calibrator._observe
    calibrator._observe = lambda *a, **k: calls.append(a[2]) or original(*a, **k)
    return calls


def test_min_max_calibration_runs_one_pass_and_histograms_come_when_a_method_needs_them(samples):
    from studio.engine import Plan, Session

    sample = samples["digits-cnn"]
    x, y = sample.eval_data
    session = Session(sample.model, sample.eval_data, calibration_data=(x[:200], y[:200]))  # not the first eval batch
    calls = _count_passes(session)
    minmax = session.evaluate(Plan.uniform(8, act_bits=8))
    assert calls == ["observe_range"]
    session.evaluate(Plan.uniform(8, act_bits=8, calibration="kl"))
    assert calls == ["observe_range", "observe_hist"]
    session.evaluate(Plan.uniform(8, act_bits=8, calibration="percentile"))
    assert calls == ["observe_range", "observe_hist"]  # statistics are kept for the session
    fresh = Session(sample.model, sample.eval_data, calibration_data=(x[:200], y[:200]))  # gathers both at once
    fresh.evaluate(Plan.uniform(8, act_bits=8, calibration="kl"))
    assert fresh.evaluate(Plan.uniform(8, act_bits=8)).metric == minmax.metric
    assert fresh.activation_params(Plan.uniform(8, act_bits=8, calibration="kl")) == session.activation_params(Plan.uniform(8, act_bits=8, calibration="kl"))


@pytest.mark.parametrize("name", ["digits-cnn", "digits-resnet", "digits-vit"])
def test_default_calibration_ranges_come_from_the_sessions_first_pass(samples, name):
    """By default the calibration set is the first eval batch: its ranges are gathered during the
    session's own float pass, equal to those of a pass of their own, and min-max needs no pass."""
    from studio.engine import Plan, Session

    sample = samples[name]
    x, y = sample.eval_data
    session = Session(sample.model, sample.eval_data)
    calls = _count_passes(session)
    plan = Plan.uniform(8, act_bits=8)
    report = session.evaluate(plan)
    assert calls == []
    separate = Session(sample.model, sample.eval_data, calibration_data=(x[:256], y[:256]))  # the same set, its own pass
    assert separate.evaluate(plan).metric == report.metric
    ours, theirs = session._m.calibrator._stats, separate._m.calibrator._stats
    assert ours.keys() == theirs.keys() and len(ours) >= 2 * len(session.layer_names) - 2
    assert all((ours[k].lo, ours[k].hi) == (theirs[k].lo, theirs[k].hi) for k in ours)
    assert session.activation_params(plan) == separate.activation_params(plan)
    session.evaluate(Plan.uniform(8, act_bits=8, calibration="kl"))
    assert calls == ["observe_hist"]  # histograms still need a pass of their own

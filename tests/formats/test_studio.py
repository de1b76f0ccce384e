import os

import numpy as np
import pytest
import torch

import studio
from studio.engine import LayerSpec, Plan
from studio.engine.bitstream import huffman_decode, huffman_encode, pack, unpack
from studio.engine.huffman import huffman_bytes

PLANS = {
    "full-integer": lambda s: Plan.preset("full-integer", s),
    "float16": lambda s: Plan.preset("float16", s),
    "deep-compression": lambda s: Plan.preset("deep-compression", s),
    "mixed": lambda s: Plan.uniform(8).with_layer(s.layer_names[0], bits=3).with_layer(s.layer_names[1], bits=4, prune=0.5),
    "structured-asym": lambda s: Plan.uniform(5, prune=0.3, prune_method="structured", symmetric=False, granularity="tensor"),
    "2:4-float": lambda s: Plan.uniform(None, prune=0.5, prune_method="2:4"),
    "16x8-mse": lambda s: Plan.uniform(6, act_bits=16, clip="mse", calibration="mse"),
}


@pytest.mark.parametrize("name", studio.list_samples())
@pytest.mark.parametrize("plan_name", list(PLANS))
def test_studio_file_is_the_reported_size_and_reproduces_the_model(samples, tmp_path, name, plan_name):
    sample = samples[name]
    session = studio.Session(sample.model, sample.eval_data)
    plan = PLANS[plan_name](session)
    path = session.export(plan, tmp_path / "m.studio", format="studio")
    report = session.size(plan)
    assert os.path.getsize(path) == report.size_bytes
    model = studio.load_compressed(path)
    x = sample.eval_data[0][:128]
    with torch.no_grad():
        assert torch.equal(model(x), session.compressed_model(plan)(x))


@pytest.mark.parametrize("width", [1, 3, 5, 8])
def test_pack_round_trip(width):
    rng = np.random.default_rng(width)
    symbols = rng.integers(0, 2**width, 1001)
    data = pack(symbols, width)
    assert len(data) == -(-1001 * width // 8)
    assert np.array_equal(unpack(data, width, 1001), symbols)


def test_huffman_round_trip_and_size():
    rng = np.random.default_rng(0)
    symbols = np.clip(rng.geometric(0.3, 5000) - 1, 0, 15)
    data = huffman_encode(symbols, 16)
    assert len(data) == huffman_bytes(np.bincount(symbols, minlength=16))
    assert np.array_equal(huffman_decode(data, 16, 5000), symbols)


def test_damaged_files_are_refused(tmp_path, mlp_session):
    path = mlp_session.export(Plan.uniform(4), tmp_path / "m.studio", format="studio")
    data = path.read_bytes()
    (tmp_path / "bad.studio").write_bytes(b"NOTSTUDIO" + data[9:])
    with pytest.raises(ValueError, match="not a studio file"):
        studio.load_compressed(tmp_path / "bad.studio")
    (tmp_path / "short.studio").write_bytes(data[:-100])
    with pytest.raises(ValueError, match="truncated"):
        studio.load_compressed(tmp_path / "short.studio")


def test_custom_architecture_needs_arch(tmp_path, tiny):
    model, data = tiny
    session = studio.Session(model, data)
    plan = Plan.uniform(4).with_layer("2", LayerSpec(bits=8, act_bits=8))
    path = session.export(plan, tmp_path / "t.studio", format="studio")
    with pytest.raises(ValueError, match="pass arch="):
        studio.load_compressed(path)
    loaded = studio.load_compressed(path, arch=model)
    with torch.no_grad():
        assert torch.equal(loaded(data[0]), session.compressed_model(plan)(data[0]))


def _wide_model(seed: int) -> tuple[torch.nn.Module, tuple[torch.Tensor, None]]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(600, 300), torch.nn.ReLU(), torch.nn.Linear(300, 10)).eval()
    return model, (torch.randn(16, 600), None)


@pytest.mark.parametrize(
    "spec",
    [
        LayerSpec(bits=4, prune=0.97, symmetric=False),  # wide gaps, a zero code per row
        LayerSpec(bits=3, prune=0.99),  # gaps of hundreds: filler zeros
        LayerSpec(bits=5, prune=0.9, cluster=True),
        LayerSpec(bits=None, prune=0.98),  # float values, relative index
        LayerSpec(bits=8, prune=0.3),  # > 131072 Huffman codes: the block-parallel decoder
        LayerSpec(bits=6, granularity="tensor", symmetric=False, clip="mse"),
    ],
)
def test_pruned_layers_with_wide_gaps_are_the_reported_size(tmp_path, spec):
    model, data = _wide_model(0)
    with torch.no_grad():  # whole empty stretches: gaps of thousands
        model[0].weight[:, :200] = 0.0
        model[0].weight[100:180] = 0.0
    session = studio.Session(model, data)
    plan = Plan(default=spec)
    report = session.size(plan)
    first = report.layers["0"].size
    if spec.prune >= 0.9:
        assert first.index_encoding.startswith("relative-")
    path = session.export(plan, tmp_path / "w.studio", format="studio")
    assert os.path.getsize(path) == report.size_bytes
    loaded = studio.load_compressed(path, arch=_wide_model(1)[0])
    with torch.no_grad():
        assert torch.equal(loaded[0].weight, session.compressed_model(plan)[0].weight)
        assert torch.equal(loaded(data[0]), session.compressed_model(plan)(data[0]))


def test_timing_runs_up_to_three_passes_and_fewer_when_they_are_slow(monkeypatch):
    from studio.engine.formats import base

    calls = []

    def run():
        calls.append(1)
        return []

    base.time_passes(run)
    assert len(calls) == 1 + base.REPEATS  # the scored pass, then the timed ones
    calls.clear()
    monkeypatch.setattr(base, "TIMING_BUDGET_S", 0.0)  # every pass is over budget: one timed pass
    outputs, ms = base.time_passes(run)
    assert len(calls) == 2 and ms >= 0.0

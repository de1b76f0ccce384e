"""float16 quantization parameters (``LayerSpec.param_dtype``): rounding, bytes, the working model."""

import json

import numpy as np
import pytest
import torch

import studio
from studio.engine import LayerSpec, Plan, compress_view
from studio.engine.half import FP16_TINY, half_scales, half_values
from studio.engine.search_space import SearchSpace

HALF = "float16"


def _is_half(values: torch.Tensor) -> bool:
    return torch.equal(values, values.to(torch.float16).to(torch.float32))


def test_param_dtype_round_trips_and_old_plans_load():
    spec = LayerSpec(bits=4, cluster=True, prune=0.5, param_dtype=HALF)
    assert LayerSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    plan = Plan.uniform(4, param_dtype=HALF).with_layer("fc1", bits=8)
    assert Plan.from_json(plan.to_json()) == plan
    assert plan.spec_for("fc1").param_dtype == HALF
    old = {"version": 1, "default": {"bits": 4, "granularity": "channel", "symmetric": True, "clip": "minmax", "prune": 0.0,
                                     "prune_method": "unstructured", "cluster": False, "act_bits": None}}
    assert Plan.from_dict(old).default == LayerSpec(bits=4, param_dtype="float32")
    assert spec.label() == "4-bit k-means, 50% pruned, fp16 params"
    assert Plan.uniform(4).with_all(param_dtype=HALF).default.param_dtype == HALF


@pytest.mark.parametrize("bad", ["half", "bfloat16", None, 16])
def test_a_bad_param_dtype_says_what_to_use(bad):
    with pytest.raises(studio.StudioError, match="param_dtype must be one of"):
        LayerSpec(bits=4, param_dtype=bad)
    with pytest.raises(studio.StudioError, match="param_dtype must be one of"):
        Plan.from_dict({"default": {"bits": 4, "param_dtype": bad}})


def test_scales_round_up_to_float16_and_tiny_ones_are_raised_to_its_smallest():
    scale = torch.tensor([1e-3, 0.0123457, 3.0, 1e-9, 2e-6], dtype=torch.float32)
    half = half_scales(scale)
    assert _is_half(half) and bool((half >= scale).all())
    normal = scale > 6.1e-5  # float16's normal range: within one float16 step above
    assert bool((half[normal] / scale[normal] - 1 < 2.0**-10).all())
    assert float(half[3]) == FP16_TINY
    with pytest.raises(studio.StudioError, match="beyond float16's range"):
        half_scales(torch.tensor([7e4]))
    with pytest.raises(studio.StudioError, match="beyond float16's range"):
        half_values(torch.tensor([1.0, -1e5]), "codebook value")


def _view(seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    view = torch.randn(12, 40) * torch.logspace(-3, 0, 12).unsqueeze(1)
    view[3] = 0.0  # an all-zero channel
    return view


@pytest.mark.parametrize(
    "spec, n_params",
    [
        (LayerSpec(bits=4), 12),
        (LayerSpec(bits=4, granularity="tensor"), 1),
        (LayerSpec(bits=3, symmetric=False, clip="mse"), 12),
        (LayerSpec(bits=5, granularity="tensor", symmetric=False), 1),
        (LayerSpec(bits=3, cluster=True), 8),
        (LayerSpec(bits=3, cluster=True, prune=0.5), 8),
        (LayerSpec(bits=2, prune=0.6), 12),
    ],
)
def test_float16_params_are_what_dequantizes_and_cost_two_bytes(spec, n_params):
    view = _view()
    full = compress_view(view, spec, huffman=True, other_bytes=48)
    half = compress_view(view, spec.replace(param_dtype=HALF), huffman=True, other_bytes=24)
    zero_point_bytes = 0 if spec.symmetric or spec.cluster else n_params
    assert full.size.scales - half.size.scales == 2 * n_params
    assert half.size.scales == 2 * n_params + zero_point_bytes
    if spec.cluster:
        codebook = half.need_codebook()
        assert _is_half(codebook)
        assert torch.equal(half.dequant_view, codebook[half.need_codes().long()])
    else:
        u = half.need_uniform()
        assert _is_half(u.scale) and torch.equal(u.zero_point, full.need_uniform().zero_point)
        codes = half.need_codes().to(torch.float32).reshape(u.scale.numel(), -1)
        expected = ((codes - u.zero_point.unsqueeze(1)) * u.scale.unsqueeze(1)).reshape(view.shape)
        assert torch.equal(half.dequant_view, expected)
    if half.keep is not None:
        assert bool((half.dequant_view[~half.keep] == 0).all())  # pruned weights stay exactly zero
    if not spec.cluster or half.keep is not None:  # an unpruned codebook need not hold 0
        assert bool((half.dequant_view[3] == 0).all())
    # the rounding costs next to nothing: the error grows by under 1%
    err_full = float((full.dequant_view - view).square().sum())
    err_half = float((half.dequant_view - view).square().sum())
    assert err_half <= err_full * 1.01 + 1e-12


def test_tiny_weights_keep_a_float16_scale(mlp_session):
    view = torch.full((2, 8), 1e-9)
    result = compress_view(view, LayerSpec(bits=8, param_dtype=HALF), huffman=False, other_bytes=0)
    assert float(result.need_uniform().scale.min()) == FP16_TINY
    assert bool((result.dequant_view.abs() <= FP16_TINY).all())
    with pytest.raises(studio.StudioError, match="param_dtype='float32'"):
        compress_view(torch.full((2, 8), 1e7), LayerSpec(bits=4, param_dtype=HALF), huffman=False, other_bytes=0)


def test_the_working_model_uses_the_rounded_bias_and_the_users_model_is_untouched(tiny):
    model, data = tiny
    with torch.no_grad():  # biases that float16 rounds visibly
        model[0].bias.copy_(torch.linspace(-3.3333, 3.3333, 16))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    session = studio.Session(model, data)
    plan = Plan.uniform(None).with_layer("0", param_dtype=HALF)
    report = session.evaluate(plan)
    assert report.layers["0"].other == 2 * 16 and report.layers["2"].other == 4 * 4
    rounded = model[0].bias.detach().to(torch.float16).to(torch.float32)
    work = session._prepared.modules["0"].bias
    assert torch.equal(work.detach(), rounded)
    assert not torch.equal(rounded, before["0.bias"])
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[key]), key
    compiled = session.compile(plan)
    assert compiled.biases["0"] is not None and compiled.biases["0"].dtype == torch.float16
    x = data[0]
    expected = torch.nn.functional.linear(torch.relu(torch.nn.functional.linear(x, model[0].weight, rounded)), model[2].weight, model[2].bias)
    with torch.no_grad():
        assert torch.equal(session.compressed_model(plan)(x), expected)
    # back to float32 parameters: the working model holds the float bias again
    session.evaluate(Plan())
    assert torch.equal(session._prepared.modules["0"].bias.detach(), before["0.bias"])


def test_float16_params_shrink_the_report_by_two_bytes_a_value(mlp_session):
    plan = Plan.uniform(4).with_layer("fc3", bits=3, cluster=True)
    full, half = mlp_session.size(plan), mlp_session.size(plan.with_all(param_dtype=HALF))
    n_scales = 300 + 100  # per-channel fc1 and fc2; fc3's codebook has 8 values
    n_bias = 300 + 100 + 10
    assert sum(full.layers[n].scales - half.layers[n].scales for n in full.layers) == 2 * (n_scales + 8)
    assert sum(full.layers[n].other - half.layers[n].other for n in full.layers) == 2 * n_bias
    assert full.size_bytes - half.size_bytes >= 2 * (n_scales + 8 + n_bias) - 16  # the header says a little more


def test_search_space_param_dtype():
    assert {s.param_dtype for s in SearchSpace().options() if not s.is_float} == {HALF}
    both = SearchSpace(bits=(4,), prune=(0.0,), cluster=(False,), granularity=("channel",), clip=("minmax",), param_dtype=("float32", HALF))
    assert [s.param_dtype for s in both.options()] == ["float32", "float32", HALF]
    assert SearchSpace.from_dict(both.to_dict()) == both
    with pytest.raises(studio.StudioError, match="param_dtype"):
        SearchSpace(param_dtype=("float8",))
    assert np.isfinite(len(SearchSpace(param_dtype=("float32",)).options()))

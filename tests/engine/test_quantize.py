import pytest
import torch

from studio.engine.quantize import choose_params, dequantize_codes, qrange, quantize_codes


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("symmetric", [True, False])
def test_agrees_with_torch_fake_quantize_per_channel(bits, symmetric):
    torch.manual_seed(bits)
    w = torch.randn(32, 100) * 0.1
    params = choose_params(w, bits, symmetric, "minmax")
    w[0, :8] = (torch.arange(8) + 0.5) * params.scale[0]  # exact ties: round half to even
    params = choose_params(w, bits, symmetric, "minmax")
    ours = dequantize_codes(quantize_codes(w, params), params)
    ref = torch.fake_quantize_per_channel_affine(
        w, params.scale, params.zero_point.to(torch.int32), 0, params.qmin, params.qmax
    )
    assert torch.equal(ours, ref)


def test_default_follows_tflite_int8_weight_spec():
    w = torch.tensor([[0.5, -1.0, 0.25, 0.0], [2.0, 1.0, -0.5, 0.1]])
    params = choose_params(w, 8, True, "minmax")
    assert (params.qmin, params.qmax) == (-127, 127)
    assert torch.allclose(params.scale, torch.tensor([1.0 / 127, 2.0 / 127]))
    assert torch.equal(params.zero_point, torch.zeros(2, dtype=torch.int64))
    codes = quantize_codes(w, params)
    assert codes[0].tolist() == [64, -127, 32, 0]  # 63.5 rounds half to even -> 64
    assert qrange(4, True) == (-7, 7) and qrange(4, False) == (0, 15)


def test_asymmetric_represents_zero_exactly():
    w = torch.rand(8, 50) + 0.3  # all positive: the range is widened to hold 0
    w[:, 0] = 0.0
    params = choose_params(w, 3, False, "minmax")
    deq = dequantize_codes(quantize_codes(w, params), params)
    assert torch.all(deq[:, 0] == 0.0)


def test_mse_clipping_never_worse_and_usually_better():
    torch.manual_seed(0)
    w = torch.randn(16, 512)
    w[:, 0] = 12.0  # an outlier per channel makes min-max clipping wasteful
    errs = {}
    for clip in ("minmax", "mse"):
        p = choose_params(w, 4, True, clip)
        errs[clip] = ((dequantize_codes(quantize_codes(w, p), p) - w) ** 2).sum(dim=1)
    assert torch.all(errs["mse"] <= errs["minmax"])
    assert errs["mse"].sum() < 0.7 * errs["minmax"].sum()


def test_all_zero_channel_is_safe():
    w = torch.zeros(2, 5)
    w[1] = torch.arange(5.0)
    p = choose_params(w, 4, True, "minmax")
    deq = dequantize_codes(quantize_codes(w, p), p)
    assert torch.all(deq[0] == 0) and torch.isfinite(deq).all()

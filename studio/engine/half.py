"""Float16 quantization parameters: scales, codebooks and biases stored in two bytes.

With ``LayerSpec(param_dtype="float16")`` a layer stores its scales (per channel or per
tensor), its k-means codebook and its bias as float16, as GGUF stores its block scales.
The values are rounded *before* the weights are dequantized, so what the studio
evaluates is what the file holds:

- scales are rounded *up* to the next float16 value, so the grid only widens (by at most
  2**-11 of a scale in float16's normal range) and nothing clips that did not clip with
  the float32 scale; the zero-points stay as they were, and the codes are chosen for the
  rounded scale. A scale below float16's smallest subnormal (2**-24, about 6e-8) is
  raised to it: such a channel's weights are below 8e-6 for 8 bits, and its codes are
  then mostly zero (an absolute error under 3e-8);
- codebook values and biases are rounded to the nearest float16; 0 stays exactly 0, so
  pruned weights stay zero.
A scale, codebook value or bias beyond float16's range (65504) is refused.
"""

from __future__ import annotations

import torch

from .errors import StudioError

PARAM_DTYPES = ("float32", "float16")
FP16_MAX = 65504.0
FP16_TINY = 2.0**-24  # the smallest positive float16 (subnormal)


def param_width(param_dtype: str) -> int:
    """Bytes per stored scale, codebook value or bias."""
    return 2 if param_dtype == "float16" else 4


def _check_range(values: torch.Tensor, what: str) -> None:
    if values.numel() and not bool((values.abs() <= FP16_MAX).all()):
        largest = float(values.abs().max())
        raise StudioError(
            f"a {what} of {largest:.4g} is beyond float16's range (±{FP16_MAX:.0f}); "
            "use param_dtype='float32' for this layer"
        )


def to_half(values: torch.Tensor, what: str = "value") -> torch.Tensor:
    """``values`` rounded to the nearest float16, as a float16 tensor (refused beyond its range)."""
    _check_range(values, what)
    return values.detach().to(torch.float16)


def half_values(values: torch.Tensor, what: str = "value") -> torch.Tensor:
    """``values`` rounded to the nearest float16, kept in float32 (codebooks)."""
    return to_half(values, what).to(torch.float32)


def half_scales(scale: torch.Tensor) -> torch.Tensor:
    """Positive scales rounded up to float16 values (at least 2**-24), kept in float32."""
    _check_range(scale, "scale")
    wanted = scale.detach().to(torch.float32).clamp(min=FP16_TINY)
    half = wanted.to(torch.float16)
    low = half.to(torch.float32) < wanted
    if bool(low.any()):
        half = torch.where(low, torch.nextafter(half, torch.full_like(half, float("inf"))), half)
    return half.to(torch.float32)

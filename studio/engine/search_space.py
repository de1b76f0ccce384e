"""The search space: what each layer may become in an automatic mixed-precision search."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import StudioError
from .half import PARAM_DTYPES
from .plan import GRANULARITIES, INT_BITS, MAX_PRUNE, LayerSpec
from .quantize import CLIP_METHODS


@dataclass(frozen=True)
class SearchSpace:
    """What a layer may become: for every bit width and prune ratio, k-means (``cluster``
    holds True) and the uniform grid (``cluster`` holds False) at every granularity and
    clip method; plus float32 when ``keep_float``.

    k-means and clip methods other than minmax are tried only at ``fine_max_bits`` bits or
    fewer: they take the longest to compress and matter most at low bit widths.

    ``param_dtype``: how a compressed option stores its scales, codebook and bias. float16
    by default: it saves two bytes a value and its rounding costs nothing measurable, so
    float32 twins of the same option would only be dominated; ("float32",) gives the
    float32 parameters, both tries both. A layer left in float keeps its float32 bias.
    """

    bits: tuple[int, ...] = (2, 3, 4, 5, 6, 8)
    prune: tuple[float, ...] = (0.0, 0.25, 0.5, 0.6, 0.75)
    cluster: tuple[bool, ...] = (False, True)
    granularity: tuple[str, ...] = ("channel", "tensor")
    clip: tuple[str, ...] = ("minmax", "mse")
    keep_float: bool = True
    huffman: bool = True
    fine_max_bits: int = 4
    param_dtype: tuple[str, ...] = ("float16",)

    def __post_init__(self) -> None:
        bits = tuple(self.bits)
        if not bits or any(isinstance(b, bool) or not isinstance(b, int) or b not in INT_BITS + (16,) for b in bits):
            raise StudioError(f"search space bits must be integers in 2..8 or 16; got {self.bits!r}")
        try:
            prune = tuple(float(p) for p in self.prune)
        except (TypeError, ValueError) as exc:
            raise StudioError(f"search space prune ratios must be fractions in [0, {MAX_PRUNE}]; got {self.prune!r}") from exc
        if not prune or any(not 0.0 <= p <= MAX_PRUNE for p in prune):
            raise StudioError(f"search space prune ratios must be fractions in [0, {MAX_PRUNE}]; got {self.prune!r}")
        cluster = tuple(bool(c) for c in self.cluster)
        if not cluster:
            raise StudioError("search space cluster must hold False (uniform grid), True (k-means) or both")
        for name, values, valid in (("granularity", self.granularity, GRANULARITIES), ("clip", self.clip, tuple(CLIP_METHODS))):
            if not values or any(v not in valid for v in values):
                raise StudioError(f"search space {name} must hold some of {list(valid)}; got {values!r}")
        if isinstance(self.fine_max_bits, bool) or not isinstance(self.fine_max_bits, int):
            raise StudioError(f"search space fine_max_bits must be an integer; got {self.fine_max_bits!r}")
        if isinstance(self.param_dtype, str) or not self.param_dtype or any(d not in PARAM_DTYPES for d in self.param_dtype):
            raise StudioError(f"search space param_dtype must hold some of {list(PARAM_DTYPES)}; got {self.param_dtype!r}")
        object.__setattr__(self, "param_dtype", tuple(dict.fromkeys(self.param_dtype)))
        object.__setattr__(self, "bits", tuple(sorted(set(bits))))
        object.__setattr__(self, "prune", tuple(sorted(set(prune))))
        object.__setattr__(self, "cluster", tuple(sorted(set(cluster))))
        object.__setattr__(self, "granularity", tuple(dict.fromkeys(self.granularity)))
        object.__setattr__(self, "clip", tuple(dict.fromkeys(self.clip)))

    def options(self) -> list[LayerSpec]:
        out = [LayerSpec()] if self.keep_float else []
        for b in self.bits:
            for p in self.prune:
                for d in self.param_dtype:
                    if b == 16:
                        out.append(LayerSpec(bits=16, prune=p, param_dtype=d))
                        continue
                    fine = b <= self.fine_max_bits
                    if True in self.cluster and (fine or False not in self.cluster):
                        out.append(LayerSpec(bits=b, prune=p, cluster=True, param_dtype=d))
                    if False in self.cluster:
                        clips = [c for c in self.clip if fine or c == "minmax"] or [self.clip[0]]
                        out.extend(LayerSpec(bits=b, prune=p, granularity=g, clip=c, param_dtype=d) for g in self.granularity for c in clips)
        if not out:
            raise StudioError("the search space holds no option: allow float or give bits")
        return out

    def probes(self) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """The sensitivity probes: each bit width alone, each nonzero prune ratio alone."""
        return tuple(b for b in self.bits if b != 16) or (8,), tuple(p for p in self.prune if p > 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bits": list(self.bits), "prune": list(self.prune), "cluster": list(self.cluster),
            "granularity": list(self.granularity), "clip": list(self.clip), "keep_float": self.keep_float, "huffman": self.huffman,
            "fine_max_bits": self.fine_max_bits, "param_dtype": list(self.param_dtype),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        fields = ("bits", "prune", "cluster", "granularity", "clip", "keep_float", "huffman", "fine_max_bits", "param_dtype")
        if not isinstance(data, Mapping):
            raise StudioError(f"a search space must be a dict; got {type(data).__name__}")
        unknown = set(data) - set(fields)
        if unknown:
            raise StudioError(f"unknown search space key(s) {sorted(unknown)}; valid: {list(fields)}")
        data = dict(data)
        for key in fields[:5] + ("param_dtype",):
            if key in data:
                if isinstance(data[key], (str, bytes)) or not isinstance(data[key], Iterable):
                    raise StudioError(f"search space {key} must be a list; got {data[key]!r}")
                data[key] = tuple(data[key])
        return cls(**data)

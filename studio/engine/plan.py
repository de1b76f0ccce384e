"""A compression plan: what to do to each layer, as plain, JSON-round-trippable data.

A :class:`Plan` holds a default :class:`LayerSpec` that applies to every compressible
layer, plus per-layer overrides keyed by module path (in the spirit of torchao's
``FqnToConfig``). Plans are immutable: every ``with_*`` method returns a new plan.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .activations import RANGE_METHODS
from .errors import StudioError
from .half import PARAM_DTYPES
from .prune import PRUNERS, is_prune_method
from .quantize import CLIP_METHODS

INT_BITS = tuple(range(2, 9))
VALID_BITS = INT_BITS + (16, 32, None)
GRANULARITIES = ("channel", "tensor")
MAX_PRUNE = 0.99

PLAN_FORMAT_VERSION = 1


@dataclass(frozen=True)
class LayerSpec:
    """How one layer's weight is compressed.

    bits:          2..8 integer codes, 16 for float16, None (or 32) to keep float32.
    granularity:   "channel" (one scale per output channel) or "tensor".
    symmetric:     zero-point 0 and a narrow signed range (TFLite's int8 weight spec),
                   or asymmetric with an unsigned range and an integer zero-point.
    clip:          "minmax" (scale from max|w|) or "mse" (scale searched for lowest MSE).
    prune:         fraction of weights set to zero by magnitude, in [0, 0.99].
    prune_method:  "unstructured", "structured" (whole output channels by L2 norm),
                   or an N:M pattern such as "2:4" (applied when prune > 0).
    cluster:       weight sharing: k-means to 2**bits shared values instead of a grid.
    act_bits:      quantize the layer's input and output activations to 8 bits
                   (asymmetric uint8) or 16 bits (symmetric int16); None keeps them float.
    param_dtype:   how the weight's scales (or codebook) and the layer's bias are stored:
                   "float32", or "float16" (rounded before dequantizing; see ``half``).
    """

    bits: int | None = None
    granularity: str = "channel"
    symmetric: bool = True
    clip: str = "minmax"
    prune: float = 0.0
    prune_method: str = "unstructured"
    cluster: bool = False
    act_bits: int | None = None
    param_dtype: str = "float32"

    def __post_init__(self) -> None:
        bits: Any = self.bits  # JSON and widgets may give floats
        if isinstance(bits, bool) or (bits is not None and not isinstance(bits, int)):
            if isinstance(bits, float) and bits.is_integer():
                bits = int(bits)
            else:
                raise StudioError(f"bits must be an integer 2..8, 16, 32 or None; got {self.bits!r}")
        if bits not in VALID_BITS:
            raise StudioError(
                f"bits={bits} is out of range: use 2..8 for integer codes, 16 for float16, "
                "or None/32 to leave the layer in float32"
            )
        object.__setattr__(self, "bits", None if bits == 32 else bits)
        if self.granularity not in GRANULARITIES:
            raise StudioError(f"granularity must be one of {GRANULARITIES}; got {self.granularity!r}")
        if self.clip not in CLIP_METHODS:
            raise StudioError(f"clip must be one of {list(CLIP_METHODS)}; got {self.clip!r}")
        try:
            prune = float(self.prune)
        except (TypeError, ValueError) as exc:
            raise StudioError(f"prune must be a fraction in [0, {MAX_PRUNE}]; got {self.prune!r}") from exc
        if not 0.0 <= prune <= MAX_PRUNE:
            raise StudioError(
                f"prune={self.prune} is out of range: give the fraction of weights to remove, "
                f"from 0 to {MAX_PRUNE} (e.g. 0.5 for 50%)"
            )
        object.__setattr__(self, "prune", prune)
        if not is_prune_method(self.prune_method):
            raise StudioError(
                f"prune_method must be one of {PRUNERS.names()} or an N:M pattern such as '2:4'; "
                f"got {self.prune_method!r}"
            )
        if self.cluster and self.bits not in INT_BITS:
            raise StudioError("cluster=True needs bits in 2..8 (the codebook has 2**bits entries)")
        if self.act_bits not in (None, 8, 16):
            raise StudioError(f"act_bits must be 8, 16 or None (float activations); got {self.act_bits!r}")
        if self.param_dtype not in PARAM_DTYPES:
            raise StudioError(
                f"param_dtype must be one of {list(PARAM_DTYPES)} (how scales, codebooks and biases are stored); "
                f"got {self.param_dtype!r}"
            )

    @property
    def is_float(self) -> bool:
        return self.bits is None

    @property
    def code_bits(self) -> int:
        """The width of the integer codes (2..8); a ValueError for a float32 or float16 layer."""
        if self.bits not in INT_BITS or self.bits is None:
            raise ValueError(f"a {self.label()} layer has no integer codes")
        return self.bits

    def label(self) -> str:
        """A short human label such as 'int4 ch sym, 50% pruned'."""
        if self.bits is None:
            text = "float32"
        elif self.bits == 16:
            text = "float16"
        elif self.cluster:
            text = f"{self.bits}-bit k-means"
        else:
            text = f"int{self.bits} {'ch' if self.granularity == 'channel' else 'tensor'}"
            text += " sym" if self.symmetric else " asym"
            if self.clip == "mse":
                text += " mse"
        if self.prune > 0:
            text += f", {self.prune:.0%} pruned"
            if self.prune_method != "unstructured":
                text += f" ({self.prune_method})"
        if self.act_bits:
            text += f", a{self.act_bits}"
        if self.param_dtype == "float16":
            text += ", fp16 params"
        return text

    def replace(self, **changes: Any) -> LayerSpec:
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise StudioError(f"unknown layer setting(s) {sorted(unknown)}; valid: {spec_fields()}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerSpec:
        if not isinstance(data, Mapping):
            raise StudioError(f"a layer spec must be a JSON object; got {type(data).__name__}")
        unknown = set(data) - set(spec_fields())
        if unknown:
            raise StudioError(f"unknown layer setting(s) {sorted(unknown)}; valid: {spec_fields()}")
        return cls(**dict(data))


def spec_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(LayerSpec)]


@dataclass(frozen=True)
class Plan:
    """A per-layer compression plan.

    ``Plan()`` leaves everything in float; ``Plan.uniform(bits=8)`` quantizes every
    compressible layer. Overrides are stored sorted by layer name, so two plans that
    say the same thing compare (and hash) equal.
    """

    default: LayerSpec = field(default_factory=LayerSpec)
    overrides: tuple[tuple[str, LayerSpec], ...] = ()
    huffman: bool = True
    calibration: str = "minmax"

    def __post_init__(self) -> None:
        if not isinstance(self.default, LayerSpec):
            raise StudioError("Plan.default must be a LayerSpec")
        if self.calibration not in RANGE_METHODS:
            raise StudioError(f"calibration must be one of {RANGE_METHODS.names()}; got {self.calibration!r}")
        items = dict(self.overrides.items() if isinstance(self.overrides, Mapping) else self.overrides)
        for name, spec in items.items():
            if not isinstance(name, str) or not isinstance(spec, LayerSpec):
                raise StudioError("Plan overrides map layer names (str) to LayerSpec objects")
        object.__setattr__(self, "overrides", tuple(sorted(items.items())))

    # -- construction -------------------------------------------------------------
    @classmethod
    def uniform(cls, bits: int | None = 8, **settings: Any) -> Plan:
        """Every compressible layer gets the same spec."""
        huffman = settings.pop("huffman", True)
        calibration = settings.pop("calibration", "minmax")
        return cls(default=LayerSpec(bits=bits, **settings), huffman=huffman, calibration=calibration)

    @classmethod
    def preset(cls, name: str, session: Any = None) -> Plan:
        """A named plan: dynamic-range, full-integer, float16, 16x8 or deep-compression.
        ``session`` lets a preset treat layer kinds differently."""
        from .presets import preset

        return preset(name, session)

    @staticmethod
    def presets() -> list[str]:
        from .presets import PRESETS

        return list(PRESETS)

    def with_layer(self, name: str, spec: LayerSpec | None = None, **changes: Any) -> Plan:
        """A new plan in which layer ``name`` gets ``spec`` (or its current spec with ``changes``)."""
        new = (spec or self.spec_for(name)).replace(**changes)
        items = dict(self.overrides)
        if new == self.default:
            items.pop(name, None)
        else:
            items[name] = new
        return dataclasses.replace(self, overrides=tuple(items.items()))

    def with_layers(self, names: Iterable[str], **changes: Any) -> Plan:
        plan = self
        for name in names:
            plan = plan.with_layer(name, **changes)
        return plan

    def with_all(self, **changes: Any) -> Plan:
        """Apply ``changes`` to the default and to every override (the "all layers" control)."""
        default = self.default.replace(**changes)
        items = {name: spec.replace(**changes) for name, spec in self.overrides}
        kept = tuple((name, spec) for name, spec in items.items() if spec != default)
        return dataclasses.replace(self, default=default, overrides=kept)

    def with_default(self, **changes: Any) -> Plan:
        """Change the default spec; layer overrides stay as they are."""
        return dataclasses.replace(self, default=self.default.replace(**changes))

    def without_layer(self, name: str) -> Plan:
        items = dict(self.overrides)
        items.pop(name, None)
        return dataclasses.replace(self, overrides=tuple(items.items()))

    def replace(self, **changes: Any) -> Plan:
        return dataclasses.replace(self, **changes)

    # -- queries ------------------------------------------------------------------
    @property
    def quantizes_activations(self) -> bool:
        return bool(self.default.act_bits) or any(spec.act_bits for _, spec in self.overrides)

    @property
    def layers(self) -> dict[str, LayerSpec]:
        """The per-layer overrides, by layer name."""
        return dict(self.overrides)

    def spec_for(self, name: str) -> LayerSpec:
        return dict(self.overrides).get(name, self.default)

    def check_names(self, valid: Iterable[str]) -> None:
        valid = list(valid)
        unknown = [name for name, _ in self.overrides if name not in valid]
        if unknown:
            raise StudioError(
                f"the plan names layer(s) {unknown} that the model does not have; "
                f"compressible layers are: {valid}"
            )

    # -- serialisation --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PLAN_FORMAT_VERSION,
            "default": self.default.to_dict(),
            "layers": {name: spec.to_dict() for name, spec in self.overrides},
            "huffman": self.huffman,
            "calibration": self.calibration,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        if not isinstance(data, Mapping):
            raise StudioError(f"a plan must be a JSON object; got {type(data).__name__}")
        allowed = {"version", "default", "layers", "huffman", "calibration"}
        unknown = set(data) - allowed
        if unknown:
            raise StudioError(f"unknown plan key(s) {sorted(unknown)}; valid: {sorted(allowed)}")
        version = data.get("version", PLAN_FORMAT_VERSION)
        if version != PLAN_FORMAT_VERSION:
            raise StudioError(f"plan format version {version} is not supported (this studio reads {PLAN_FORMAT_VERSION})")
        layers = data.get("layers", {})
        if not isinstance(layers, Mapping):
            raise StudioError("plan 'layers' must map layer names to layer specs")
        return cls(
            default=LayerSpec.from_dict(data.get("default", {})),
            overrides=tuple((str(k), LayerSpec.from_dict(v)) for k, v in layers.items()),
            huffman=bool(data.get("huffman", True)),
            calibration=str(data.get("calibration", "minmax")),
        )

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StudioError(f"the plan is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

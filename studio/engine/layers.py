"""Which modules are compressible, and how each kind behaves.

A registry maps module types to a :class:`LayerKind`, which carries everything the
engine and the exporters need to know about a kind: the weight's output-channel axis,
whether a BatchNorm after it can be folded into it, whether its input is a float
activation (an Embedding's is token ids), and how to describe the input it expects.
Adding a kind is one ``register_kind`` call; nothing else compares kind names.

Types from optional packages (transformers' ``Conv1D``) are registered by their
import path, so the package is never imported just to look.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


def _no_hint(module: nn.Module) -> str:
    return "inputs that match its weight"


def tensor_attr(module: nn.Module, name: str) -> torch.Tensor | None:
    """``module.<name>`` when it is a tensor (a weight, a bias), else None."""
    value = getattr(module, name, None)
    return value if isinstance(value, torch.Tensor) else None


def weight_of(module: nn.Module) -> torch.Tensor:
    """The weight of a compressible layer."""
    weight = tensor_attr(module, "weight")
    if weight is None:
        raise TypeError(f"{type(module).__name__} has no weight tensor")
    return weight


@dataclass(frozen=True)
class LayerKind:
    """How one kind of compressible layer behaves."""

    name: str
    channel_axis: int  # the weight's output-channel axis
    family: str  # "linear", "conv" or "embedding": presets may treat families differently
    foldable: bool = False  # a BatchNorm that follows it can be folded into its weight and bias
    float_input: bool = True  # its input is a float activation (False: token ids)
    expects: Callable[[nn.Module], str] = field(default=_no_hint, compare=False, repr=False)

    @property
    def activation_tensors(self) -> int:
        """How many activation tensors of this layer are quantized (input and output, or output only)."""
        return 2 if self.float_input else 1


LAYER_KINDS: dict[type[nn.Module], LayerKind] = {}
LAYER_KINDS_BY_PATH: dict[str, LayerKind] = {}  # "package.module.Class" -> kind, for optional packages
KINDS_BY_NAME: dict[str, LayerKind] = {}


def register_kind(
    module_type: type[nn.Module] | str,
    name: str,
    channel_axis: int,
    family: str = "linear",
    *,
    foldable: bool = False,
    float_input: bool = True,
    expects: Callable[[nn.Module], str] = _no_hint,
) -> LayerKind:
    """Make ``module_type`` (a class, or its import path as a string) compressible."""
    kind = LayerKind(name, channel_axis, family, foldable, float_input, expects)
    if isinstance(module_type, str):
        LAYER_KINDS_BY_PATH[module_type] = kind
    else:
        LAYER_KINDS[module_type] = kind
    KINDS_BY_NAME[name] = kind
    return kind


def _linear_hint(module: nn.Module) -> str:
    return f"inputs whose last dimension is in_features={module.in_features}"


def _conv_hint(dims: int) -> Callable[[nn.Module], str]:
    spatial = ", ".join("HWD"[i] if dims > 1 else "L" for i in range(dims))
    return lambda module: f"inputs of shape (N, in_channels={module.in_channels}, {spatial})"


def _embedding_hint(module: nn.Module) -> str:
    return f"integer token ids below num_embeddings={module.num_embeddings}"


def _conv1d_hint(module: nn.Module) -> str:
    return f"inputs whose last dimension is nx={weight_of(module).shape[0]}"


register_kind(nn.Linear, "Linear", 0, "linear", foldable=True, expects=_linear_hint)
for _dims, _conv, _transposed in (
    (1, nn.Conv1d, nn.ConvTranspose1d),
    (2, nn.Conv2d, nn.ConvTranspose2d),
    (3, nn.Conv3d, nn.ConvTranspose3d),
):
    register_kind(_conv, f"Conv{_dims}d", 0, "conv", foldable=True, expects=_conv_hint(_dims))
    register_kind(_transposed, f"ConvTranspose{_dims}d", 1, "conv", expects=_conv_hint(_dims))
register_kind(nn.Embedding, "Embedding", 0, "embedding", float_input=False, expects=_embedding_hint)
# GPT-2 style: y = x @ W + b with W of shape (in, out), so the output channels are axis 1.
register_kind("transformers.pytorch_utils.Conv1D", "Conv1D", 1, "linear", expects=_conv1d_hint)


def _path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def kind_of(module: nn.Module) -> LayerKind | None:
    """The kind of ``module``, or None when it is not compressible."""
    for module_type in type(module).__mro__:
        if module_type in LAYER_KINDS:
            return LAYER_KINDS[module_type]
        kind = LAYER_KINDS_BY_PATH.get(_path(module_type))
        if kind is not None:
            return kind
    if isinstance(module, torch.jit.ScriptModule):  # TorchScript keeps the original class name
        original = getattr(module, "original_name", None)
        for module_type, kind in LAYER_KINDS.items():
            if module_type.__name__ == original:
                return kind
    return None


def kind_named(name: str) -> LayerKind:
    """The registered kind called ``name`` (a LayerInfo's ``kind``)."""
    if name not in KINDS_BY_NAME:
        raise KeyError(f"unknown layer kind {name!r}; registered: {sorted(KINDS_BY_NAME)}")
    return KINDS_BY_NAME[name]


@dataclass(frozen=True)
class LayerInfo:
    """One compressible layer of the model."""

    name: str
    kind: str
    weight_shape: tuple[int, ...]
    params: int  # weight plus bias parameters
    channel_axis: int
    has_bias: bool
    folded_bn: str | None = None  # the BatchNorm folded into this layer, if any

    @property
    def channels(self) -> int:
        return self.weight_shape[self.channel_axis]

    @property
    def layer_kind(self) -> LayerKind:
        return kind_named(self.kind)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["weight_shape"] = list(self.weight_shape)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerInfo:
        values = dict(data)
        values["weight_shape"] = tuple(values["weight_shape"])
        return cls(**values)


def find_layers(model: nn.Module) -> list[tuple[str, nn.Module, LayerKind]]:
    """Compressible modules in definition order; a weight shared by two modules counts once."""
    found = []
    seen: set[int] = set()
    for name, module in model.named_modules():
        kind = kind_of(module)
        weight = getattr(module, "weight", None)
        if kind is None or not isinstance(weight, torch.Tensor):
            continue
        if id(weight) in seen:
            continue
        seen.add(id(weight))
        found.append((name, module, kind))
    return found


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def weight_key(name: str, tensor: str = "weight") -> str:
    """The state-dict key of a layer's tensor ('weight' alone for a model that is one layer)."""
    return f"{name}.{tensor}" if name else tensor

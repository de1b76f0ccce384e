"""Which modules are compressible, and folding BatchNorm into the layer before it.

A registry maps module types to a :class:`LayerKind` (the weight's output-channel
axis); adding a type is one ``register_kind`` call, not a new branch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn


@dataclass(frozen=True)
class LayerKind:
    name: str
    channel_axis: int  # the weight's output-channel axis


LAYER_KINDS: dict[type[nn.Module], LayerKind] = {}


def register_kind(module_type: type[nn.Module], name: str, channel_axis: int) -> None:
    LAYER_KINDS[module_type] = LayerKind(name, channel_axis)


register_kind(nn.Linear, "Linear", 0)
register_kind(nn.Conv1d, "Conv1d", 0)
register_kind(nn.Conv2d, "Conv2d", 0)
register_kind(nn.Conv3d, "Conv3d", 0)
register_kind(nn.ConvTranspose1d, "ConvTranspose1d", 1)
register_kind(nn.ConvTranspose2d, "ConvTranspose2d", 1)
register_kind(nn.ConvTranspose3d, "ConvTranspose3d", 1)
register_kind(nn.Embedding, "Embedding", 0)

FOLDABLE_INTO = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def kind_of(module: nn.Module) -> LayerKind | None:
    for module_type in type(module).__mro__:
        if module_type in LAYER_KINDS:
            return LAYER_KINDS[module_type]
    if isinstance(module, torch.jit.ScriptModule):  # TorchScript keeps the original class name
        original = getattr(module, "original_name", None)
        for module_type, kind in LAYER_KINDS.items():
            if module_type.__name__ == original:
                return kind
    return None


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

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["weight_shape"] = list(self.weight_shape)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LayerInfo":
        data = dict(data)
        data["weight_shape"] = tuple(data["weight_shape"])
        return cls(**data)


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


def find_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(layer, batchnorm) pairs where the BatchNorm directly and only follows the layer.

    Traced with torch.fx; a model that cannot be traced falls back to adjacent pairs
    inside ``nn.Sequential`` containers.
    """
    modules = dict(model.named_modules())
    pairs: list[tuple[str, str]] = []
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # tracing fails on data-dependent control flow: use the fallback
        graph = None
    if graph is not None:
        for node in graph.nodes:
            if node.op != "call_module" or not isinstance(modules.get(node.target), BATCHNORMS):
                continue
            prev = node.args[0] if node.args else None
            if not isinstance(prev, torch.fx.Node) or prev.op != "call_module":
                continue
            if isinstance(modules.get(prev.target), FOLDABLE_INTO) and len(prev.users) == 1:
                pairs.append((str(prev.target), str(node.target)))
        return [p for p in pairs if _foldable(modules[p[0]], modules[p[1]])]
    for name, module in modules.items():
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (a_name, a), (b_name, b) in zip(children, children[1:]):
                if isinstance(a, FOLDABLE_INTO) and isinstance(b, BATCHNORMS) and _foldable(a, b):
                    prefix = f"{name}." if name else ""
                    pairs.append((prefix + a_name, prefix + b_name))
    return pairs


def _foldable(layer: nn.Module, bn: nn.Module) -> bool:
    out = layer.weight.shape[0]
    return bn.running_mean is not None and bn.num_features == out and getattr(layer, "groups", 1) >= 1


@torch.no_grad()
def fold_bn(layer: nn.Module, bn: nn.Module) -> None:
    """Fold ``bn`` (eval-mode statistics) into ``layer``'s weight and bias, in place."""
    std = torch.sqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
    factor = gamma / std
    shape = [-1] + [1] * (layer.weight.dim() - 1)
    layer.weight.mul_(factor.reshape(shape))
    bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = (bias - bn.running_mean) * factor + beta
    if layer.bias is None:
        layer.bias = nn.Parameter(new_bias.to(layer.weight.dtype))
    else:
        layer.bias.copy_(new_bias)


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)

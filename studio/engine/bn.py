"""BatchNorm folding, in one place: finding the pairs, folding, and undoing a fold.

Deployment runtimes fold an eval-mode BatchNorm into the convolution or linear layer
before it: ``w' = w * gamma / sqrt(var + eps)`` per output channel and
``b' = (b - mean) * gamma / sqrt(var + eps) + beta``. The studio quantizes the folded
weights, as those runtimes would. Every function here is pure: nothing is changed in
place.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .layers import kind_of, weight_key, weight_of

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
BNState = Mapping[str, torch.Tensor]  # weight, bias, running_mean, running_var (weight/bias may be absent)


def _foldable_into(module: nn.Module | None) -> bool:
    kind = kind_of(module) if module is not None else None
    return kind is not None and kind.foldable


def _fits(layer: nn.Module, bn: nn.Module) -> bool:
    return isinstance(bn, _BatchNorm) and bn.running_mean is not None and bn.num_features == weight_of(layer).shape[0]


def find_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(layer, batchnorm) pairs where the BatchNorm directly and only follows the layer.

    Traced with torch.fx; a model that cannot be traced falls back to adjacent pairs
    inside ``nn.Sequential`` containers.
    """
    modules = dict(model.named_modules())
    if not any(isinstance(m, BATCHNORMS) for m in modules.values()):
        return []
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
            if _foldable_into(modules.get(prev.target)) and len(prev.users) == 1:
                pairs.append((str(prev.target), str(node.target)))
        return [p for p in pairs if _fits(modules[p[0]], modules[p[1]])]
    for name, module in modules.items():
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (a_name, a), (b_name, b) in zip(children, children[1:]):
                if _foldable_into(a) and isinstance(b, BATCHNORMS) and _fits(a, b):
                    prefix = f"{name}." if name else ""
                    pairs.append((prefix + a_name, prefix + b_name))
    return pairs


def bn_factor(bn: BNState, eps: float) -> torch.Tensor:
    """gamma / sqrt(var + eps), one per channel."""
    var = bn["running_var"]
    gamma = bn.get("weight")
    return (gamma if gamma is not None else torch.ones_like(var)) / torch.sqrt(var + eps)


def _channel_shape(weight: torch.Tensor) -> list[int]:
    return [-1] + [1] * (weight.dim() - 1)


@torch.no_grad()
def fold(weight: torch.Tensor, bias: torch.Tensor | None, bn: BNState, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The folded (weight, bias) of a layer followed by a BatchNorm; new tensors."""
    factor = bn_factor(bn, eps)
    mean = bn["running_mean"]
    beta = bn.get("bias")
    new_weight = weight * factor.reshape(_channel_shape(weight)).to(weight.dtype)
    base = bias if bias is not None else torch.zeros_like(mean)
    new_bias = (base - mean) * factor + (beta if beta is not None else torch.zeros_like(mean))
    return new_weight, new_bias.to(weight.dtype)


def bn_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A BatchNorm's statistics and affine parameters, by their state-dict names."""
    if not isinstance(module, _BatchNorm) or module.running_mean is None or module.running_var is None:
        raise TypeError(f"{type(module).__name__} is not a BatchNorm with running statistics")
    state = {"running_mean": module.running_mean, "running_var": module.running_var}
    if module.weight is not None:
        state["weight"] = module.weight.detach()
    if module.bias is not None:
        state["bias"] = module.bias.detach()
    return state


def fold_state_dict(state: Mapping[str, torch.Tensor], folds: list[tuple[str, str]], eps: Mapping[str, float]) -> dict[str, torch.Tensor]:
    """An original-architecture state dict with the BatchNorm folds applied (BatchNorm keys removed)."""
    out = dict(state)
    for layer, bn in folds:
        stats = {key: out.pop(f"{bn}.{key}") for key in ("weight", "bias", "running_mean", "running_var") if f"{bn}.{key}" in out}
        out.pop(f"{bn}.num_batches_tracked", None)
        w_key, b_key = weight_key(layer), weight_key(layer, "bias")
        out[w_key], out[b_key] = fold(out[w_key], out.get(b_key), stats, eps[bn])
    return out


def unfold_weight(weight: torch.Tensor, bn: BNState, eps: float, original: torch.Tensor) -> torch.Tensor:
    """Undo a fold on a weight: divide each output channel by gamma/std.

    A channel whose factor is (almost) zero cannot be undone; it keeps ``original``.
    """
    factor = bn_factor(bn, eps)
    shape = _channel_shape(weight)
    safe = factor.abs() > 1e-12
    out = weight / torch.where(safe, factor, torch.ones_like(factor)).reshape(shape)
    return torch.where(safe.reshape(shape), out, original)

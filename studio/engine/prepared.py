"""The session's working copy of the user's model: BatchNorm folded, compressible layers found.

The copy shares every tensor it does not change with the user's model, which is only
ever read: BatchNorm folds produce new tensors, and each compressible layer gets its
own ``Parameter`` whose ``data`` is pointed at the weights of the plan being evaluated
(the float weights themselves for a layer left in float), and its own bias ``Parameter``
(the user's bias, or its float16 rounding under ``param_dtype="float16"``). So a session
costs one extra copy of the weights at most: the dequantized weights of the current plan.

TorchScript modules cannot share storage that way; they are copied whole.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .activations import act_param_bytes
from .bn import bn_state, find_bn_pairs, fold
from .compress import CompressedWeight, compress_view
from .data import describe_inputs
from .errors import StudioError
from .half import to_half
from .layers import KINDS_BY_NAME, LayerInfo, find_layers, replace_module, tensor_attr, weight_of
from .plan import LayerSpec
from .quantize import channel_view, from_channel_view


def tensor_bytes(tensors: Mapping[str, torch.Tensor]) -> int:
    """Bytes of tensors as stored, counting storage shared by several names once."""
    seen: set[tuple[int, int, torch.dtype]] = set()
    total = 0
    for t in tensors.values():
        key = (t.data_ptr(), t.numel(), t.dtype)
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total


def check_finite(model: nn.Module) -> None:
    for key, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise StudioError(
                f"'{key}' holds NaN or Inf values; the model cannot be compressed until they are "
                "fixed (check the training run or the file it was loaded from)"
            )


def resolve_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise StudioError(f"unknown device {device!r}; use 'cpu' or 'cuda'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise StudioError("device='cuda' was asked for but CUDA is not available here; use device='cpu'")
    return dev


CPU = torch.device("cpu")


class PreparedModel:
    """The folded working copy, its compressible layers and their float weights."""

    def __init__(self, model: nn.Module, *, fold_bn: bool = True, device: torch.device = CPU) -> None:
        if not isinstance(model, nn.Module):
            raise StudioError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        check_finite(model)
        self.user_model = model
        self.device = device
        self.scripted = isinstance(model, torch.jit.ScriptModule)
        self.float_size_bytes = tensor_bytes(model.state_dict())
        self.folds: list[tuple[str, str]] = find_bn_pairs(model) if fold_bn and not self.scripted else []
        modules = dict(model.named_modules())
        self.bn_eps = {bn: float(modules[bn].eps) for _, bn in self.folds}
        self.work = self._folded_copy(share=not self.scripted).to(device)
        found = find_layers(self.work)
        if not found:
            raise StudioError(f"the model has no compressible layers; Compression Studio compresses {sorted(KINDS_BY_NAME)}")
        folded = dict(self.folds)
        self.modules: dict[str, nn.Module] = {}
        self.float_views: dict[str, torch.Tensor] = {}
        self.float_biases: dict[str, torch.Tensor] = {}  # the (folded) float bias of each layer that has one
        infos = []
        own_params: dict[int, nn.Parameter] = {}
        for name, module, kind in found:
            weight = weight_of(module)
            bias = tensor_attr(module, "bias")
            has_bias = bias is not None
            self.modules[name] = module
            view = channel_view(weight.detach().to(torch.float32).cpu(), kind.channel_axis, True)
            if self.scripted and view.data_ptr() == weight.data_ptr():
                view = view.clone()  # TorchScript weights are overwritten in place by every plan
            self.float_views[name] = view
            if bias is not None:  # TorchScript biases are overwritten in place too
                self.float_biases[name] = bias.detach().clone() if self.scripted else bias.detach()
            if not self.scripted:
                own_params[id(weight)] = nn.Parameter(weight.detach(), requires_grad=False)
                if bias is not None and isinstance(bias, nn.Parameter):
                    own_params[id(bias)] = nn.Parameter(bias.detach(), requires_grad=False)
            infos.append(
                LayerInfo(
                    name=name,
                    kind=kind.name,
                    weight_shape=tuple(weight.shape),
                    params=weight.numel() + (bias.numel() if bias is not None else 0),
                    channel_axis=kind.channel_axis,
                    has_bias=has_bias,
                    folded_bn=folded.get(name),
                )
            )
        self._give_own_parameters(own_params)
        self.layers: list[LayerInfo] = infos
        self.info = {info.name: info for info in infos}
        layer_tensors = {id(weight_of(m)) for m in self.modules.values()}
        layer_tensors |= {id(b) for b in (tensor_attr(m, "bias") for m in self.modules.values()) if b is not None}
        self.rest = {k: t for k, t in self.work.state_dict(keep_vars=True).items() if id(t) not in layer_tensors}
        self.rest_bytes = sum(t.numel() * t.element_size() for t in self.rest.values())
        self._float_spec = LayerSpec()
        self._loaded: dict[str, LayerSpec] = {}  # the spec each working layer holds (float when absent)

    # -- building -----------------------------------------------------------------
    def _folded_copy(self, share: bool) -> nn.Module:
        """A copy of the user's model with the BatchNorm folds applied; shares the user's
        tensors when ``share`` (nothing is ever written to them)."""
        memo: dict[int, Any] = {}
        if share:
            memo = {id(t): t for t in self.user_model.state_dict(keep_vars=True).values()}
        work = copy.deepcopy(self.user_model, memo).eval()
        for layer_name, bn_name in self.folds:
            layer = work.get_submodule(layer_name)
            bias = tensor_attr(layer, "bias")
            stats = bn_state(work.get_submodule(bn_name))
            weight, new_bias = fold(weight_of(layer).detach(), None if bias is None else bias.detach(), stats, self.bn_eps[bn_name])
            trainable = weight_of(layer).requires_grad  # a float copy stays as trainable as the user's model
            layer.weight = nn.Parameter(weight, requires_grad=trainable)
            layer.bias = nn.Parameter(new_bias, requires_grad=trainable)
            replace_module(work, bn_name, nn.Identity())
        return work

    def _give_own_parameters(self, own: dict[int, nn.Parameter]) -> None:
        """Point every use of a compressible weight (tied weights too) at the working copy's own Parameter."""
        for module in self.work.modules():
            for key, param in list(module._parameters.items()):
                if param is not None and id(param) in own:
                    module._parameters[key] = own[id(param)]

    def misfit(self, inputs: Any, exc: BaseException) -> StudioError:
        """The error for eval data the model cannot run: what it gives, and what the first layer expects."""
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        first = self.layers[0]
        return StudioError(
            f"the eval data does not fit the model: it gives {describe_inputs(inputs)}, and the forward pass "
            f"failed ({detail}). The first layer '{first.name}' ({first.kind}) expects {first.layer_kind.expects(self.modules[first.name])}."
        )

    # -- weights -----------------------------------------------------------------------
    def load(self, weights: Mapping[str, CompressedWeight]) -> None:
        """Point the working layers at ``weights`` and their biases (only those whose spec changed)."""
        for name, result in weights.items():
            if self._loaded.get(name, self._float_spec) != result.spec:
                if name in self._loaded and not self.scripted:  # the old weights go first: the new reuse their memory
                    self.set_weight(name, self.float_views[name])
                self.set_weight(name, result.dequant_view)
                self.set_bias(name, self.bias_for(name, result.spec))
                self._loaded[name] = result.spec

    def park(self) -> None:
        """Point every working layer back at its float weights, which frees the dequantized
        weights of the plan last loaded (e.g. while an exported file is decoded and run beside
        the session); the next ``load`` sets them again. TorchScript copies are left as they are."""
        if self.scripted:
            return
        for name in list(self._loaded):
            self.set_weight(name, self.float_views[name])
            self.set_bias(name, self.float_biases.get(name))
            del self._loaded[name]

    @torch.no_grad()
    def set_weight(self, name: str, dequant_view: torch.Tensor) -> None:
        """Make the working layer ``name`` use ``dequant_view`` (channel view) as its weight."""
        current = weight_of(self.modules[name])
        weight = from_channel_view(dequant_view, current, self.info[name].channel_axis, True).to(current.dtype)
        if self.scripted:
            current.copy_(weight)
        else:
            current.data = weight.to(self.device)

    @torch.no_grad()
    def set_bias(self, name: str, bias: torch.Tensor | None) -> None:
        """Make the working layer ``name`` use ``bias`` (the plan's bias: float, or rounded to float16)."""
        current = tensor_attr(self.modules[name], "bias")
        if current is None or bias is None:
            return
        value = bias.to(current.dtype)
        module = self.modules[name]
        if self.scripted:
            current.copy_(value)
        elif isinstance(current, nn.Parameter):  # the working copy's own Parameter
            current.data = value.to(self.device)
        else:  # a buffer, maybe the user's own tensor: replace it, never write to it
            module._buffers["bias"] = value.to(self.device)

    def layer_bias(self, name: str) -> torch.Tensor | None:
        """The layer's float bias (BatchNorm folded), or None."""
        return self.float_biases.get(name)

    def bias_for(self, name: str, spec: LayerSpec) -> torch.Tensor | None:
        """The bias as ``spec`` stores it: the float bias, or (``param_dtype="float16"``) a float16
        tensor of it rounded; a bias already two bytes a value is kept as it is."""
        bias = self.float_biases.get(name)
        if bias is None or spec.param_dtype != "float16" or bias.element_size() <= 2:
            return bias
        return to_half(bias, f"bias of layer '{name}'")

    def compress(self, name: str, spec: LayerSpec, huffman: bool) -> CompressedWeight:
        """Compress layer ``name``'s float weights by ``spec``, counting every byte it stores:
        its bias, and the scales and zero-points of its quantized activations."""
        bias = self.bias_for(name, spec)
        other = bias.numel() * bias.element_size() if bias is not None else 0
        width = 8 * weight_of(self.modules[name]).element_size()
        result = compress_view(self.float_views[name], spec, huffman, other, width)
        return self.with_activations(name, result, spec) if spec.act_bits else result

    def with_activations(self, name: str, result: CompressedWeight, spec: LayerSpec) -> CompressedWeight:
        """``result`` (layer ``name``'s weights, compressed without activation parameters) as
        ``spec``, which differs at most in its activations: the same stored weights, plus the
        activations' scales and zero-points."""
        kind = self.info[name].layer_kind
        extra = act_param_bytes(spec.act_bits) * kind.activation_tensors if spec.act_bits else 0
        return dataclasses.replace(result, spec=spec, size=dataclasses.replace(result.size, scales=result.size.scales + extra))

    def copies_bytes(self) -> int:
        """The most the session's own weight copies take: float weights it made (folded
        BatchNorm, TorchScript copies) and the working copy's dequantized weights, one per layer
        at most; the user's tensors, which it shares where it can, not counted."""
        user = {t.untyped_storage().data_ptr() for t in self.user_model.state_dict().values()}
        made = {v.untyped_storage().data_ptr(): v.untyped_storage().nbytes() for v in self.float_views.values()}
        working = sum(weight_of(m).numel() * weight_of(m).element_size() for m in self.modules.values())
        return sum(size for ptr, size in made.items() if ptr not in user) + working

    def float_bytes(self, name: str) -> int:
        """The layer's weight and bias as the user's model stores them."""
        return self.info[name].params * weight_of(self.modules[name]).element_size()

    def copy_with(self, weights: Mapping[str, torch.Tensor], biases: Mapping[str, torch.Tensor | None] | None = None) -> nn.Module:
        """A new CPU module of the folded architecture with ``weights`` (channel views by layer)
        and ``biases`` (by layer, where given)."""
        if self.scripted:
            model = copy.deepcopy(self.work).cpu()
        else:
            model = self._folded_copy(share=False).cpu()
        with torch.no_grad():
            for name, view in weights.items():
                weight = weight_of(model.get_submodule(name))
                weight.copy_(from_channel_view(view, weight, self.info[name].channel_axis, True).to(weight.dtype))
            for name, bias in (biases or {}).items():
                current = tensor_attr(model.get_submodule(name), "bias")
                if current is not None and bias is not None:
                    current.copy_(bias.to(current.dtype))
        return model.eval()

    def float_model(self, shared: bool = False) -> nn.Module:
        """A CPU copy of the folded model with float weights and no studio wrappers.

        ``shared``: the copy's tensors are the user's own wherever no fold changed them (no
        weight is copied), for passes that only read it; never train or edit such a copy.
        """
        if shared and not self.scripted and self.device == CPU and all(t.device == CPU for t in self.rest.values()):
            return self._folded_copy(share=True).eval()
        return self.copy_with(self.float_views)

    def original_state(self) -> dict[str, torch.Tensor]:
        """The user's model's state dict (tensors shared, read only)."""
        return {k: v.detach() for k, v in self.user_model.state_dict().items()}

"""Fake-quantized training: a forward pass equal to the engine's, a straight-through backward.

The forward of every compressed layer is the weight that ``Session.evaluate`` would load,
computed from the current float weights with the engine's own functions (``prune_mask``
for the mask, ``choose_params``/``quantize_codes``/``dequantize_codes`` for the grid,
``kmeans_1d`` for weight sharing), so it agrees bit for bit. The backward is the
straight-through estimator: the gradient of the compressed weight passes to the float
weight unchanged, except at pruned positions (zero) and, for a clipped grid, at weights
outside the grid's range (zero, as ``torch.fake_quantize_per_channel_affine`` does).

k-means layers are re-clustered every epoch, with their assignments fixed in between:
``WeightFakeQuant.recluster`` runs the engine's k-means on the float weights (exactly what
``evaluate`` does), and until the next call the shared values move with their members (each
shared value plus the mean change of the float weights assigned to it: Deep Compression's
centroid fine-tuning, the gradient of a shared value being its members' mean gradient). A
pinned zero stays exactly zero. Why not keep the assignments for the whole run and store the
learned shared values: ``evaluate`` re-clusters the float weights from a linear
initialisation, and k-means of already-clustered values does not give them back (on the
samples, 320 of 324 layer x bits x prune cases lost shared values), so the float weights
stay free and are re-clustered as the engine does. Re-clustering every step would match
evaluate at every step but costs about 0.1 s per 30k-weight layer; per epoch, the training
forward equals evaluate's right after each re-clustering and drifts from it a little within
the epoch (measured: at most 0.4 points on the benchmark's MLP).

Activations are fake-quantized with the calibrated parameters by the operations of
``activations.fake_quant`` (what the engine's hooks call; a test holds them equal) and a
straight-through backward inside the range.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .activations import ActQParams
from .cluster import kmeans_1d
from .plan import LayerSpec
from .quantize import channel_view, choose_params, dequantize_codes, from_channel_view, quantize_codes

ActPair = tuple[ActQParams | None, ActQParams | None]


class _StraightThrough(torch.autograd.Function):
    """Forward: ``value`` exactly. Backward: the gradient goes to ``latent``, times ``mask``."""

    @staticmethod
    def forward(ctx: Any, latent: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(mask)
        return value.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (mask,) = ctx.saved_tensors
        return (grad if mask is None else grad * mask), None, None


def straight_through(latent: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    out: torch.Tensor = _StraightThrough.apply(latent, value.to(latent.dtype), mask)  # type: ignore[no-untyped-call]  # torch's apply is untyped
    return out


def is_identity(spec: LayerSpec) -> bool:
    """A float32 layer that is not pruned: its forward is the float weight itself."""
    return spec.bits is None and spec.prune <= 0


@torch.no_grad()
def uniform_fake_quant(pruned: torch.Tensor, spec: LayerSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The engine's dequantized grid weight of a (pruned) channel view, and where it is not clipped."""
    per_channel = spec.granularity == "channel"
    qview = pruned if per_channel else pruned.reshape(1, -1)
    params = choose_params(qview, spec.code_bits, spec.symmetric, spec.clip)
    dequant = dequantize_codes(quantize_codes(qview, params), params).reshape(pruned.shape)
    raw = torch.round(qview * (1.0 / params.scale.unsqueeze(1))) + params.zero_point.unsqueeze(1)
    inside = ((raw >= params.qmin) & (raw <= params.qmax)).reshape(pruned.shape)
    return dequant, inside


@dataclass(frozen=True)
class _Clusters:
    codes: torch.Tensor  # the fixed assignment of every weight (channel view)
    codebook: torch.Tensor
    pinned: torch.Tensor  # the shared values held at 0.0 (pruned weights' code)
    anchor: torch.Tensor  # the float view when the codebook was made


class WeightFakeQuant:
    """One layer's compressed forward under ``spec``, with a fixed (or scheduled) keep-mask.

    Works on the weight's channel view (out_channels first), like ``compress_view``.
    """

    def __init__(self, spec: LayerSpec, channel_axis: int) -> None:
        self.spec = spec
        self.axis = channel_axis
        self.keep: torch.Tensor | None = None
        self._clusters: _Clusters | None = None  # k-means: fixed assignment per weight

    def view(self, weight: torch.Tensor) -> torch.Tensor:
        return channel_view(weight, self.axis, True)

    @torch.no_grad()
    def set_keep(self, keep: torch.Tensor | None, weight: torch.Tensor) -> None:
        """Use ``keep`` (channel view, True = kept) and zero the pruned float weights exactly."""
        self.keep = None if keep is None else keep.to(weight.device)
        if self.keep is not None:
            pruned = ~from_channel_view(self.keep, weight, self.axis, True)
            weight.masked_fill_(pruned, 0.0)

    @torch.no_grad()
    def recluster(self, weight: torch.Tensor) -> None:
        """Cluster the float weights as ``compress_view`` does; assignments then stay fixed."""
        if self.spec.cluster:
            self._recluster_view(self.view(weight.detach()))

    def _recluster_view(self, view: torch.Tensor) -> _Clusters:
        device = view.device
        view = view.to(torch.float32).cpu()
        keep = None if self.keep is None else self.keep.cpu()
        pruned = view * keep if keep is not None else view
        values = pruned[keep] if keep is not None else pruned.flatten()
        codebook, index = kmeans_1d(values, 2**self.spec.code_bits, pin_zero=keep is not None)
        index = index.long()  # uint8: torch would read it as a mask
        if keep is not None:
            zero_code = int(torch.nonzero(codebook == 0)[0, 0])
            codes = torch.full(view.shape, zero_code, dtype=torch.int64)
            codes[keep] = index
            pinned = torch.arange(codebook.numel()) == zero_code
        else:
            codes = index.reshape(view.shape)
            pinned = torch.zeros(codebook.numel(), dtype=torch.bool)
        self._clusters = _Clusters(codes.to(device), codebook.to(device), pinned.to(device), view.to(device))
        return self._clusters

    @torch.no_grad()
    def compressed_view(self, view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The compressed weight (channel view, float32) and the gradient mask (None: all pass)."""
        spec = self.spec
        view = view.to(torch.float32)
        keep = self.keep
        pruned = view * keep if keep is not None else view
        if spec.bits is None:
            return pruned.clone(), keep
        if spec.bits == 16:
            return pruned.to(torch.float16).to(torch.float32), keep
        if spec.cluster:
            c = self._clusters or self._recluster_view(view)
            codes = c.codes.flatten()
            k = c.codebook.numel()
            live = torch.ones_like(codes, dtype=torch.bool) if keep is None else keep.flatten()
            counts = torch.bincount(codes[live], minlength=k).clamp_min(1)
            moved = torch.bincount(codes[live], weights=(pruned - c.anchor).flatten()[live].double(), minlength=k)
            drift = torch.where(c.pinned, torch.zeros_like(moved), moved / counts).to(torch.float32)
            shared = (c.codebook + drift)[c.codes]
            if keep is not None:  # weights pruned since the last recluster (gradual schedule)
                shared = torch.where(keep, shared, torch.zeros_like(shared))
            return shared, keep
        dequant, inside = uniform_fake_quant(pruned, spec)
        return dequant, inside if keep is None else inside & keep

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        """The weight for the forward pass: compressed values, straight-through gradients."""
        view = self.view(weight)
        value, mask = self.compressed_view(view.detach())
        out = straight_through(view, value, None if mask is None else mask.to(view.dtype))
        return from_channel_view(out, weight, self.axis, True)


class _ActStraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, q: ActQParams) -> torch.Tensor:
        raw = torch.round(x / q.scale) + q.zero_point  # the same operations as fake_quant
        ctx.save_for_backward((raw >= q.qmin) & (raw <= q.qmax))
        return (torch.clamp(raw, q.qmin, q.qmax) - q.zero_point) * q.scale

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (inside,) = ctx.saved_tensors
        return grad * inside, None


def act_fake_quant(x: torch.Tensor, q: ActQParams) -> torch.Tensor:
    """``activations.fake_quant`` forward; straight-through gradient inside the range."""
    out: torch.Tensor = _ActStraightThrough.apply(x, q)  # type: ignore[no-untyped-call]  # torch's apply is untyped
    return out


def install_ste_act_hooks(module: nn.Module, params: Callable[[], ActPair]) -> list[Any]:
    """Fake-quantize the module's first input and its output, as ``hooks.install_act_hooks``
    does, but trainable. Returns the hook handles (remove them to restore the module)."""

    def pre(mod: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        q_in = params()[0]
        if q_in is None or not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
            return None
        return (act_fake_quant(args[0], q_in), *args[1:])

    def post(mod: nn.Module, args: tuple[Any, ...], out: Any) -> Any:
        q_out = params()[1]
        if q_out is None or not isinstance(out, torch.Tensor):
            return None
        return act_fake_quant(out, q_out)

    return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

"""A cheap sensitivity proxy: the diagonal Fisher information of each layer's weight.

A few backward passes on the float model (BatchNorm folded, as the session sees it)
give ``F = E[g**2]`` per weight. The loss is the task loss (cross-entropy with the
labels) when the eval data has class labels; without them it is the KL divergence to
the float model's own outputs, whose Hessian at the float model is the Fisher of its
predictive distribution, estimated with labels drawn from the float softmax (seeded).

The proxy of a compressed weight is the second-order estimate of the loss it adds,
``0.5 * sum(F * (w_compressed - w)**2)`` (in nats), as in Optimal Brain Damage and
HAWQ's Fisher variant. It needs no forward pass per setting: only the compressed
weight, which the session caches anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .data import batch_len, call_model, slice_inputs
from .errors import StudioError
from .progress import CancelFn, ProgressFn, check, report
from .quantize import channel_view

DEFAULT_SAMPLES = 512
DEFAULT_MICRO_BATCH = 16


@dataclass(frozen=True)
class FisherInfo:
    """Per layer, the diagonal Fisher of its weight as a channel view (out_channels, fan_in)."""

    diagonal: Mapping[str, torch.Tensor]
    loss: str  # "cross-entropy" (labels), "kl-to-float" (sampled from the float softmax), or "squared-weight-error" (no gradients)
    samples: int  # eval samples used
    backward_passes: int
    seconds: float

    def damage(self, name: str, float_view: torch.Tensor, approx_view: torch.Tensor) -> float:
        """The estimated loss increase (nats) of replacing ``float_view`` by ``approx_view``."""
        diff = (approx_view.to(torch.float32) - float_view.to(torch.float32)) ** 2
        return 0.5 * float((self.diagonal[name] * diff).sum())


def weight_error(session: Any, seconds: float = 0.0) -> FisherInfo:
    """The fallback without gradients: every weight counts alike, so the proxy is half the
    squared weight error (1 / SQNR times the weight's energy)."""
    diagonal = {info.name: torch.ones(1, 1) for info in session.layers}  # broadcasts over the channel view
    return FisherInfo(diagonal, "squared-weight-error", 0, 0, seconds)


def _loss_kind(targets: torch.Tensor | None, outputs: torch.Tensor) -> str:
    if targets is None:
        return "kl-to-float"
    if targets.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8) and tuple(targets.shape) == tuple(outputs.shape[:-1]):
        return "cross-entropy"
    if targets.shape == outputs.shape and targets.is_floating_point():  # one-hot or soft labels
        return "cross-entropy"
    return "kl-to-float"


def _loss(kind: str, logits: torch.Tensor, targets: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
    logits = logits.reshape(-1, logits.shape[-1]).float()
    if kind == "cross-entropy" and targets is not None:
        if targets.is_floating_point():
            return F.cross_entropy(logits, targets.reshape(-1, targets.shape[-1]).float(), reduction="mean")
        return F.cross_entropy(logits, targets.reshape(-1).long(), ignore_index=-100, reduction="mean")
    with torch.no_grad():  # labels drawn from the float model's own predictive distribution
        probs = torch.softmax(logits.detach(), dim=-1)
        sampled = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return F.cross_entropy(logits, sampled, reduction="mean")


def fisher_diagonal(
    session: Any,
    *,
    samples: int = DEFAULT_SAMPLES,
    micro_batch: int = DEFAULT_MICRO_BATCH,
    seed: int = 0,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> FisherInfo:
    """The diagonal Fisher of every compressible layer's weight, from a few backward passes.

    Each backward pass takes ``micro_batch`` eval samples; with ``m`` samples in a pass the
    squared mean gradient times ``m`` estimates ``E[g**2]`` (unbiased for sampled labels,
    whose mean gradient is zero). At most ``samples`` eval samples are used.
    """
    import time

    if int(samples) < 1 or int(micro_batch) < 1:
        raise StudioError("samples and micro_batch must be positive integers")
    start = time.perf_counter()
    try:
        model = session.float_model()
    except RuntimeError:  # a TorchScript model: no eager copy to take gradients of
        return weight_error(session, time.perf_counter() - start)
    generator = torch.Generator().manual_seed(int(seed))
    weights = {}
    for info in session.layers:
        weight = model.get_submodule(info.name).weight
        weight.requires_grad_(True)
        weights[info.name] = weight
    for p in model.parameters():
        if all(p is not w for w in weights.values()):
            p.requires_grad_(False)
    sums = {name: torch.zeros_like(w, dtype=torch.float32) for name, w in weights.items()}
    pieces = []
    left = int(samples)
    for inputs, targets in session.batches():
        n = batch_len(inputs)
        for i in range(0, n, micro_batch):
            if left <= 0:
                break
            stop = min(i + micro_batch, n, i + left)
            pieces.append((slice_inputs(inputs, i, stop), None if targets is None else targets[i:stop], stop - i))
            left -= stop - i
    kind = None
    used = 0
    for done, (inputs, targets, m) in enumerate(pieces):
        check(cancel)
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            logits = session.output_fn(call_model(model, inputs, session.input_mode))
            kind = kind or _loss_kind(targets, logits)
            loss = _loss(kind, logits, targets, generator)
            if not loss.requires_grad:
                raise StudioError("the model's output does not depend on its compressible weights, so no Fisher proxy can be estimated")
            loss.backward()  # type: ignore[no-untyped-call]
        for name, weight in weights.items():
            if weight.grad is not None:
                sums[name] += m * weight.grad.detach().float() ** 2
        used += m
        report(progress, done + 1, len(pieces))
    infos = {info.name: info for info in session.layers}
    diagonal = {
        name: channel_view(total / max(len(pieces), 1), infos[name].channel_axis, True).contiguous()
        for name, total in sums.items()
    }
    return FisherInfo(diagonal, kind or "kl-to-float", used, len(pieces), time.perf_counter() - start)

"""Scores: top-1 accuracy, user metrics, fidelity to the float model, and the noise of a delta."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .errors import StudioError

MetricFn = Callable[[torch.Tensor, "torch.Tensor | None"], float]  # (outputs, targets or None) -> score
IGNORE_INDEX = -100


def top1_correct(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-position correctness of argmax over the last axis (targets of -100 are skipped)."""
    if outputs.dim() == targets.dim():  # (N, C) with one-hot/probability targets
        targets = targets.argmax(dim=-1)
    if outputs.shape[:-1] != targets.shape:
        raise StudioError(
            f"cannot score top-1 accuracy: outputs have shape {tuple(outputs.shape)} but targets "
            f"{tuple(targets.shape)}; targets should be class indices of shape {tuple(outputs.shape[:-1])}, "
            "or pass metric=... for another kind of score"
        )
    pred = outputs.argmax(dim=-1)
    valid = targets != IGNORE_INDEX
    return (pred == targets)[valid].flatten()


@dataclass
class Fidelity:
    """Agreement with the float model's outputs; needs no labels."""

    agreement: float  # top-1 agreement with the float model
    kl: float  # mean KL(float || compressed) of the softmax over the last axis
    cosine: float  # mean cosine similarity of per-sample outputs

    def to_dict(self) -> dict[str, float]:
        return {"agreement": self.agreement, "kl": self.kl, "cosine": self.cosine}

    @classmethod
    def from_dict(cls, data: dict[str, float]) -> Fidelity:
        return cls(float(data["agreement"]), float(data["kl"]), float(data["cosine"]))


@dataclass
class FidelityAccumulator:
    agree: float = 0.0
    positions: int = 0
    kl: float = 0.0
    cosine: float = 0.0
    samples: int = 0
    agree_flags: list[torch.Tensor] = field(default_factory=list)

    def add(self, reference: torch.Tensor, outputs: torch.Tensor) -> None:
        ref = reference.float()
        out = outputs.float()
        flags = ref.argmax(dim=-1) == out.argmax(dim=-1)
        self.agree_flags.append(flags.flatten())
        self.agree += float(flags.sum())
        self.positions += flags.numel()
        log_p = F.log_softmax(ref, dim=-1)
        log_q = F.log_softmax(out, dim=-1)
        self.kl += float((log_p.exp() * (log_p - log_q)).sum(dim=-1).sum())
        n = ref.shape[0]
        self.cosine += float(F.cosine_similarity(ref.reshape(n, -1), out.reshape(n, -1), dim=1, eps=1e-12).sum())
        self.samples += n

    def result(self) -> Fidelity:
        return Fidelity(
            agreement=self.agree / max(self.positions, 1),
            kl=self.kl / max(self.positions, 1),
            cosine=self.cosine / max(self.samples, 1),
        )


def paired_delta_stderr(base: torch.Tensor, new: torch.Tensor) -> float:
    """Standard error of mean(new) - mean(base) for paired 0/1 outcomes (McNemar-style).

    Only the discordant samples carry information: with n10 samples right before and
    wrong now, and n01 the reverse, var(delta) = (n10 + n01 - (n01 - n10)**2 / n) / n**2.
    """
    n = base.numel()
    if n == 0:
        return float("nan")
    n01 = int((~base & new).sum())
    n10 = int((base & ~new).sum())
    var = (n01 + n10 - (n01 - n10) ** 2 / n) / n**2
    return math.sqrt(max(var, 0.0))

"""Scoring: the eval batches, the float model's reference outputs, and the metric.

A ``Scorer`` turns the outputs of one pass over the eval set (one tensor per batch)
into the metric, the per-sample correctness used for the paired confidence interval,
and the fidelity to the float model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .data import Batch, OutputFn
from .errors import StudioError
from .metrics import Fidelity, FidelityAccumulator, MetricFn, paired_delta_stderr, top1_correct


@dataclass(frozen=True)
class Score:
    metric: float
    fidelity: Fidelity
    delta_stderr: float | None


class Scorer:
    """The eval set and how to score outputs on it."""

    def __init__(self, batches: list[Batch], output_fn: OutputFn, metric_fn: MetricFn | None = None) -> None:
        self.batches = batches
        self.output_fn = output_fn
        self.metric_fn = metric_fn
        self.has_targets = batches[0][1] is not None
        self.metric_name = "top-1 accuracy" if self.has_targets else "top-1 agreement with float"
        if metric_fn is not None:
            self.metric_name = getattr(metric_fn, "__name__", "metric")
        self.reference: list[torch.Tensor] = []
        self.baseline_metric = 0.0
        self.n_samples = 0
        self._baseline_correct: torch.Tensor | None = None

    def pick(self, raw_output: Any) -> torch.Tensor:
        """The tensor to score from one batch's model output, on the CPU in float32."""
        return self.output_fn(raw_output).detach().float().cpu()

    def set_reference(self, outputs: list[torch.Tensor]) -> None:
        """The float model's outputs: the baseline and the reference for fidelity."""
        self.reference = outputs
        metric, correct, _ = self._score(outputs)
        self._baseline_correct = correct
        self.baseline_metric = metric
        self.n_samples = sum(int(o.shape[0]) for o in outputs)

    def score(self, outputs: list[torch.Tensor]) -> Score:
        metric, correct, fid = self._score(outputs)
        stderr = None
        if correct is not None and self._baseline_correct is not None:
            stderr = paired_delta_stderr(self._baseline_correct, correct)
        return Score(metric, fid.result(), stderr)

    def _score(self, outputs: list[torch.Tensor]) -> tuple[float, torch.Tensor | None, FidelityAccumulator]:
        fid = FidelityAccumulator()
        for ref, out in zip(self.reference or outputs, outputs):
            fid.add(ref, out)
        if self.metric_fn is not None:
            total, weight = 0.0, 0
            for out, (_, targets) in zip(outputs, self.batches):
                n = int(out.shape[0])
                total += float(self.metric_fn(out, targets)) * n
                weight += n
            return total / weight, None, fid
        if not self.has_targets:
            flags = torch.cat(fid.agree_flags)
            return float(flags.float().mean()), flags, fid
        correct = torch.cat([top1_correct(out, t.cpu()) for out, (_, t) in zip(outputs, self.batches) if t is not None])  # has_targets: every t is a tensor
        if correct.numel() == 0:
            raise StudioError("the eval targets are all ignore_index (-100): there is nothing to score")
        return float(correct.float().mean()), correct, fid

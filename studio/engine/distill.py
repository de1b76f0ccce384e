"""Losses for fine-tuning: the task loss, and knowledge distillation (Hinton et al., 2015).

distillation = alpha * KL(teacher_T || student_T) * T^2 + (1 - alpha) * task loss, where
``x_T = softmax(logits / T)`` over the last dimension. The T^2 keeps the soft term's
gradients on the scale of the task loss's as T changes. Without targets the loss is the
soft term alone, so distillation needs no labels.

Outputs with more than two dimensions (e.g. (batch, tokens, classes)) are flattened to
(rows, classes): the KL is averaged per row, cross-entropy per non-ignored target.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .errors import StudioError

TaskLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _rows(logits: torch.Tensor) -> torch.Tensor:
    return logits.reshape(-1, logits.shape[-1]) if logits.dim() > 2 else logits


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on logits; targets of -100 are ignored (as in ``top1_correct``)."""
    return F.cross_entropy(_rows(outputs.float()), targets.reshape(-1).long())


def soft_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher_T || student_T) * T^2, averaged over rows."""
    if student.shape != teacher.shape:
        raise StudioError(
            f"the student's outputs {tuple(student.shape)} and the teacher's {tuple(teacher.shape)} differ in shape; "
            "distillation needs a teacher with the same output classes"
        )
    t = temperature
    log_s = F.log_softmax(_rows(student.float()) / t, dim=-1)
    log_t = F.log_softmax(_rows(teacher.float()) / t, dim=-1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="batchmean") * (t * t)


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    targets: torch.Tensor | None,
    *,
    alpha: float,
    temperature: float,
    task_loss: TaskLoss = cross_entropy,
) -> torch.Tensor:
    soft = soft_kl(student, teacher, temperature)
    if targets is None or alpha >= 1.0:
        return soft
    return alpha * soft + (1.0 - alpha) * task_loss(student, targets)

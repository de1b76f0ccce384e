"""Recovery: fine-tune the float weights under a plan's compression, judged by the engine.

    recovered = finetune(session, plan, train_data, method="qat", epochs=10, lr=1e-3)
    Session(recovered.model, eval_data).evaluate(plan).metric      # == recovered.metric

Training starts from ``session.float_model()`` (BatchNorm folded, as deployed) and trains
those float weights. The forward pass compresses them as ``evaluate`` does (``qat.py``):
pruning masks from ``prune_mask`` (fixed, or raised by ``schedule.py``), the engine's
quantizer or k-means, and the calibrated activation parameters; gradients pass straight
through. ``method="distill"`` adds a teacher's soft targets (``distill.py``); it needs no labels.

After every epoch the engine judges the weights: a fresh Session of the trained float
model evaluates the plan, which re-compresses them from scratch. That number is the
epoch's ``metric``; its activation ranges (calibrated on the new weights, as evaluate
would) are used for the next epoch. Nothing here mutates the user's model or the session.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.func import functional_call

from .data import Inputs, call_model, to_device
from .distill import TaskLoss, cross_entropy, distillation_loss
from .errors import StudioError
from .layers import weight_of
from .plan import Plan
from .progress import CancelFn, ProgressFn, check, report
from .prune import prune_mask
from .qat import WeightFakeQuant, install_ste_act_hooks, is_identity
from .recovered import EpochRecord, FinetuneConfig, Recovered
from .schedule import ramp_epochs, ratio_at
from .trainset import TrainSet

if TYPE_CHECKING:
    from .session import Session


def judge_session(session: Session, model: nn.Module) -> Session:
    """A Session of ``model`` on ``session``'s eval batches, metric and output function:
    what ``Session(model, eval_data).evaluate(plan)`` measures."""
    return session.with_model(model)


def _call(model: nn.Module, inputs: Inputs, weights: dict[str, torch.Tensor]) -> Any:
    if isinstance(inputs, dict):
        return functional_call(model, weights, (), inputs)
    return functional_call(model, weights, inputs if isinstance(inputs, tuple) else (inputs,))


class _Run:
    """The state of one fine-tuning run on a private copy of the session's float model."""

    def __init__(self, session: Session, plan: Plan, config: FinetuneConfig, teacher: nn.Module | None) -> None:
        self.session, self.plan, self.config = session, plan, config
        self.device = session.device
        self.base = session.float_model()  # clean (no hooks): copied for the judge and the result
        if isinstance(self.base, torch.jit.ScriptModule):
            raise StudioError("fine-tuning needs an eager PyTorch model; load the weights into the architecture (safetensors)")
        self.model = copy.deepcopy(self.base).to(self.device)
        self.quant: dict[str, WeightFakeQuant] = {}
        self.keys: dict[str, str] = {}
        for info in session.layers:
            spec = plan.spec_for(info.name)
            if not is_identity(spec):
                self.quant[info.name] = WeightFakeQuant(spec, info.channel_axis)
                self.keys[info.name] = f"{info.name}.weight" if info.name else "weight"
        self.ratios: dict[str, float] = {}
        self.acts = dict(session.activation_params(plan))
        self.handles = []
        for name in self.acts:
            getter = lambda name=name: self.acts.get(name, (None, None))  # noqa: E731
            self.handles += install_ste_act_hooks(self.model.get_submodule(name), getter)
        self.teacher = None
        if config.method == "distill":
            source = teacher if teacher is not None else session.float_model()
            if not isinstance(source, nn.Module):
                raise StudioError(f"teacher must be a torch.nn.Module; got {type(source).__name__}")
            self.teacher = copy.deepcopy(source).to(self.device).eval().requires_grad_(False)

    def weight(self, name: str) -> torch.Tensor:
        return weight_of(self.model.get_submodule(name))

    def forward(self, inputs: Inputs) -> torch.Tensor:
        """The training forward: compressed weights (straight-through), quantized activations."""
        weights = {self.keys[name]: q(self.weight(name)) for name, q in self.quant.items()}
        return self.session.output_fn(_call(self.model, to_device(inputs, self.device), weights))

    @torch.no_grad()
    def set_masks(self, step: int, ramp: int) -> None:
        """Masks for ``step`` of the prune schedule, re-chosen by magnitude when the ratio moves."""
        for name, q in self.quant.items():
            spec = q.spec
            ratio = ratio_at(self.config.prune_schedule, spec.prune, step, ramp)
            if spec.prune <= 0 or self.ratios.get(name) == ratio:
                continue
            view = q.view(self.weight(name).detach()).to(torch.float32).cpu()
            q.set_keep(prune_mask(view, ratio, spec.prune_method), self.weight(name))
            self.ratios[name] = ratio

    @torch.no_grad()
    def reapply_masks(self) -> None:
        for name, q in self.quant.items():
            q.set_keep(q.keep, self.weight(name))

    def at_plan(self) -> bool:
        """Whether every mask is at its plan's ratio (the training forward compresses as the plan)."""
        return all(self.ratios.get(name) == q.spec.prune for name, q in self.quant.items() if q.spec.prune > 0)

    def sparsity(self) -> float:
        total = sum(self.weight(n).numel() for n in self.session.layer_names)
        zero = sum(int((~q.keep).sum()) for q in self.quant.values() if q.keep is not None)
        return zero / total

    def train_mode(self) -> None:
        self.model.train()
        for module in self.model.modules():  # BatchNorm left unfolded keeps its statistics
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()

    def loss(self, outputs: torch.Tensor, inputs: Inputs, targets: torch.Tensor | None, task_loss: TaskLoss) -> torch.Tensor:
        if targets is not None:
            targets = targets.to(self.device)
        if self.teacher is None:
            if targets is None:  # finetune() checks this up front
                raise ValueError("method='qat' trains on the task loss and needs targets")
            return task_loss(outputs, targets)
        with torch.no_grad():
            teacher_out = self.session.output_fn(call_model(self.teacher, to_device(inputs, self.device)))
        cfg = self.config
        return distillation_loss(outputs, teacher_out, targets, alpha=cfg.alpha, temperature=cfg.temperature, task_loss=task_loss)

    def state_model(self) -> nn.Module:
        """A clean CPU copy of the float model with the current trained weights."""
        model = copy.deepcopy(self.base)
        model.load_state_dict({k: v.detach().cpu() for k, v in self.model.state_dict().items()})
        return model

    @torch.no_grad()
    def judge(self, cancel: CancelFn | None) -> tuple[float, float, int]:
        """(engine metric, training-forward metric, size) of the current weights; recalibrates."""
        judge = judge_session(self.session, self.state_model())
        self.model.eval()
        outputs = []
        for inputs, _ in judge.batches():
            check(cancel)
            outputs.append(self.forward(inputs).detach().float().cpu())
        forward_metric = judge.score(outputs).metric
        report_ = judge.evaluate(self.plan, cancel=cancel)
        self.acts.update(judge.activation_params(self.plan))
        assert report_.metric is not None  # evaluate() measures it
        return report_.metric, forward_metric, report_.size_bytes

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


def finetune(
    session: Session,
    plan: Plan,
    train_data: Any,
    *,
    method: str = "qat",
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 64,
    teacher: nn.Module | None = None,
    alpha: float = 0.9,
    temperature: float = 4.0,
    prune_schedule: str = "fixed",
    seed: int = 0,
    loss_fn: TaskLoss | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> Recovered:
    """Fine-tune ``session``'s model under ``plan`` on ``train_data``; see the module docstring.

    method:          "qat" (task loss; needs targets) or "distill" (soft targets of
                     ``teacher``, default the session's float model, weighted by ``alpha``,
                     at ``temperature``; plus (1 - alpha) of the task loss when there are targets).
    prune_schedule:  "fixed" (the mask of the starting weights) or "gradual" (Zhu & Gupta).
    loss_fn:         the task loss ``(outputs, targets) -> scalar``; default cross-entropy.
    progress/cancel: ``progress(done, total)`` per batch; ``cancel()`` -> True stops with Cancelled.
    on_epoch:        called with each epoch's record as it ends (a live curve).
    Adam with a cosine-decayed learning rate; the data is reshuffled each epoch by ``seed``.
    """
    config = FinetuneConfig(method, epochs, lr, batch_size, alpha, temperature, prune_schedule, seed)
    if not isinstance(plan, Plan):
        raise StudioError(f"expected a studio.Plan; got {type(plan).__name__}")
    plan.check_names(session.layer_names)
    data = TrainSet(train_data, batch_size)
    if method == "qat" and not data.has_targets:
        raise StudioError(
            "method='qat' trains on labels, but train_data has no targets: give (inputs, targets), "
            "or use method='distill', which learns from the teacher's outputs"
        )
    task_loss = loss_fn or cross_entropy
    start = time.perf_counter()
    run = _Run(session, plan, config, teacher)
    params = [p for p in run.model.parameters() if p.requires_grad]
    if not params:
        raise StudioError("the model has no trainable parameters (every parameter has requires_grad=False)")
    steps_per_epoch = len(data)
    total = epochs * steps_per_epoch
    ramp = ramp_epochs(epochs) * steps_per_epoch
    devices = [session.device.index or 0] if session.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            optimizer = torch.optim.Adam(params, lr=config.lr)
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 0.5 * (1 + math.cos(math.pi * t / total)))
            before, _, size = run.judge(cancel)  # the plan on the starting weights
            history = []
            step = 0
            for epoch in range(1, epochs + 1):
                epoch_start = time.perf_counter()
                for name, q in run.quant.items():
                    q.recluster(run.weight(name))
                run.train_mode()
                losses = []
                for inputs, targets in data.epoch(generator):
                    check(cancel)
                    run.set_masks(step + 1, ramp)  # the ramp's last batch already trains at the plan's ratio
                    loss = run.loss(run.forward(inputs), inputs, targets, task_loss)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()  # type: ignore[no-untyped-call]
                    optimizer.step()
                    schedule.step()
                    run.reapply_masks()
                    losses.append(float(loss.detach()))
                    step += 1
                    report(progress, step, total)
                metric, forward_metric, size = run.judge(cancel)
                history.append(
                    EpochRecord(
                        epoch=epoch,
                        train_loss=sum(losses) / len(losses),
                        metric=metric,
                        forward_metric=forward_metric,
                        sparsity=run.sparsity(),
                        at_plan=run.at_plan(),
                        seconds=time.perf_counter() - epoch_start,
                    )
                )
                if on_epoch is not None:
                    on_epoch(history[-1])
    finally:
        run.close()
    return Recovered(
        model=run.state_model(),
        plan=plan,
        config=config,
        history=tuple(history),
        metric_name=session.metric_name,
        baseline_metric=session.baseline_metric,
        before_metric=before,
        size_bytes=size,
        float_size_bytes=session.float_size_bytes,
        seconds=time.perf_counter() - start,
    )

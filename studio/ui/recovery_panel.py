"""The Recovery panel: win accuracy back by fine-tuning under the current plan.

QAT trains the float weights with the plan's quantizer in the forward pass; distillation
learns the float model's outputs instead of (or beside) the labels; a student width
below 1 distils a narrower copy of a sample. Each epoch's metric is measured by the
engine itself, and the live curve shows it. When training ends the recovered model
becomes the session's model; "Undo recovery" brings the previous one back.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W

from ..engine import StudioError
from .figures import set_font_size, training_figure, update_training
from .guidance_panel import job_text
from .html import fmt_metric
from .kernel_thread import KernelThread
from .state import StudioState

LABEL = {"description_width": "initial"}


class RecoveryPanel:
    """Fine-tuning controls and a live loss/metric curve over a ``StudioState``."""

    HINT = "Train the weights under the current plan so that they suit it: QAT (labels) or distillation from the float model."

    def __init__(self, state: StudioState, kernel: KernelThread | None = None) -> None:
        self.state = state
        self.kernel = kernel or KernelThread()  # the Studio's, where it has one
        self.method = W.Dropdown(options=[("QAT", "qat"), ("distillation", "distill")], value="qat", description="method", style=LABEL)
        self.epochs = W.BoundedIntText(value=5, min=1, max=500, description="epochs", style=LABEL, layout=W.Layout(width="140px"))
        self.lr = W.BoundedFloatText(value=1e-3, min=1e-6, max=1.0, step=1e-4, description="learning rate", style=LABEL, layout=W.Layout(width="200px"))
        self.width = W.Dropdown(options=[("same model", 1.0), ("student ×0.5", 0.5), ("student ×0.25", 0.25)], value=1.0, description="model", style=LABEL)
        self.start = W.Button(description="Start recovery", button_style="primary")
        self.cancel = W.Button(description="Cancel", disabled=True)
        self.undo = W.Button(description="Undo recovery", disabled=True, tooltip="bring back the model from before the last recovery")
        for widget, css in ((self.method, "method"), (self.epochs, "epochs"), (self.width, "width"), (self.start, "start-recovery"), (self.cancel, "cancel-recovery"), (self.undo, "undo-recovery")):
            widget.add_class(f"studio-{css}")
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, layout=W.Layout(width="160px", visibility="hidden"))
        self.status = W.HTML()
        self.summary = W.HTML()
        self.summary.add_class("studio-recovery-summary")
        self.curve_box = W.VBox()
        self.curve: Any = None  # the FigureWidget, built at the first start
        self._before: float | None = None
        self.start.on_click(lambda _: self._start())
        self.cancel.on_click(lambda _: state.cancel_job())
        self.undo.on_click(lambda _: state.undo_recovery())
        self.widget = W.VBox(
            [
                W.HTML(f"<h3>Recovery</h3><div class='studio-hint'>{self.HINT}</div>"),
                W.HBox([self.method, self.epochs, self.lr, self.width], layout=W.Layout(flex_flow="row wrap")),
                W.HBox([self.start, self.cancel, self.undo, self.progress, self.status], layout=W.Layout(align_items="center", flex_flow="row wrap")),
                self.summary,
                self.curve_box,
            ]
        )
        self.widget.add_class("studio-panel")
        self.widget.add_class("studio-panel-recovery")
        state.observe(lambda _: self.show_job(), names=["job", "job_progress", "job_eta_s", "can_undo_recovery"])
        state.observe(lambda _: self.show_curve(), names="epochs")
        state.observe(lambda _: self.show_summary(), names=["recovered", "session"])

    def _start(self) -> None:
        report = self.state.eval_report
        self._before = None if report is None or float(self.width.value) < 1 else report.metric
        try:
            self.state.recover(self.method.value, int(self.epochs.value), float(self.lr.value), float(self.width.value))
        except StudioError as exc:
            self.status.value = f"<span class='studio-error'>⚠ {html.escape(str(exc))}</span>"
            return
        if self.curve is None:
            self.curve = training_figure()
            self.curve_box.children = [self.curve]
        update_training(self.curve, [], self._before)

    def show_job(self) -> None:
        mine = self.state.job == "recovery"
        self.start.disabled = bool(self.state.job)
        self.cancel.disabled = not mine
        self.undo.disabled = bool(self.state.job) or not self.state.can_undo_recovery
        self.progress.layout.visibility = "visible" if mine else "hidden"
        self.progress.value = self.state.job_progress
        self.status.value = job_text(self.state, "recovery") if mine else self.status.value if "error" in self.status.value else ""
        self.width.disabled = not self.state.teacher_name

    def show_curve(self) -> None:
        self.kernel.run(self._draw_curve)  # epochs arrive on the training thread

    def _draw_curve(self) -> None:
        if self.curve is not None:
            update_training(self.curve, list(self.state.epochs), self._before)

    def show_summary(self) -> None:
        s = self.state
        if not s.recovered:
            self.summary.value = ""
            return
        last = s.epochs[-1] if s.epochs else None
        measured = f"; last epoch measured {fmt_metric(last.metric, s.session.metric_name)}" if last is not None and s.session is not None else ""
        self.summary.value = f"<div class='studio-ok studio-recovered'>Now showing the recovered model ({html.escape(s.recovered)}){measured}. History marks its points ▲.</div>"

    def set_projector(self, on: bool) -> None:
        if self.curve is not None:
            set_font_size((self.curve,), 20 if on else 15)

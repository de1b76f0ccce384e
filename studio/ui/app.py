"""The Studio: six panels over one StudioState, evaluating off the main thread.

    studio.Studio()                      # the sample models, with a picker
    studio.Studio(model, eval_data)      # your own model
    studio.Studio(session)               # an existing Session
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W

from ..engine import Report, Session
from ..samples import list_samples
from .export_panel import ExportPanel
from .figures import histogram_data, histogram_figure, history_figure, set_font_size, update_histogram, update_history
from .guidance_panel import GuidancePanel
from .html import layer_bars_html, metric_html, size_html
from .kernel_thread import KernelThread
from .layers_panel import LayersPanel
from .model_panel import ModelPanel
from .recovery_panel import RecoveryPanel
from .resize import FigureResizer
from .state import StudioState
from .style import CSS


class Studio(W.VBox):
    """The Compression Studio widget: eight panels over one ``StudioState`` (``self.state``).

    ``Studio()`` opens on the sample models; ``Studio(model, eval_data, train_data=None,
    **session_kwargs)`` or ``Studio(session, train_data=...)`` on your own (``train_data``,
    in any eval-data form, is what Recovery may train on). Evaluation runs in the state's
    worker thread; ``wait()`` blocks until the newest plan is measured.
    """

    def __init__(self, model: Any = None, eval_data: Any = None, train_data: Any = None, **session_kwargs: Any) -> None:
        super().__init__()
        self.add_class("studio-root")
        self.state = StudioState()
        self.kernel = KernelThread()  # figures are updated on the kernel's thread

        custom = model is not None
        self.model_panel = ModelPanel(self._load_session, self._show_error, custom=custom)
        self.layers_panel = LayersPanel(self.state)
        self.histogram = histogram_figure()
        self.history = history_figure()
        for trace in self.history.data[:-1]:  # every trace but the current-plan star
            trace.on_click(self._history_clicked)
        self.metrics = W.HTML()
        self.metrics.add_class("studio-metrics")
        self.bars = W.HTML()
        self.latency_runtime = W.Dropdown(options=[("ONNX Runtime", "onnxruntime"), ("PyTorch", "pytorch")], value="onnxruntime", layout=W.Layout(width="150px"))
        self.latency_button = W.Button(description="Measure latency", tooltip="time this plan and the float model in the runtime (1 thread)")
        self.latency_auto = W.Checkbox(value=False, description="after every plan", indent=False, layout=W.Layout(width="150px"))
        self.latency_status = W.HTML()
        for widget, css in ((self.latency_runtime, "latency-runtime"), (self.latency_button, "measure-latency"), (self.latency_auto, "latency-auto")):
            widget.add_class(f"studio-{css}")
        self.latency_runtime.observe(lambda ch: setattr(self.state, "latency_runtime", ch["new"]), names="value")
        self.latency_auto.observe(lambda ch: setattr(self.state, "auto_latency", ch["new"]), names="value")
        self.latency_button.on_click(lambda _: self._measure_latency())
        self.history_axis = W.ToggleButtons(options=[("size", "size"), ("latency", "latency")], value="size", style={"button_width": "90px"})
        self.history_axis.add_class("studio-history-axis")
        self.history_axis.observe(lambda _: self._show_history(), names="value")
        self.export_panel = ExportPanel(self.state)
        self.guidance_panel = GuidancePanel(self.state)
        self.recovery_panel = RecoveryPanel(self.state, self.kernel)
        self.busy = W.HTML()
        self.busy.add_class("studio-busy")
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, layout=W.Layout(width="160px", visibility="hidden"))
        self.progress.add_class("studio-progress")
        self.error = W.HTML()
        self.error.add_class("studio-error-box")
        self.projector = W.ToggleButton(value=False, description="Projector size", tooltip="larger text for a projector")
        self.projector.observe(self._projector, names="value")

        header = W.HBox(
            [
                W.HTML("<h2 class='studio-title'>Compression Studio</h2>"),
                W.HBox([self.progress, self.busy], layout=W.Layout(align_items="center")),
                self.projector,
            ],
            layout=W.Layout(justify_content="space-between", align_items="center"),
        )
        hist_panel = self._panel("Histogram", "The selected layer's float weights (grey) and the levels they snap to (blue); pruned in amber, clipped in red.", self.histogram)
        latency_row = W.HBox([self.latency_runtime, self.latency_button, self.latency_auto, self.latency_status], layout=W.Layout(align_items="center", flex_flow="row wrap"))
        metrics_panel = self._panel(
            "Metrics", "Size counts every stored byte; the accuracy is measured on the eval set, with its noise; latency when you ask for it.",
            W.VBox([self.metrics, latency_row, self.bars]),
        )
        history_panel = self._panel(
            "History", "Every evaluated plan: size (or measured latency) against accuracy (grey: yours, ◆ searched, ▲ after recovery). The line is the Pareto front; click a point to restore its plan.",
            W.VBox([self.history_axis, self.history]),
        )
        left = W.VBox(
            [self.model_panel.widget, self.layers_panel.widget, self.guidance_panel.widget, self.recovery_panel.widget, self.export_panel.widget],
            layout=W.Layout(flex="1 1 55%"),
        )
        right = W.VBox([metrics_panel, hist_panel, history_panel], layout=W.Layout(flex="1 1 45%"))
        columns = W.HBox([left.add_class("studio-column"), right.add_class("studio-column")], layout=W.Layout(width="100%", flex_flow="row wrap"))
        self.children = [W.HTML(CSS), FigureResizer(), header, self.error, columns]

        obs = self.state.observe
        obs(self._on_session, names="session")
        obs(lambda _: self._show_size(), names="size_report")  # set together with the plan
        obs(lambda _: self._show_metric(), names=["eval_report", "last_report", "evaluating"])
        obs(lambda _: self._show_busy(), names=["evaluating", "progress", "eta_s"])
        obs(lambda ch: setattr(self.latency_status, "value", "") if ch["new"] != "latency" else None, names="job")
        obs(lambda _: self._on_selected(), names="selected")
        obs(lambda _: self._show_history(), names=["history", "plan"])
        obs(lambda _: self.export_panel.show_notes(), names="plan")
        obs(lambda ch: self._show_error(ch["new"]), names="error")

        if isinstance(model, Session):
            self._load_session(model, "your model", train_data)
        elif model is not None:
            try:
                self._load_session(Session(model, eval_data, **session_kwargs), "your model", train_data)
            except ValueError as exc:
                self._show_error(str(exc))
        else:
            self.model_panel.load_sample(list_samples()[0])

    # -- building ------------------------------------------------------------------
    @staticmethod
    def _panel(title: str, hint: str, body: W.Widget) -> W.VBox:
        box = W.VBox([W.HTML(f"<h3>{title}</h3><div class='studio-hint'>{hint}</div>"), body])
        box.add_class("studio-panel")
        box.add_class(f"studio-panel-{title.lower()}")
        return box

    def _projector(self, change: dict[str, Any]) -> None:
        (self.add_class if change["new"] else self.remove_class)("studio-projector")
        set_font_size((self.histogram, self.history), 20 if change["new"] else 15)
        self.recovery_panel.set_projector(change["new"])

    # -- state changes -----------------------------------------------------------------
    def _load_session(self, session: Session, source: str, train_data: Any = None, teacher: str = "") -> None:
        self.error.value = ""
        self.state.load(session, source, train_data=train_data, teacher=teacher)

    def _on_session(self, change: dict[str, Any]) -> None:
        session = change["new"]
        self.model_panel.show(session, self.state.source)
        self.layers_panel.build(session)
        self._show_size()
        self.export_panel.show_notes()

    def _on_selected(self) -> None:
        self.layers_panel.show()
        self._show_histogram()

    def _show_size(self) -> None:
        report: Report | None = self.state.size_report
        if report is None:
            return
        self.layers_panel.show()
        self.bars.value = layer_bars_html(report, {g.title: g.names for g in self.layers_panel.groups})
        self._show_histogram()
        self._show_metric()

    def _show_metric(self) -> None:
        s = self.state
        if s.session is None or s.size_report is None:
            return
        self.metrics.value = size_html(s.size_report) + metric_html(s.eval_report, s.last_report, s.evaluating, s.session)

    def _show_histogram(self) -> None:
        self.kernel.run(self._draw_histogram)

    def _draw_histogram(self) -> None:
        s = self.state
        if s.session is None or not s.selected:
            return
        result = s.session.compressed(s.selected, s.plan.spec_for(s.selected), s.plan.huffman)
        update_histogram(self.histogram, histogram_data(result, s.selected))

    def _show_history(self) -> None:
        self.kernel.run(self._draw_history)

    def _draw_history(self) -> None:
        points = self.state.history
        current = next((i for i, p in enumerate(points) if p.plan == self.state.plan and p.session in (None, self.state.session)), None)
        update_history(self.history, points, current, self.history_axis.value)

    def _history_clicked(self, trace: Any, points: Any, _selector: Any) -> None:
        if not points.point_inds:
            return
        self.state.restore(int(trace.customdata[points.point_inds[0]]))

    def _measure_latency(self) -> None:
        try:
            self.state.measure_latency()
        except ValueError as exc:
            self.latency_status.value = f"<span class='studio-error'>⚠ {html.escape(str(exc))}</span>"
        else:
            self.latency_status.value = "<span class='studio-busy-on'>⏳ timing…</span>"

    def _show_busy(self) -> None:
        s = self.state
        if not s.evaluating:
            self.progress.layout.visibility = "hidden"
            self.busy.value = "<span class='studio-busy-off'>✓ up to date</span>"
            return
        self.progress.layout.visibility = "visible"
        self.progress.value = s.progress
        left = f" · about {s.eta_s:.0f} s left" if s.eta_s >= 1 else ""
        self.busy.value = f"<span class='studio-busy-on'>⏳ evaluating… {100 * s.progress:.0f}%{left}</span>"

    def _show_error(self, text: str) -> None:
        self.error.value = f"<div class='studio-error'>⚠ {html.escape(text)}</div>" if text else ""

    # -- for scripts and tests ------------------------------------------------------
    def wait(self, timeout: float = 60.0) -> bool:
        """Block until the newest plan has been evaluated."""
        return self.state.wait(timeout)

    def close(self) -> None:
        """Stop the evaluation thread and close the widgets."""
        self.state.close()
        super().close()

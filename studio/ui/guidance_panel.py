"""The Guidance panel: per-layer sensitivity as a heatmap, and Fit to budget.

"Measure" probes every layer at each bit width (incrementally: only what is downstream
of the probed layer re-runs); "Estimate" ranks them from a few backward passes instead,
labelled as an estimate. "Fit" searches the smallest plan within a metric drop, or the
most accurate one at a size ratio; its candidates go to History and its choice becomes
the current plan (Undo takes it back).
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W

from ..engine import StudioError
from .html import search_html, sensitivity_html
from .state import StudioState

LABEL = {"description_width": "initial"}
BUDGETS = [("largest drop (points)", "drop"), ("size ratio (×)", "ratio")]


def job_text(state: StudioState, name: str) -> str:
    """'⏳ 42% · about 3 s left' while job ``name`` runs, else ''."""
    if state.job != name:
        return ""
    left = f" · about {state.job_eta_s:.0f} s left" if state.job_eta_s >= 1 else ""
    return f"<span class='studio-busy-on'>⏳ {100 * state.job_progress:.0f}%{left}</span>"


class GuidancePanel:
    """Sensitivity heatmap and Fit-to-budget controls over a ``StudioState``."""

    HINT = "Where to start: measure how much each layer costs at each bit width, or let Fit find the smallest plan within a budget."

    def __init__(self, state: StudioState) -> None:
        self.state = state
        self.measure = W.Button(description="Measure sensitivity", tooltip="probe every layer at 2, 3, 4, 6 and 8 bits (measured)")
        self.estimate = W.Button(description="Quick estimate", tooltip="rank layers from a few backward passes (an estimate)")
        self.budget_kind = W.Dropdown(options=BUDGETS, value="drop", description="budget", style=LABEL, layout=W.Layout(width="260px"))
        self.budget = W.BoundedFloatText(value=1.0, min=0.0, max=1e6, step=0.5, layout=W.Layout(width="90px"))
        self.fit_button = W.Button(description="Fit to budget", button_style="primary")
        self.cancel = W.Button(description="Cancel", disabled=True)
        for widget, css in ((self.measure, "measure"), (self.estimate, "estimate"), (self.fit_button, "fit"), (self.cancel, "cancel-guidance"), (self.budget, "budget")):
            widget.add_class(f"studio-{css}")
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, layout=W.Layout(width="160px", visibility="hidden"))
        self.status = W.HTML()
        self.heatmap = W.HTML()
        self.heatmap.add_class("studio-heatmap")
        self.result = W.HTML()
        self.result.add_class("studio-search-result")
        self.measure.on_click(lambda _: self._do(lambda: state.run_sensitivity("measured")))
        self.estimate.on_click(lambda _: self._do(lambda: state.run_sensitivity("proxy")))
        self.fit_button.on_click(lambda _: self._do(self._fit))
        self.cancel.on_click(lambda _: state.cancel_job())
        self.widget = W.VBox(
            [
                W.HTML(f"<h3>Guidance</h3><div class='studio-hint'>{self.HINT}</div>"),
                W.HBox([self.measure, self.estimate, self.cancel, self.progress, self.status], layout=W.Layout(align_items="center", flex_flow="row wrap")),
                self.heatmap,
                W.HBox([self.budget_kind, self.budget, self.fit_button], layout=W.Layout(align_items="center")),
                self.result,
            ]
        )
        self.widget.add_class("studio-panel")
        self.widget.add_class("studio-panel-guidance")
        state.observe(lambda _: self.show_job(), names=["job", "job_progress", "job_eta_s"])
        state.observe(lambda _: self.show_results(), names=["sensitivity", "search_result"])

    def _fit(self) -> None:
        value = float(self.budget.value)
        if self.budget_kind.value == "drop":
            self.state.fit(max_drop=value / 100)
        else:
            self.state.fit(target_ratio=value)

    def _do(self, action: Any) -> None:
        try:
            action()
        except StudioError as exc:
            self.status.value = f"<span class='studio-error'>⚠ {html.escape(str(exc))}</span>"

    def show_job(self) -> None:
        mine = self.state.job in ("sensitivity", "search")
        self.cancel.disabled = not mine
        for button in (self.measure, self.estimate, self.fit_button):
            button.disabled = bool(self.state.job)
        self.progress.layout.visibility = "visible" if mine else "hidden"
        self.progress.value = self.state.job_progress
        self.status.value = job_text(self.state, self.state.job) if mine else ""

    def show_results(self) -> None:
        table, result = self.state.sensitivity, self.state.search_result
        self.heatmap.value = "" if table is None else sensitivity_html(table)
        self.result.value = "" if result is None else search_html(result)

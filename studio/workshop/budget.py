"""Notebook 4's widgets: a hand-made mixed plan, its check against a budget, and the
search's candidates beside it.

``PlanPicker`` sets each layer's bits with a drop-down and measures the plan at once
(sizes are exact, the metric a forward pass over the eval set: a few tens of ms on the
sample models). ``plan_exercise`` checks the picked plan against a size and a drop
budget with the engine's own rule (``checks.check_budget``), and its hints name the
layer to change, from the measured sensitivity table when one is given. ``FrontFigure``
plots every layer at one bit width, the search's candidates, its Pareto front and its
choice, and follows the picker with a star ("your plan").
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W
import plotly.graph_objects as go
import traitlets

from ..engine import Plan, Report, Session
from ..engine.search import SearchResult
from ..engine.sensitivity import SensitivityTable
from ..ui.figures import FONT, set_font_size, sync_initial_state
from ..ui.html import fmt_bytes
from .checks import Verdict, check_budget
from .exercise import Exercise
from .labs import measured_html

BIT_CHOICES = [("float", 32), ("8 bits", 8), ("6 bits", 6), ("5 bits", 5), ("4 bits", 4), ("3 bits", 3), ("2 bits", 2)]


def plan_of(session: Session, bits: tuple[int, ...]) -> Plan:
    """A plan with each layer (in ``session.layer_names`` order) at its bits; 32 = float."""
    plan = Plan()
    for name, b in zip(session.layer_names, bits):
        if b != 32:
            plan = plan.with_layer(name, bits=int(b))
    return plan


class PlanPicker(W.VBox, W.ValueWidget):
    """One drop-down per layer; ``value`` is the bits per layer (32 = float), ``report``
    the picked plan's measured report. The readout shows its size and measured metric."""

    value = traitlets.Tuple()

    def __init__(self, session: Session, start: int = 32) -> None:
        super().__init__()
        self.session = session
        self.dropdowns = []
        for info in session.layers:
            dropdown = W.Dropdown(options=BIT_CHOICES, value=start, description=f"{info.name} ({info.params:,})", style={"description_width": "initial"}, layout=W.Layout(width="auto"))
            dropdown.observe(lambda _: self._changed(), names="value")
            self.dropdowns.append(dropdown)
        self.readout = W.HTML()
        self.readout.add_class("workshop-readout")
        self.children = [W.HBox(self.dropdowns, layout=W.Layout(flex_flow="row wrap", grid_gap="4px 16px")), self.readout]
        self.add_class("workshop-plan-picker")
        self.layout.max_width = "880px"  # the Check button stays next to the plan, not at the page's far edge
        self.report: Report | None = None
        self._changed()

    @property
    def plan(self) -> Plan:
        return plan_of(self.session, tuple(self.value))

    def _changed(self) -> None:
        bits = tuple(int(d.value) for d in self.dropdowns)
        plan = plan_of(self.session, bits)
        self.report = self.session.evaluate(plan)
        r = self.report
        self.readout.value = (
            f"Size <b>{fmt_bytes(r.size_bytes)}</b> ({r.compression_ratio:.1f}× smaller than float {fmt_bytes(r.float_size_bytes)}) · "
            + measured_html(self.session, plan, "of this plan", r)
        )
        self.value = bits  # last: observers (the exercise, the figure) see the new report


def is_float_plan(session: Session, plan: Plan) -> bool:
    """Every layer left in float: nothing picked yet."""
    return all(plan.spec_for(name).is_float for name in session.layer_names)


def _costliest(session: Session, table: SensitivityTable | None, bits: tuple[int, ...]) -> str:
    """'In the heatmap, at these bits features.3 costs 0.8 points alone and features.0 0.4: …'
    for the (up to two) picked layers the table measured as costliest; '' without a table."""
    if table is None:
        return ""
    labels = [s.label for s in table.settings]
    costs = []
    for name, b in zip(session.layer_names, bits):
        if b != 32 and name in table.layers and f"bits={b}" in labels:
            drop = table.entry(name, f"bits={b}").drop or 0.0
            if drop > 0:
                costs.append((drop, name, b))
    if not costs:
        return ""
    costs.sort(reverse=True)
    said = " and ".join(f"{name} at {b} bits {100 * drop:.1f}" for drop, name, b in costs[:2])
    return (
        f"In the heatmap, alone, {said} points: the costs add up. Give the costly layers more bits; "
        "on a small layer more bits cost only a few bytes (see the bytes table)."
    )


def _biggest(session: Session, report: Report | None) -> str:
    if report is None:
        return ""
    name = max(report.layers, key=lambda n: report.layers[n].total)
    return f"{name} is {fmt_bytes(report.layers[name].total)} of it: lower its bits first (the table of bytes shows what each step saves). "


def plan_exercise(
    name: str, question: str, session: Session, target_bytes: int, max_drop: float,
    table: SensitivityTable | None = None, picker: PlanPicker | None = None, explain: str = "",
) -> Exercise:
    """The picked plan, measured, against ``target_bytes`` and ``max_drop`` (0.01 = one point)."""
    picker = picker or PlanPicker(session)

    def check(bits: Any) -> Verdict:
        report = picker.report
        if report is None or tuple(bits) != tuple(picker.value):
            return check_budget(None, None, None, target_bytes=target_bytes, max_drop=max_drop, float_size_bytes=session.float_size_bytes)
        return check_budget(
            report.size_bytes, report.delta, report.delta_stderr, target_bytes=target_bytes, max_drop=max_drop,
            float_size_bytes=session.float_size_bytes, explain=explain, is_float=is_float_plan(session, report.plan),
            too_big=_biggest(session, report), too_lossy=_costliest(session, table, tuple(bits)) or "Give the most sensitive layers (the heatmap's red rows) more bits.",
        )

    return Exercise(name, question, picker, check)


class FrontFigure(W.VBox):
    """Accuracy against size: every layer at one bit width, the search's candidates, its
    Pareto front, its choice, the budget, and the picker's plan as a star."""

    def __init__(self, session: Session, result: SearchResult, uniform: dict[int, Report], span_points: float = 10.0) -> None:
        super().__init__()
        self.session, self.result = session, result
        base = 100 * session.baseline_metric
        cands, front = result.candidates, result.pareto()
        best = result.best
        text = lambda c: f"{c.budget}, {100 * c.delta:+.1f} pts"  # noqa: E731
        traces = [
            go.Scatter(name="every layer at b bits", mode="markers+text", x=[r.size_bytes / 1000 for r in uniform.values()], y=[100 * (r.metric or 0) for r in uniform.values()],
                       text=[f"int{b}" for b in uniform], textposition="top center", marker=dict(size=11, color="#9aa5b1", symbol="square")),
            go.Scatter(name="search candidates", mode="markers", x=[c.size_bytes / 1000 for c in cands], y=[100 * c.metric for c in cands],
                       text=[text(c) for c in cands], marker=dict(size=10, color="#b197fc", symbol="diamond")),
            go.Scatter(name="Pareto front", mode="lines+markers", x=[c.size_bytes / 1000 for c in front], y=[100 * c.metric for c in front],
                       text=[text(c) for c in front], line=dict(color="#1f6fd1", width=2), marker=dict(size=9, color="#1f6fd1")),
            go.Scatter(name="search's choice", mode="markers", x=[best.size_bytes / 1000], y=[100 * best.metric], text=[text(best)],
                       marker=dict(size=18, color="#7048e8", symbol="diamond-open", line=dict(width=3))),
            go.Scatter(name="your plan", mode="markers", x=[], y=[], marker=dict(size=20, color="#e8590c", symbol="star")),
        ]
        for trace in traces:
            trace.hovertemplate = "%{x:.2f} KB, %{y:.1f}%<br>%{text}<extra>%{fullData.name}</extra>"
        self.figure = go.FigureWidget(data=traces)
        shapes = []
        if result.target_size_bytes is not None and result.max_drop is not None:
            shapes.append(dict(type="rect", x0=0, x1=result.target_size_bytes / 1000, y0=base - 100 * result.max_drop, y1=base + 1.5,
                               fillcolor="#2f9e44", opacity=0.12, line_width=0, layer="below"))
        xmax = 1.1 * max([r.size_bytes for r in uniform.values()] + [c.size_bytes for c in cands]) / 1000
        self.figure.update_layout(
            height=380, margin=dict(l=60, r=20, t=30, b=90), font=FONT, title=dict(text="green: within the budget", font=dict(size=15)),
            xaxis=dict(title="size (KB)", range=[0, xmax]), yaxis=dict(title=f"{session.metric_name} (%)", range=[base - span_points, base + 1.5]),
            legend=dict(orientation="h", y=-0.25), shapes=shapes,
        )
        sync_initial_state(self.figure)
        self.readout = W.HTML(self._comparison(None))
        self.readout.add_class("workshop-readout")
        self.children = [self.figure, self.readout]
        self.add_class("workshop-front")

    def follow(self, picker: PlanPicker) -> None:
        """Show the picker's plan as a star, now and whenever it changes."""
        picker.observe(lambda _: self.show(picker.report), names="value")
        self.show(picker.report)

    def show(self, report: Report | None) -> None:
        star = self.figure.data[-1]
        if report is None or report.metric is None or is_float_plan(self.session, report.plan):
            star.x, star.y = [], []
            self.readout.value = self._comparison(None)
        else:
            star.x, star.y = [report.size_bytes / 1000], [100 * report.metric]
            self.readout.value = self._comparison(report)
        sync_initial_state(self.figure)

    def _comparison(self, report: Report | None) -> str:
        best = self.result.best
        theirs = f"The search chose <b>{fmt_bytes(best.size_bytes)}</b> at <b>{100 * best.delta:+.1f} pts</b> ({html.escape(best.budget)})"
        if report is None or report.metric is None or report.delta is None:
            return theirs + ". Pick a plan in exercise 4 to see yours here as a star."
        ratio = report.size_bytes / best.size_bytes
        return theirs + f"; your plan is <b>{fmt_bytes(report.size_bytes)}</b> at <b>{100 * report.delta:+.1f} pts</b>: {ratio:.2f}× the search's size."

    def set_projector(self, on: bool) -> None:
        set_font_size((self.figure,), 20 if on else 15)

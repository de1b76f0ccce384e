"""Figures as pure functions: data in, numbers or Plotly figures out.

Two ``FigureWidget``s are built once per Studio (each ships plotly.js to the page) and
updated in place with ``updating``; everything else is HTML.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch

from ..engine import CompressedWeight
from .kernel_thread import KernelThread
from .state import HistoryPoint, pareto_indices

MAX_LEVEL_BARS = 300


def sync_initial_state(fig: go.FigureWidget) -> None:
    """Keep the state a new view starts from current.

    A FigureWidget refreshes ``_widget_data``/``_widget_layout`` only when displayed on
    its own (``_repr_mimebundle_``); inside a VBox, updates made before the page loads
    would be lost. The front end ignores later changes of these traits (its do_data is
    a no-op), so live views are not drawn twice."""
    with _lock(fig):
        fig._widget_layout = deepcopy(fig._layout_obj._props)
        fig._widget_data = deepcopy(fig._data)


def _lock(fig: go.FigureWidget) -> threading.RLock:
    """The figure's lock: made with the figure (``keep_views_current``), else on first use."""
    lock = getattr(fig, "_studio_lock", None)
    if lock is None:
        lock = fig._studio_lock = threading.RLock()
    return lock


@contextmanager
def updating(fig: go.FigureWidget) -> Iterator[None]:
    """One batch of edits to a figure, from any thread.

    Plotly's batch mode is a flag on the figure, not on a thread: a second thread that edits
    while a first is in a batch joins that batch, and what it edits after the first sent it
    is never sent. The figure's lock is held while a batch is built and sent. (In a kernel
    the Studio's figures are updated on the kernel's thread: see ``kernel_thread``.)"""
    with _lock(fig), fig.batch_update():
        yield


def keep_views_current(fig: go.FigureWidget) -> go.FigureWidget:
    """Send a figure's data again to a view that drew an old state.

    A view clones the figure's state when it starts drawing, and an update that arrives
    while Plotly draws it (plotly.js takes seconds to load on a new page) is lost: the view
    shows the old data until the next update, which for the histogram may never come. When
    it has drawn, a view reports the edit it drew (``_js2py_traceDeltas``); a view behind the
    figure's last edit gets every trace's data and the layout parts that updates change
    (titles, shapes), at most twice a second: a report within half a second of the last
    resend is answered when that half second is over. Sizes are left alone: the view fits
    its panel.
    """
    _lock(fig)  # made here, on the thread that makes the figure, so no two threads make one each
    last = [0.0]
    due = [False]
    kernel = KernelThread()  # reports arrive on the kernel's thread; a resend later runs there too

    def resend() -> None:
        with _lock(fig):
            due[0] = False
            last[0] = time.monotonic()
            layout = fig.layout
            relayout = {"title.text": layout.title.text, "xaxis.title.text": layout.xaxis.title.text, "shapes": deepcopy(fig._layout_obj._props.get("shapes", []))}
            if "yaxis2" in fig._layout_obj._props:
                relayout["yaxis2.visible"] = layout.yaxis2.visible
            for i, trace in enumerate(fig.data):  # one trace at a time: a null value would reset an attribute
                # trace[k] also finds values that the view's reports moved from _props to _prop_defaults
                keys = (set(trace._props) | {"name", "x", "y"}) - {"type", "uid"}
                values = {k: trace[k] for k in sorted(keys)}
                restyle = {k: [v.to_plotly_json() if hasattr(v, "to_plotly_json") else deepcopy(v)] for k, v in values.items() if v is not None}
                fig._send_update_msg(restyle_data=restyle, relayout_data=relayout if i == 0 else {}, trace_indexes=[i])

    def check(change: dict[str, Any]) -> None:
        msg = change["new"]
        if not msg or msg.get("trace_edit_id", 0) >= fig._last_trace_edit_id:
            return
        with _lock(fig):
            if due[0]:  # a resend is due already
                return
            wait = 0.5 - (time.monotonic() - last[0])
            if wait <= 0:
                resend()
                return
            due[0] = True
        kernel.later(wait, resend)

    fig.observe(check, names="_js2py_traceDeltas")
    return fig


FONT = dict(size=15)


@dataclass(frozen=True)
class HistogramData:
    centers: np.ndarray
    width: float
    float_counts: np.ndarray  # weights that are kept
    pruned_counts: np.ndarray  # weights that pruning set to zero
    clipped_counts: np.ndarray  # kept weights outside their quantization range
    levels: np.ndarray  # the values the weights snap to (empty when too many to draw)
    level_counts: np.ndarray
    quant_counts: np.ndarray  # the compressed weights binned like the float ones
    threshold: float | None  # largest pruned magnitude (unstructured pruning)
    title: str


def histogram_data(result: CompressedWeight, layer: str, bins: int = 60) -> HistogramData:
    w = result.float_view
    keep = result.keep if result.keep is not None else torch.ones_like(w, dtype=torch.bool)
    lo, hi = float(w.min()), float(w.max())
    if lo == hi:
        lo, hi = lo - 1.0, hi + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    wn = w.numpy()
    kn = keep.numpy()
    float_counts = np.histogram(wn[kn], edges)[0]
    pruned_counts = np.histogram(wn[~kn], edges)[0]
    clipped = np.zeros_like(kn)
    if result.uniform is not None:
        u = result.uniform
        zp = u.zero_point.numpy().astype(np.float64)
        scale = u.scale.numpy().astype(np.float64)
        rows = w.shape[0] if scale.size > 1 else 1
        view = wn.reshape(rows, -1)
        low = ((u.qmin - zp) * scale)[:, None]
        high = ((u.qmax - zp) * scale)[:, None]
        half = (scale / 2)[:, None]
        clipped = ((view < low - half) | (view > high + half)).reshape(wn.shape) & kn
    clipped_counts = np.histogram(wn[clipped], edges)[0]
    levels, level_counts = np.array([]), np.array([])
    if result.spec.bits is None:  # left in float: nothing snaps anywhere
        quant_counts = np.zeros(bins, dtype=np.int64)
    else:
        deq = result.dequant_view.numpy()
        quant_counts = np.histogram(deq, edges)[0]
        unique, counts = np.unique(deq[kn], return_counts=True)
        if len(unique) <= MAX_LEVEL_BARS:  # else too many to draw
            levels, level_counts = unique, counts
    threshold = result.prune_threshold if result.spec.prune_method == "unstructured" else None
    sqnr = "exact" if result.sqnr_db is None else f"SQNR {result.sqnr_db:.1f} dB"
    title = f"{layer}: {result.spec.label()} · {sqnr}"
    if result.sparsity > 0:
        title += f" · {result.sparsity:.0%} zero"
    if clipped.any():
        title += f" · {int(clipped.sum())} clipped"
    return HistogramData(
        centers=(edges[:-1] + edges[1:]) / 2,
        width=float(edges[1] - edges[0]),
        float_counts=float_counts,
        pruned_counts=pruned_counts,
        clipped_counts=clipped_counts,
        levels=levels,
        level_counts=level_counts,
        quant_counts=quant_counts,
        threshold=threshold,
        title=title,
    )


def histogram_figure() -> go.FigureWidget:
    fig = go.FigureWidget(
        data=[
            go.Bar(name="float weights", marker_color="#9aa5b1"),
            go.Bar(name="pruned to 0", marker_color="#f0c987"),
            go.Bar(name="clipped", marker_color="#d64545"),
            go.Bar(name="quantized levels", marker_color="#1f6fd1", yaxis="y2", opacity=0.85),
        ]
    )
    fig.update_layout(
        barmode="overlay",
        height=360,
        margin=dict(l=55, r=55, t=40, b=95),
        font=FONT,
        title=dict(text="", font=dict(size=15)),
        legend=dict(orientation="h", y=-0.3),
        yaxis=dict(title="float count"),
        yaxis2=dict(title="level count", overlaying="y", side="right", showgrid=False),
        xaxis=dict(title="weight value"),
        bargap=0,
    )
    return keep_views_current(fig)


def update_histogram(fig: go.FigureWidget, data: HistogramData) -> None:
    level_width = data.width / 4 if len(data.levels) else data.width
    with updating(fig):
        for trace, counts in zip(fig.data[:3], (data.float_counts, data.pruned_counts, data.clipped_counts)):
            trace.x = data.centers
            trace.y = counts
            trace.width = data.width
        levels = fig.data[3]
        if len(data.levels):
            levels.x, levels.y, levels.name = data.levels, data.level_counts, "quantized levels"
        else:
            levels.x, levels.y, levels.name = data.centers, data.quant_counts, "quantized values"
        levels.width = level_width
        fig.layout.yaxis2.visible = bool(len(data.levels)) or bool(data.quant_counts.any())
        fig.layout.title.text = data.title
        fig.layout.shapes = (
            []
            if data.threshold is None
            else [
                dict(
                    type="rect", xref="x", yref="paper", x0=-data.threshold, x1=data.threshold, y0=0, y1=1,
                    fillcolor="#f0c987", opacity=0.25, line_width=0, layer="below",
                )
            ]
        )
    sync_initial_state(fig)


def set_font_size(figures: tuple[go.FigureWidget, ...], size: int) -> None:
    """Projector mode: larger text in the figures too."""
    for fig in figures:
        with updating(fig):
            fig.layout.font.size = size
            fig.layout.title.font.size = size
        sync_initial_state(fig)


HISTORY_KINDS = {  # trace name, marker, for each kind of history point
    "measured": ("evaluated plans", dict(size=11, color="#9aa5b1")),
    "search": ("search candidates", dict(size=11, color="#7048e8", symbol="diamond")),
    "recovered": ("after recovery", dict(size=13, color="#2f9e44", symbol="triangle-up")),
}


def history_figure() -> go.FigureWidget:
    """Size (or latency) against metric: one trace per kind of point, the Pareto front, the current plan."""
    traces = [go.Scatter(name=name, mode="markers", marker=marker) for name, marker in HISTORY_KINDS.values()]
    traces += [
        go.Scatter(name="Pareto front", mode="lines+markers", line=dict(color="#1f6fd1", width=2), marker=dict(size=12, color="#1f6fd1")),
        go.Scatter(name="current plan", mode="markers", marker=dict(size=20, symbol="star", color="#e8590c")),
    ]
    fig = go.FigureWidget(data=traces)
    fig.update_layout(
        height=340,
        margin=dict(l=60, r=20, t=20, b=90),
        font=FONT,
        xaxis=dict(title="size (KB)"),
        yaxis=dict(title="metric (%)"),
        legend=dict(orientation="h", y=-0.3),
        clickmode="event",
    )
    return keep_views_current(fig)


def update_history(fig: go.FigureWidget, points: list[HistoryPoint], current: int | None, axis: str = "size") -> None:
    """Metric against size (KB) or latency (ms per batch; only points whose latency was
    measured). Every trace's points carry their history index as customdata (a click restores it)."""
    if axis == "latency":
        shown = [i for i, p in enumerate(points) if p.latency_ms is not None]
        xs = {i: float(points[i].latency_ms or 0.0) for i in shown}
        unit, title = "ms", "latency (ms per batch)"
    else:
        shown = list(range(len(points)))
        xs = {i: p.size_bytes / 1000 for i, p in enumerate(points)}
        unit, title = "KB", "size (KB)"
    ys = {i: 100 * points[i].metric for i in shown}
    labels = {i: points[i].label for i in shown}
    front = [shown[j] for j in pareto_indices([xs[i] for i in shown], [ys[i] for i in shown])]
    groups = [[i for i in shown if points[i].kind == kind] for kind in HISTORY_KINDS] + [front]
    with updating(fig):
        for trace, indices in zip(fig.data, groups):
            trace.x = [xs[i] for i in indices]
            trace.y = [ys[i] for i in indices]
            trace.text = [labels[i] for i in indices]
            trace.customdata = indices
            trace.hovertemplate = "%{text}<br>%{x:.2f} " + unit + ", %{y:.2f}%<extra>click to restore</extra>"
        star = fig.data[len(groups)]
        star.x, star.y = ([xs[current]], [ys[current]]) if current in xs else ([], [])
        fig.layout.xaxis.title.text = title
    sync_initial_state(fig)


def training_figure() -> go.FigureWidget:
    """Recovery's live curve: train loss and the engine's metric per epoch. Built when the
    first recovery starts, not with the page (each FigureWidget ships plotly.js)."""
    fig = go.FigureWidget(
        data=[
            go.Scatter(name="train loss", mode="lines+markers", line=dict(color="#868e96")),
            go.Scatter(name="metric (measured by the engine)", mode="lines+markers", yaxis="y2", line=dict(color="#2f9e44")),
        ]
    )
    fig.update_layout(
        height=260, margin=dict(l=55, r=55, t=10, b=70), font=FONT, xaxis=dict(title="epoch", dtick=1),
        yaxis=dict(title="loss"), yaxis2=dict(title="metric (%)", overlaying="y", side="right", showgrid=False),
        legend=dict(orientation="h", y=-0.35),
    )
    return keep_views_current(fig)


def update_training(fig: go.FigureWidget, epochs: list[Any], before: float | None) -> None:
    """Per-epoch loss and measured metric; epoch 0 is the plan before recovery."""
    xs = [e.epoch for e in epochs]
    with updating(fig):
        fig.data[0].x, fig.data[0].y = xs, [e.train_loss for e in epochs]
        fig.data[1].x = ([0] if before is not None else []) + xs
        fig.data[1].y = ([100 * before] if before is not None else []) + [100 * e.metric for e in epochs]
    sync_initial_state(fig)

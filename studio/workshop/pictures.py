"""Small pictures as pure functions: engine results in, HTML or SVG text out.

They cost the page nothing to draw (no plotly.js), scale with the projector toggle
(SVG with a viewBox), and are easy to test: the numbers in them are the engine's.
"""

from __future__ import annotations

import numpy as np
import torch

from ..engine import CompressedWeight

GREY, BLUE, AMBER, RED, GREEN = "#9aa5b1", "#1f6fd1", "#f0a020", "#d64545", "#1e7b34"
MAX_DOTS = 400  # weights drawn on a number line


def row_levels(result: CompressedWeight, row: int) -> np.ndarray:
    """The values a row's weights can take: its grid, its codebook, or nothing for float."""
    if result.uniform is not None:
        u = result.uniform
        i = row if u.scale.numel() > 1 else 0
        q = np.arange(u.qmin, u.qmax + 1)
        return (q - int(u.zero_point[i])) * float(u.scale[i])
    if result.codebook is not None:
        return np.sort(result.codebook.numpy().astype(np.float64))
    return np.array([])


def clipped_mask(result: CompressedWeight, row: int) -> np.ndarray:
    """Which of a row's kept weights lie more than half a step outside its grid."""
    w = result.float_view[row].numpy().astype(np.float64)
    keep = np.ones_like(w, dtype=bool) if result.keep is None else result.keep[row].numpy()
    levels = row_levels(result, row)
    if result.uniform is None or len(levels) < 2:
        return np.zeros_like(keep)
    half = (levels[1] - levels[0]) / 2
    return ((w < levels[0] - half) | (w > levels[-1] + half)) & keep


def number_line_svg(result: CompressedWeight, row: int = 0, width: int = 760) -> str:
    """One output channel on a number line: its float weights (dots), the grid it snaps
    to (blue ticks), where each weight lands (a line down to its level), pruned weights
    (amber) and clipped ones (red)."""
    w = result.float_view[row].numpy().astype(np.float64)
    deq = result.dequant_view[row].numpy().astype(np.float64)
    keep = np.ones_like(w, dtype=bool) if result.keep is None else result.keep[row].numpy()
    levels = row_levels(result, row)
    clipped = clipped_mask(result, row)
    lo = min(w.min(), levels.min() if len(levels) else w.min(), 0.0)
    hi = max(w.max(), levels.max() if len(levels) else w.max(), 0.0)
    pad = (hi - lo) * 0.04 or 1.0
    lo, hi = lo - pad, hi + pad
    left, right, height = 20, width - 20, 130

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * (right - left)

    parts = [f"<line x1='{left}' y1='80' x2='{right}' y2='80' stroke='#52606d' stroke-width='1'/>"]
    parts.append(f"<line x1='{x(0):.1f}' y1='74' x2='{x(0):.1f}' y2='86' stroke='#52606d' stroke-width='2'/>")
    parts.append(f"<text x='{x(0):.1f}' y='100' font-size='12' text-anchor='middle' fill='#52606d'>0</text>")
    for v in levels:
        parts.append(f"<line x1='{x(v):.1f}' y1='70' x2='{x(v):.1f}' y2='90' stroke='{BLUE}' stroke-width='2'/>")
    order = np.arange(len(w))[:MAX_DOTS]
    rng = np.random.default_rng(0)  # a fixed vertical jitter, so a redraw does not jump
    ys = 22 + rng.random(len(order)) * 28
    for i, y in zip(order, ys):
        color = AMBER if not keep[i] else RED if clipped[i] else GREY
        if len(levels) and (keep[i] or result.spec.bits is not None):
            parts.append(f"<line x1='{x(w[i]):.1f}' y1='{y:.1f}' x2='{x(deq[i]):.1f}' y2='70' stroke='{color}' stroke-width='1' opacity='0.55'/>")
        parts.append(f"<circle cx='{x(w[i]):.1f}' cy='{y:.1f}' r='4' fill='{color}' opacity='0.85'/>")
    for v in (lo + pad, hi - pad):
        parts.append(f"<text x='{x(v):.1f}' y='118' font-size='12' text-anchor='middle' fill='#52606d'>{v:+.3f}</text>")
    shown = f"{len(order)} of {len(w)} weights" if len(order) < len(w) else f"{len(w)} weights"
    legend = (
        f"<div class='workshop-dim'>Output channel {row}: {shown} (dots; "
        f"<span style='color:{AMBER}'>amber</span> = pruned, <span style='color:{RED}'>red</span> = clipped) "
        f"and the <span style='color:{BLUE}'>{len(levels)} levels</span> they snap to.</div>"
    )
    svg = (
        f"<svg class='workshop-number-line' viewBox='0 0 {width} {height}' width='100%' style='max-width:{width * 1.6:.0f}px' "
        f"role='img' aria-label='number line'>{''.join(parts)}</svg>"
    )
    return svg + legend


def codes_table_html(result: CompressedWeight, row: int = 0, count: int = 9) -> str:
    """The first ``count`` weights of a row: float value, integer code, value rebuilt, error."""
    w = result.float_view[row].numpy()
    deq = result.dequant_view[row].numpy()
    codes = result.codes[row].numpy() if result.codes is not None else None
    rows = []
    for i in range(min(count, len(w))):
        code = "—" if codes is None else str(int(codes[i]))
        rows.append(f"<tr><td>w[{i}]</td><td>{w[i]:+.4f}</td><td>{code}</td><td>{deq[i]:+.4f}</td><td>{deq[i] - w[i]:+.4f}</td></tr>")
    scale = ""
    if result.uniform is not None:
        u = result.uniform
        i = row if u.scale.numel() > 1 else 0
        scale = f"<div class='workshop-dim'>scale = {float(u.scale[i]):.5f}, zero-point = {int(u.zero_point[i])}, codes {u.qmin}…{u.qmax}</div>"
    return (
        "<table class='workshop-table'><tr><th>weight</th><th>float</th><th>code</th><th>rebuilt</th><th>error</th></tr>"
        + "".join(rows) + "</table>" + scale
    )


def mask_svg(
    keep: torch.Tensor | None, shape: tuple[int, int], max_rows: int = 16, max_cols: int = 48, cell: int = 12, caption: bool = True
) -> str:
    """The top-left corner of a layer's keep-mask: blue = kept, pale = pruned.
    Rows are output channels, columns the weights feeding each one."""
    rows, cols = min(shape[0], max_rows), min(shape[1], max_cols)
    mask = np.ones((rows, cols), dtype=bool) if keep is None else keep[:rows, :cols].numpy()
    cells = []
    for r in range(rows):
        for c in range(cols):
            color = BLUE if mask[r, c] else "#e9ecef"
            cells.append(f"<rect x='{c * cell}' y='{r * cell}' width='{cell - 1}' height='{cell - 1}' fill='{color}'/>")
    w, h = cols * cell, rows * cell
    note = f"<div class='workshop-dim'>first {rows} of {shape[0]} output channels × first {cols} of {shape[1]} weights each: blue = kept, pale = pruned to zero</div>"
    return (
        f"<svg class='workshop-mask' viewBox='0 0 {w} {h}' width='{w}' style='max-width:100%' role='img' aria-label='pruning mask'>"
        + "".join(cells) + "</svg>" + (note if caption else "")
    )

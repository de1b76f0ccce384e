"""Keep the Plotly figures as wide as their panels.

Plotly's FigureWidget sizes itself once, when first drawn: since plotly 6 moved to anywidget it no longer
hears the container's resize messages (plotly/plotly.py#5208), so a figure drawn at 1280 px stays that
wide after the window grows, the columns wrap, or projector mode enlarges the page. This invisible
widget watches every Plotly graph on the page with a ResizeObserver and asks Plotly to re-fit it.
"""

from __future__ import annotations

import anywidget

_ESM = """
function render({ el }) {
  el.style.display = "none";
  // the width each graph was last drawn at; a ResizeObserver reports every element once as soon
  // as it is observed, while its view may still be drawing it: only a later change re-fits it
  const widths = new WeakMap();
  const refit = new ResizeObserver((entries) => {
    for (const entry of entries) {
      const gd = entry.target, width = Math.round(entry.contentRect.width);
      const last = widths.get(gd);
      widths.set(gd, width);
      if (last === undefined || last === width || width === 0) continue;
      if (window.Plotly && gd._fullLayout) window.Plotly.Plots.resize(gd);
    }
  });
  const scan = () => document.querySelectorAll(".js-plotly-plot").forEach((gd) => {
    if (!widths.has(gd)) { widths.set(gd, undefined); refit.observe(gd); }
  });
  const added = new MutationObserver(scan);
  added.observe(document.body, { childList: true, subtree: true });
  scan();
  return () => { added.disconnect(); refit.disconnect(); };
}
export default { render };
"""


class FigureResizer(anywidget.AnyWidget):
    """Display it once beside the figures; it has no state and shows nothing."""

    _esm = _ESM

"""The workshop pages' look: readable text, exercise boxes, and a "Projector size" toggle.

CSS is put on the page by an HTML widget (as the Studio does); the projector toggle
swaps in a second style sheet that enlarges the Markdown text and the widgets.
No web fonts and no icons: everything is labelled with text, and works offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ipywidgets as W

from ..ui.style import CSS as STUDIO_CSS
from .index import list_notebooks, nav_html

CSS = """<style>
.jp-RenderedMarkdown { font-size: 16px; line-height: 1.5; max-width: 68em; }
.jp-RenderedMarkdown code { font-size: 0.95em; }
.workshop-nav { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; font-size: 14px; margin: 2px 0 6px 0; }
.workshop-nav-label { font-weight: 600; color: #52606d; margin-right: 4px; }
.workshop-nav-item { padding: 2px 10px; border: 1px solid #dde1e6; border-radius: 12px; text-decoration: none; color: #1f6fd1; }
.workshop-nav-current { background: #1f6fd1; color: #fff; border-color: #1f6fd1; }
.workshop-nav-minutes { opacity: 0.75; font-size: 0.9em; }
.workshop-exercise { border-left: 5px solid #7048e8; background: #f8f7ff; padding: 6px 12px; margin: 8px 0; border-radius: 4px; }
.workshop-question { font-size: 16px; font-weight: 600; margin-bottom: 4px; }
.workshop-verdict { font-size: 16px; padding: 4px 8px; border-radius: 4px; margin-top: 4px; }
.workshop-verdict[data-ok='true'] { color: #1e7b34; background: #ebfbee; }
.workshop-verdict[data-ok='false'] { color: #8a4b00; background: #fff4e6; }
.workshop-lab { border: 1px solid #dde1e6; border-radius: 6px; padding: 6px 12px; margin: 6px 0; background: #fff; }
.workshop-readout { font-size: 15px; margin: 4px 0 4px 8px; }
.workshop-dim { color: #616e7c; font-size: 0.9em; }
.workshop-table { border-collapse: collapse; font-size: 14px; margin: 4px 0; }
.workshop-table td, .workshop-table th { border: 1px solid #dde1e6; padding: 2px 8px; text-align: right; }
.workshop-table th { background: #f1f3f5; }
.workshop-table td:first-child, .workshop-table th:first-child, .workshop-table .workshop-text { text-align: left; }
.workshop-good { color: #1e7b34; }
.workshop-bad { color: #b42318; }
.workshop-lab .widget-label, .workshop-exercise .widget-label { min-width: 0; }
</style>"""

PROJECTOR_CSS = """<style>
.jp-RenderedMarkdown { font-size: 24px !important; }
.jp-RenderedMarkdown h1 { font-size: 1.6em !important; }
.jp-RenderedMarkdown h2 { font-size: 1.3em !important; }
.workshop-question, .workshop-verdict, .workshop-readout { font-size: 22px; }
.workshop-table { font-size: 20px; }
.workshop-nav { font-size: 18px; }
.workshop-exercise .widget-label, .workshop-exercise .widget-readout, .workshop-exercise button, .workshop-exercise select,
.workshop-lab .widget-label, .workshop-lab .widget-readout, .workshop-lab button, .workshop-lab select, .workshop-lab input,
.workshop-exercise input, .workshop-lab .widget-html-content { font-size: 20px; }
.workshop-exercise button, .workshop-lab button { height: auto; padding: 4px 12px; }
.workshop-costs, .studio-info, .studio-size, .studio-metric { font-size: 20px; }
.workshop-dim, .studio-dim { font-size: 17px; }
svg.workshop-mask { zoom: 1.4; }
</style>"""


class Header(W.VBox):
    """The top of every workshop notebook: the style sheet, links to every notebook in
    the folder, and the "Projector size" toggle (``header.projector``).

    ``header.follow(lab)`` makes a lab's Plotly figure follow the toggle too (figures
    draw their own text, which the style sheet cannot reach)."""

    def __init__(self, current: str, folder: str | Path = ".") -> None:
        super().__init__()
        self.nav = W.HTML(nav_html(list_notebooks(folder), current))
        self.projector = W.ToggleButton(value=False, description="Projector size", tooltip="larger text for a projector")
        self.projector.add_class("workshop-projector")
        self._projector_css = W.HTML("")
        self._followers: list[Any] = []
        self.projector.observe(self._toggled, names="value")
        self.children = [W.HTML(STUDIO_CSS + CSS), self._projector_css, W.HBox([self.nav, self.projector], layout=W.Layout(justify_content="space-between", align_items="center", flex_flow="row wrap"))]
        self.add_class("workshop-header")

    def follow(self, *labs: Any) -> None:
        """Labs (anything with ``set_projector(on)``) that follow the projector toggle."""
        for lab in labs:
            if not callable(getattr(lab, "set_projector", None)):
                raise ValueError(f"{type(lab).__name__} has no set_projector(on) method; pass a workshop lab")
            self._followers.append(lab)
            lab.set_projector(self.projector.value)

    def _toggled(self, change: dict[str, Any]) -> None:
        self._projector_css.value = PROJECTOR_CSS if change["new"] else ""
        for lab in self._followers:
            lab.set_projector(change["new"])

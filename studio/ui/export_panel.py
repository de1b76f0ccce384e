"""The Export panel: download the plan and the compressed model through links that work in Voilà."""

from __future__ import annotations

import base64
import html
import secrets
from pathlib import Path

import ipywidgets as W

from ..engine.export import EXPORTERS, atomic_write, export_bytes
from .state import StudioState

DATA_URI_LIMIT = 2 * 1024 * 1024
DOWNLOADS = Path("downloads")
MIME = {".json": "application/json", ".safetensors": "application/octet-stream"}


def download_link(data: bytes, filename: str, label: str) -> str:
    """An <a download> link: a data URI for small files, else a file Voilà serves."""
    suffix = Path(filename).suffix
    if len(data) <= DATA_URI_LIMIT:
        href = f"data:{MIME.get(suffix, 'application/octet-stream')};base64,{base64.b64encode(data).decode()}"
    else:
        token = secrets.token_hex(16)
        atomic_write(DOWNLOADS / token / filename, data)
        href = f"voila/files/{DOWNLOADS.name}/{token}/{filename}"
    return (
        f"<a class='studio-download' download='{html.escape(filename)}' href='{href}'>⬇ {html.escape(label)}</a> "
        f"<span class='studio-dim'>({len(data):,} bytes)</span>"
    )


class ExportPanel:
    HINT = "Download the current plan as JSON, or the model in a format the engine writes. Exporting never changes the plan."

    def __init__(self, state: StudioState) -> None:
        self.state = state
        self.format = W.Dropdown(options=sorted(EXPORTERS), value="plan", description="format")
        self.button = W.Button(description="Export", button_style="success")
        self.button.add_class("studio-export")
        self.button.on_click(lambda _: self.export())
        self.links = W.HTML()
        self.links.add_class("studio-links")
        self.widget = W.VBox(
            [W.HTML(f"<h3>Export</h3><div class='studio-hint'>{self.HINT}</div>"), W.HBox([self.format, self.button]), self.links]
        )
        self.widget.add_class("studio-panel")

    def export(self) -> None:
        session, plan = self.state.session, self.state.plan
        if session is None:
            return
        try:
            data, suffix = export_bytes(session, plan, self.format.value)
        except (ValueError, OSError) as exc:
            self.links.value = f"<div class='studio-error'>⚠ export failed: {html.escape(str(exc))}</div>"
            return
        stem = (self.state.source or "model").rsplit(".", 1)[0]
        filename = "plan.json" if self.format.value == "plan" else f"{stem}-compressed{suffix}"
        self.links.value = download_link(data, filename, f"{self.format.value}: {filename}")

"""The Export panel: download the plan or the compressed model through links that work in
Voilà, then see the exported file verified in its own runtime beside the studio's figures."""

from __future__ import annotations

import base64
import html
import secrets
import tempfile
from pathlib import Path

import ipywidgets as W

from ..engine import StudioError, Verification
from ..engine.formats import FORMATS, atomic_write, export_bytes
from ..engine.formats.onnx import onnx_layer_runtime
from .html import fmt_bytes, fmt_metric
from .state import StudioState

DATA_URI_LIMIT = 2 * 1024 * 1024
DOWNLOADS = Path("downloads")
MIME = {".json": "application/json"}


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


def verification_html(v: Verification) -> str:
    gap = 100 * v.metric_gap
    ok = "studio-ok" if abs(gap) <= 0.3 else "studio-bad"
    size_ratio = v.file_bytes / max(v.estimated_bytes, 1)
    return (
        f"<table class='studio-verify'><tr><th></th><th>studio</th><th>exported ({html.escape(v.runtime)})</th></tr>"
        f"<tr><td>{html.escape(v.metric_name)}</td><td>{fmt_metric(v.studio_metric, v.metric_name)}</td>"
        f"<td class='{ok}' data-metric='{v.metric:.6f}'>{fmt_metric(v.metric, v.metric_name)} ({gap:+.2f} pts)</td></tr>"
        f"<tr><td>size</td><td>{fmt_bytes(v.estimated_bytes)}</td><td data-bytes='{v.file_bytes}'>{fmt_bytes(v.file_bytes)} ({size_ratio:.2f}× the estimate)</td></tr>"
        f"<tr><td>latency / eval pass</td><td>float {v.float_latency_ms:.1f} ms</td><td>{v.latency_ms:.1f} ms</td></tr></table>"
    )


def runtime_notes_html(state: StudioState) -> str:
    session, plan = state.session, state.plan
    if session is None:
        return ""
    notes = []
    for name in session.layer_names:
        rt = onnx_layer_runtime(plan.spec_for(name))
        if not rt.native or "dense" in rt.note:
            notes.append(f"<li><b>{html.escape(name)}</b>: {html.escape(rt.note)}</li>")
    if not notes:
        return "<div class='studio-dim'>ONNX Runtime runs every choice of this plan natively.</div>"
    return "<div class='studio-dim'>In ONNX Runtime:</div><ul class='studio-notes'>" + "".join(notes) + "</ul>"


class ExportPanel:
    HINT = "Download the plan or the compressed model; it is then run in its own runtime and compared with the studio. Exporting never changes the plan."

    def __init__(self, state: StudioState) -> None:
        self.state = state
        self.format = W.Dropdown(options=[(f.label, f.name) for f in FORMATS.values()], value="plan", description="format")
        self.format.add_class("studio-format")
        self.button = W.Button(description="Export", button_style="success")
        self.button.add_class("studio-export")
        self.button.on_click(lambda _: self.export())
        self.links = W.HTML()
        self.links.add_class("studio-links")
        self.verified = W.HTML()
        self.verified.add_class("studio-verified")
        self.notes = W.HTML()
        self.widget = W.VBox(
            [
                W.HTML(f"<h3>Export</h3><div class='studio-hint'>{self.HINT}</div>"),
                W.HBox([self.format, self.button]),
                self.links,
                self.verified,
                self.notes,
            ]
        )
        self.widget.add_class("studio-panel")
        self.format.observe(lambda _: self.show_notes(), names="value")
        state.observe(lambda _: self.forget(), names=["plan", "session"])

    def forget(self) -> None:
        """A new plan or model: the last file and its verification no longer describe it."""
        self.links.value = self.verified.value = ""

    def show_notes(self) -> None:
        if self.state.session is not None and self.format.value == "onnx":
            self.notes.value = runtime_notes_html(self.state)
        else:
            self.notes.value = ""

    def export(self) -> None:
        session, plan, fmt = self.state.session, self.state.plan, self.format.value
        if session is None:
            return
        self.verified.value = ""
        try:
            data, chosen = export_bytes(session.compile(plan), fmt)
        except (StudioError, OSError) as exc:
            self.links.value = f"<div class='studio-error'>⚠ export failed: {html.escape(str(exc))}</div>"
            return
        stem = (self.state.source or "model").rsplit(".", 1)[0]
        filename = f"{chosen.default_name}{chosen.suffix}" if chosen.run is None else f"{stem}-compressed{chosen.suffix}"
        self.links.value = download_link(data, filename, f"{fmt}: {filename}")
        if chosen.run is None:  # nothing to run (the plan)
            return
        with tempfile.TemporaryDirectory(prefix="studio-verify-") as tmp:
            path = Path(tmp) / filename
            path.write_bytes(data)
            try:
                self.verified.value = verification_html(session.verify(path))
            except (StudioError, OSError) as exc:
                self.verified.value = f"<div class='studio-error'>⚠ could not verify: {html.escape(str(exc))}</div>"

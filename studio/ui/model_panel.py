"""The Model panel: pick a sample or upload a model file (and eval data)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as W

from ..engine import Session, StudioError
from ..loading import load_data, load_model
from ..samples import list_samples, load_sample
from .html import model_info_html

MODEL_SUFFIXES = (".pt", ".pth", ".ts", ".safetensors")
DATA_SUFFIXES = (".pt", ".pth", ".npz")
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
CUSTOM = "(your model)"


def _upload_to_file(upload: dict[str, Any], allowed: tuple[str, ...], folder: Path, stem: str) -> Path:
    """Write one FileUpload entry to a file of our own naming; ValueError if unusable."""
    name = str(upload.get("name", ""))
    suffix = Path(name).suffix.lower()
    if suffix not in allowed:
        raise StudioError(f"'{name}' is not a supported file: use one of {', '.join(allowed)}")
    content = bytes(upload["content"])
    if len(content) > MAX_UPLOAD_BYTES:
        raise StudioError(f"'{name}' is {len(content) / 1e6:.0f} MB; the limit is {MAX_UPLOAD_BYTES / 1e6:.0f} MB")
    path = folder / f"{stem}{suffix}"
    path.write_bytes(content)
    return path


def session_from_uploads(model_upload: dict[str, Any], data_upload: dict[str, Any] | None) -> tuple[Session, str]:
    """Build a Session from uploaded files. A sample architecture's weights without data
    are scored on that sample's eval split."""
    with tempfile.TemporaryDirectory(prefix="studio-upload-") as tmp:
        folder = Path(tmp)
        model = load_model(_upload_to_file(model_upload, MODEL_SUFFIXES, folder, "model"))
        data = load_data(_upload_to_file(data_upload, DATA_SUFFIXES, folder, "data")) if data_upload else None
    if data is None:
        data = load_sample(list_samples()[0]).eval_data  # every sample shares the digits eval split
    return Session(model, data), str(model_upload.get("name", "uploaded model"))


class ModelPanel:
    HINT = "Pick a sample model, or upload your own (TorchScript, or safetensors weights of a sample architecture) with optional eval data (.pt or .npz)."

    def __init__(self, on_session: Callable[..., None], on_error: Callable[[str], None], custom: bool) -> None:
        self._on_session = on_session
        self._on_error = on_error
        options = ([CUSTOM] if custom else []) + list_samples()
        self.picker = W.Dropdown(options=options, value=options[0], description="model")
        self.picker.add_class("studio-picker")
        self.picker.observe(self._picked, names="value")
        self.model_upload = W.FileUpload(accept=",".join(MODEL_SUFFIXES), multiple=False, description="Model file")
        self.data_upload = W.FileUpload(accept=",".join(DATA_SUFFIXES), multiple=False, description="Eval data")
        self.load_button = W.Button(description="Load upload", button_style="primary")
        self.load_button.add_class("studio-load-upload")
        self.load_button.on_click(lambda _: self.load_upload())
        self.info = W.HTML()
        self.info.add_class("studio-model-info")
        self.message = W.HTML()
        self.message.add_class("studio-model-message")
        self.widget = W.VBox(
            [
                W.HTML(f"<h3>Model</h3><div class='studio-hint'>{self.HINT}</div>"),
                W.HBox([self.picker, self.model_upload, self.data_upload, self.load_button]),
                self.info,
                self.message,
            ]
        )
        self.widget.add_class("studio-panel")

    def _picked(self, change: dict[str, Any]) -> None:
        if change["new"] != CUSTOM:
            self.load_sample(change["new"])

    def load_sample(self, name: str) -> None:
        try:
            sample = load_sample(name)
            self._on_session(Session(sample.model, sample.eval_data), name, sample.train_data, name)
            self.message.value = ""
        except ValueError as exc:
            self.show_error(str(exc))

    def load_upload(self) -> None:
        models = self.model_upload.value
        if not models:
            self.show_error("choose a model file first (button 'Model file')")
            return
        data = self.data_upload.value[0] if self.data_upload.value else None
        try:
            session, name = session_from_uploads(models[0], data)
        except ValueError as exc:
            self.show_error(f"could not load the upload: {exc}")
        else:
            self._on_session(session, name)
            self.message.value = f"<div class='studio-ok'>Loaded {name}.</div>"
        finally:
            self.model_upload.value = ()
            self.data_upload.value = ()

    def show(self, session: Session, source: str) -> None:
        self.info.value = model_info_html(session, source)

    def show_error(self, text: str) -> None:
        import html

        self.message.value = f"<div class='studio-error'>⚠ {html.escape(text)}</div>"
        self._on_error(text)

"""Compression Studio: see how far a neural network can be compressed, live and per layer.

    import studio
    sample = studio.load_sample("digits-cnn")
    session = studio.Session(sample.model, sample.eval_data)
    report = session.evaluate(studio.Plan.uniform(bits=8))

The engine (``studio.engine``) is pure PyTorch and NumPy; the widgets (``studio.Studio``)
are imported only when asked for.
"""

from typing import Any

from .engine import Cancelled, LayerSpec, Plan, Report, Session, StudioError
from .loading import load_compressed, load_model
from .samples import list_samples, load_sample

__all__ = ["Cancelled", "LayerSpec", "Plan", "Report", "Session", "Studio", "StudioError", "list_samples", "load_compressed", "load_model", "load_sample"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "Studio":
        from .ui import Studio

        return Studio
    raise AttributeError(f"module 'studio' has no attribute {name!r}")

"""The Studio's widgets: thin views over one StudioState (ipywidgets + Plotly)."""

from .app import Studio
from .state import HistoryPoint, StudioState

__all__ = ["HistoryPoint", "Studio", "StudioState"]

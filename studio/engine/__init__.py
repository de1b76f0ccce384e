"""The compression engine: pure PyTorch and NumPy, no UI imports.

Inputs and outputs are plain frozen dataclasses (Plan, LayerSpec, Report, ...) with
``to_dict``/``from_dict``; long work takes ``progress``/``cancel`` callables.
"""

from .compiled import CompressedModel
from .compress import CompressedWeight, compress_view
from .encode import LayerSize
from .errors import StudioError
from .formats import FORMATS, Format, register_format
from .layers import LayerInfo, LayerKind, register_kind
from .metrics import Fidelity
from .plan import LayerSpec, Plan
from .progress import Cancelled
from .report import LayerReport, Report, Timing
from .session import Session
from .verify import Verification

__all__ = [
    "FORMATS",
    "Cancelled",
    "CompressedModel",
    "CompressedWeight",
    "Fidelity",
    "Format",
    "LayerInfo",
    "LayerKind",
    "LayerReport",
    "LayerSize",
    "LayerSpec",
    "Plan",
    "Report",
    "Session",
    "StudioError",
    "Timing",
    "Verification",
    "compress_view",
    "register_format",
    "register_kind",
]

"""The compression engine: pure PyTorch and NumPy, no UI imports.

Inputs and outputs are plain frozen dataclasses (Plan, LayerSpec, Report, ...) with
``to_dict``/``from_dict``; long work takes ``progress``/``cancel`` callables.
"""

from .compress import CompressedWeight, compress_view
from .encode import LayerSize
from .layers import LayerInfo, register_kind
from .metrics import Fidelity
from .plan import LayerSpec, Plan
from .progress import Cancelled
from .report import LayerReport, Report
from .session import Session
from .verify import Verification

__all__ = [
    "Cancelled",
    "CompressedWeight",
    "Fidelity",
    "LayerInfo",
    "LayerReport",
    "LayerSize",
    "LayerSpec",
    "Plan",
    "Report",
    "Session",
    "Verification",
    "compress_view",
    "register_kind",
]

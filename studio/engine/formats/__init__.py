"""Export formats, one module each, registered by name in ``FORMATS``.

- ``plan``:   the plan as JSON.
- ``studio``: the studio's own file; exactly ``report.size_bytes`` long.
- ``onnx``:   ONNX with QuantizeLinear/DequantizeLinear, run in ONNX Runtime.
- ``torch``:  a safetensors state dict of the dequantized weights for the original architecture.

Writers and runners take a ``CompressedModel`` (``Session.compile(plan)``); a new
format is a module that calls ``register_format``.
"""

from . import onnx, plan, studio, torch  # noqa: F401  (each registers itself)
from .base import FORMATS, Format, Measured, RunContext, atomic_write, export, export_bytes, format_for_path, register_format

__all__ = ["FORMATS", "Format", "Measured", "RunContext", "atomic_write", "export", "export_bytes", "format_for_path", "register_format"]

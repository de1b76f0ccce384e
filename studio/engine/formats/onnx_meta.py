"""What the studio's ONNX exports record in their metadata, and reading it back.

- ``studio.plan``: the plan (see verify.plan_metadata);
- ``studio.format``: "onnx" (standard QDQ) or "onnx-fast";
- ``studio.ort_session_config``: ONNX Runtime session config entries the file needs
  to run as fast and as exactly as measured (a JSON object; verify() applies them);
- ``studio.layers``: per layer, how the file stores and runs it (a JSON object);
- ``studio.notes``: what the export left out or changed, in words (a JSON list).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

FORMAT_KEY = "studio.format"
SESSION_CONFIG_KEY = "studio.ort_session_config"
LAYERS_KEY = "studio.layers"
NOTES_KEY = "studio.notes"

# ORT's Level-1 DoubleQDQPairsRemover replaces Q1 -> DQ1 -> Q2 -> DQ2 by one Q -> DQ on a
# new grid: other numbers than the two roundings the studio simulates.
EXACT_QDQ = {"session.disable_double_qdq_remover": "1"}
# With QDQ optimizations off, constant folding also folds DequantizeLinear of constant
# weights: weight-only QDQ then runs float kernels on pre-packed weights.
FOLD_DEQUANTIZE = {"session.disable_quant_qdq": "1"}


def set_metadata(model: Any, entries: Mapping[str, Any]) -> None:
    """Set metadata entries on a ModelProto (JSON-encoding anything that is not a string)."""
    from onnx import StringStringEntryProto

    for key, value in entries.items():
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        for prop in model.metadata_props:
            if prop.key == key:
                prop.value = text
                break
        else:
            model.metadata_props.append(StringStringEntryProto(key=key, value=text))


def read_metadata(data: bytes) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load_from_string(data).metadata_props}


def _json(meta: Mapping[str, str], key: str, kind: type, default: Any) -> Any:
    raw = meta.get(key)
    if not raw:
        return default
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise ValueError(f"the ONNX file's {key} metadata is not JSON") from None
    if not isinstance(value, kind):
        raise ValueError(f"the ONNX file's {key} metadata must be a JSON {kind.__name__}")
    return value


def session_config(data: bytes) -> dict[str, str]:
    """The ONNX Runtime session config entries the file asks for (none for most files)."""
    config = _json(read_metadata(data), SESSION_CONFIG_KEY, dict, {})
    return {str(k): str(v) for k, v in config.items()}


def export_notes(data: bytes) -> list[str]:
    """What the export left out or changed (for example layers missing from the traced graph)."""
    return [str(n) for n in _json(read_metadata(data), NOTES_KEY, list, [])]


def layer_notes(data: bytes) -> dict[str, str]:
    """Per layer, how the file stores and runs it (recorded by the onnx-fast export)."""
    return {str(k): str(v) for k, v in _json(read_metadata(data), LAYERS_KEY, dict, {}).items()}

"""Exports of a plan applied to a session, by format, through a registry.

Every export writes to a temporary file beside the target and renames it into
place, so a failed export never leaves a half-written file.

Formats:
- ``plan``:  the plan as JSON (reapply with ``Plan.from_json``).
- ``studio``: the studio's own compressed file (``studio.load_compressed`` reads it);
             its size is the report's ``size_bytes``.
- ``onnx``:  ONNX with QuantizeLinear/DequantizeLinear (see ``onnx_export``).
- ``torch``: a safetensors state dict of the dequantized weights with the original
             model's keys, loadable into the original architecture for fine-tuning.
             Weights of layers whose BatchNorm was folded are un-folded again
             (divided by the BatchNorm's per-channel factor), so that the original
             BatchNorm reproduces the studio's folded weights up to float rounding.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from .plan import Plan
from .registry import Registry

if TYPE_CHECKING:
    from .session import Session

Exporter = Callable[["Session", Plan], bytes]
EXPORTERS: Registry[Exporter] = Registry("export format")
SUFFIXES: dict[str, str] = {}


def register_exporter(name: str, suffix: str) -> Callable[[Exporter], Exporter]:
    SUFFIXES[name] = suffix
    return EXPORTERS.register(name)


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it; done once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: never a half-written file.

    The file gets the permissions a plain ``open(path, "wb")`` would give it (mkstemp's are 0600).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@register_exporter("plan", ".json")
def export_plan(session: "Session", plan: Plan) -> bytes:
    plan.check_names(session.layer_names)
    return plan.to_json().encode()


@register_exporter("torch", ".safetensors")
def export_torch(session: "Session", plan: Plan) -> bytes:
    from safetensors.torch import save

    from .verify import plan_metadata

    return save(session.dequantized_state_dict(plan), metadata=plan_metadata(plan))


@register_exporter("studio", ".studio")
def export_studio(session: "Session", plan: Plan) -> bytes:
    from .studio_format import write

    return write(session, plan)


@register_exporter("onnx", ".onnx")
def export_onnx_format(session: "Session", plan: Plan) -> bytes:
    from .onnx_export import export_onnx

    return export_onnx(session, plan)


def export_bytes(session: "Session", plan: Plan, format: str) -> tuple[bytes, str]:
    """The exported file's bytes and its usual suffix."""
    return EXPORTERS.get_or_raise(format)(session, plan), SUFFIXES[format]


def export(session: "Session", plan: Plan, path: str | Path, format: str = "plan") -> Path:
    """Write ``plan`` applied to ``session`` to ``path`` (a file, or a folder to put it in)."""
    data, suffix = export_bytes(session, plan, format)
    path = Path(path)
    if path.is_dir() or str(path).endswith(os.sep) or not path.suffix:
        path = path / f"model{suffix}" if format != "plan" else path / "plan.json"
    atomic_write(path, data)
    return path


def unfold_weight(weight: torch.Tensor, bn_state: dict[str, torch.Tensor], eps: float, original: torch.Tensor) -> torch.Tensor:
    """Undo a BatchNorm fold on a weight: divide each output channel by gamma/std."""
    gamma = bn_state.get("weight")
    factor = (gamma if gamma is not None else torch.ones_like(bn_state["running_var"])) / torch.sqrt(bn_state["running_var"] + eps)
    shape = [-1] + [1] * (weight.dim() - 1)
    safe = factor.abs() > 1e-12
    out = weight / torch.where(safe, factor, torch.ones_like(factor)).reshape(shape)
    return torch.where(safe.reshape(shape), out, original)

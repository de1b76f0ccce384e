"""The ``torch`` format: a safetensors state dict of the dequantized weights.

The keys are the original model's, and weights of layers whose BatchNorm was folded
are un-folded again (divided by the BatchNorm's per-channel factor), so the file loads
into the original architecture, for fine-tuning; the original BatchNorm then
reproduces the studio's folded weights up to float rounding. The plan is recorded in
the file's metadata.
"""

from __future__ import annotations

from safetensors import SafetensorError
from safetensors.torch import load, save

from ..bn import fold_state_dict
from ..compiled import CompressedModel
from ..errors import StudioError
from ..plan import Plan
from .base import Format, Measured, RunContext, measure_torch, plan_from_metadata, plan_metadata, register_format


def write(compiled: CompressedModel) -> bytes:
    return save(compiled.original_state_dict(), metadata=plan_metadata(compiled.plan))


def _metadata(data: bytes) -> dict[str, str]:
    import json

    try:
        length = int.from_bytes(data[:8], "little")
        head = json.loads(data[8 : 8 + length])
    except (ValueError, UnicodeDecodeError) as exc:
        raise StudioError(f"this is not a readable safetensors file ({exc})") from exc
    meta = head.get("__metadata__") if isinstance(head, dict) else None
    return dict(meta) if isinstance(meta, dict) else {}


def read_plan(data: bytes) -> Plan:
    return plan_from_metadata(_metadata(data), "safetensors")


def run(data: bytes, ctx: RunContext) -> Measured:
    """Load the weights into the folded model (BatchNorm folded as the studio does) and run it in PyTorch."""
    compiled = ctx.compile(read_plan(data))
    try:
        state = load(data)
    except SafetensorError as exc:
        raise StudioError(f"this safetensors file cannot be read ({exc})") from exc
    folded = fold_state_dict(state, list(compiled.folds), compiled.bn_eps)
    return measure_torch(compiled.model_from_state(folded, compiled.acts), ctx)


register_format(Format("torch", ".safetensors", "torch (safetensors)", write, read_plan, run))

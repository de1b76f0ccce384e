"""The ``plan`` format: the plan alone, as JSON. Reapply it with ``Plan.from_json``."""

from __future__ import annotations

from ..compiled import CompressedModel
from ..plan import Plan
from .base import Format, register_format


def write(compiled: CompressedModel) -> bytes:
    return compiled.plan.to_json().encode()


def read_plan(data: bytes) -> Plan:
    return Plan.from_json(data.decode("utf-8", errors="replace"))


register_format(Format("plan", ".json", "plan (JSON)", write, read_plan, default_name="plan"))

"""What an export format is, the registry of formats, and what they share.

A :class:`Format` has a name, a file suffix, a writer (``CompressedModel -> bytes``),
a reader of the plan it records, and, for files that run, a runner that measures the
file in its own runtime on the eval data. Adding a format is one module that calls
``register_format``; the CLI, the GUI and ``Session.verify`` find it in ``FORMATS``.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..compiled import CompressedModel
from ..data import Batch, call_model
from ..errors import StudioError
from ..plan import Plan
from ..registry import Registry

PLAN_KEY = "studio.plan"
REPEATS = 3  # timed passes after the one whose outputs are scored...
TIMING_BUDGET_S = 2.0  # ...fewer once they have taken this long (at least one runs): a big model's pass is steady


@dataclass(frozen=True)
class RunContext:
    """What a runner needs to measure a file on the eval data."""

    batches: list[Batch]
    pick: Callable[[Any], torch.Tensor]  # the tensor to score from a model output
    input_mode: str
    compile: Callable[[Plan], CompressedModel]  # the studio's own view of a plan


@dataclass(frozen=True)
class Measured:
    """A file run in its runtime: its outputs (one tensor per eval batch) and latencies."""

    runtime: str
    outputs: list[torch.Tensor]
    latency_ms: float  # one pass over the eval set, median of REPEATS (fewer for slow passes: see time_passes)
    float_latency_ms: float  # the float model in the same runtime


Writer = Callable[[CompressedModel], bytes]
PlanReader = Callable[[bytes], Plan]
Runner = Callable[[bytes, RunContext], Measured]


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    label: str  # what the GUI shows
    write: Writer
    read_plan: PlanReader
    run: Runner | None = None  # None: the file does not run (a plan)
    default_name: str = "model"  # the file name used when exporting into a folder
    sniff: Callable[[bytes], bool] | None = None  # tells this format's files from others with the same suffix


FORMATS: Registry[Format] = Registry("export format")


def register_format(fmt: Format) -> Format:
    FORMATS[fmt.name] = fmt
    return fmt


def format_for_path(path: Path, data: bytes | None = None) -> Format:
    """The format of an exported file: by its suffix, and by its content where formats share one."""
    suffix = path.suffix.lower()
    matches = [fmt for fmt in FORMATS.values() if fmt.suffix == suffix and fmt.run is not None]
    if len(matches) > 1 and data is not None:
        matches = [fmt for fmt in matches if fmt.sniff is None or fmt.sniff(data)] or matches
    if matches:
        return matches[0]
    runnable = sorted({f.suffix for f in FORMATS.values() if f.run is not None})
    raise StudioError(f"cannot verify {path.name}: use a file exported as one of {runnable}")


def plan_metadata(plan: Plan) -> dict[str, str]:
    return {PLAN_KEY: json.dumps(plan.to_dict(), separators=(",", ":"))}


def plan_from_metadata(meta: dict[str, str], what: str) -> Plan:
    if PLAN_KEY not in meta:
        raise StudioError(f"this {what} file was not exported by the studio (no {PLAN_KEY} metadata)")
    return Plan.from_json(meta[PLAN_KEY])


def time_passes(run: Callable[[], list[torch.Tensor]]) -> tuple[list[torch.Tensor], float]:
    """Outputs of one pass, and the median time in ms of REPEATS more, or of as many as fit in
    TIMING_BUDGET_S (at least one)."""
    outputs = run()
    times: list[float] = []
    while len(times) < REPEATS and (not times or sum(times) < TIMING_BUDGET_S * 1000):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return outputs, statistics.median(times)


def torch_runner(model: torch.nn.Module, ctx: RunContext) -> Callable[[], list[torch.Tensor]]:
    @torch.no_grad()
    def run() -> list[torch.Tensor]:
        return [ctx.pick(call_model(model, x, ctx.input_mode)) for x, _ in ctx.batches]

    return run


def measure_torch(model: torch.nn.Module, ctx: RunContext) -> Measured:
    """Run a PyTorch model on the eval data, beside the float model."""
    outputs, latency = time_passes(torch_runner(model, ctx))
    _, float_latency = time_passes(torch_runner(ctx.compile(Plan()).float_model(), ctx))
    return Measured("pytorch", outputs, latency, float_latency)


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


def export_bytes(compiled: CompressedModel, format: str) -> tuple[bytes, Format]:
    """The bytes of ``compiled`` written as ``format``, and the format."""
    fmt = FORMATS.get_or_raise(format)
    return fmt.write(compiled), fmt


def export(compiled: CompressedModel, path: str | Path, format: str) -> Path:
    """Write ``compiled`` as ``format`` to ``path`` (a file, or a folder to put it in)."""
    data, fmt = export_bytes(compiled, format)
    target = Path(path)
    if target.is_dir() or str(target).endswith(os.sep) or not target.suffix:
        target = target / f"{fmt.default_name}{fmt.suffix}"
    atomic_write(target, data)
    return target

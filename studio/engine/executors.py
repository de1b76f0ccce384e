"""Probes beyond one process: a ``concurrent.futures.Executor`` or a Ray cluster.

The layers are split into chunks, one per worker, balanced by how much of the model
lies downstream of each layer (what its probes re-run). Each worker builds its own
session from the model and the eval data once (a :class:`SessionRecipe`), then runs
its chunk from the last layer to the first, incrementally and stacked, like the local path.
The entries come back as plain dicts, so any executor that pickles will do.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import time
from collections.abc import Sequence
from typing import Any

import torch

from .errors import StudioError
from .plan import Plan
from .progress import CancelFn, Cancelled, ProgressFn, report
from .recipe import SessionRecipe
from .sensitivity import SensitivityEntry, Setting, measure_layers
from .stacked import STACK_BYTES

POLL_S = 0.05


def chunk_layers(layers: Sequence[str], order: Sequence[str], n: int) -> list[list[str]]:
    """Split ``layers`` into at most ``n`` chunks of about equal cost, a layer's cost being
    the share of the model's layers from it to the end (``order``: all layers in call order)."""
    n = max(1, min(int(n), len(layers)))
    total = len(order)
    cost = {name: (total - order.index(name)) / total for name in layers}
    chunks: list[list[str]] = [[] for _ in range(n)]
    loads = [0.0] * n
    for name in sorted(layers, key=lambda name: (-cost[name], order.index(name))):
        i = loads.index(min(loads))
        chunks[i].append(name)
        loads[i] += cost[name]
    return [sorted(c, key=order.index) for c in chunks if c]


def _measure_chunk(
    recipe: SessionRecipe, base: dict[str, Any], layers: list[str], settings: list[dict[str, Any]], threads: int, stack_bytes: int = STACK_BYTES
) -> dict[str, Any]:
    """A worker: build the session once, run its chunk incrementally."""
    if threads > 0:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    session = recipe.build()
    built = time.perf_counter() - start
    metric, size, entries, forward_s = measure_layers(
        session, Plan.from_dict(base), layers, [Setting.from_dict(s) for s in settings], stack_bytes=stack_bytes
    )
    return {
        "base_metric": metric, "base_size": size, "entries": [e.to_dict() for e in entries], "forward_s": forward_s,
        "build_s": built, "seconds": time.perf_counter() - start, "pid": os.getpid(),
    }


def _workers(executor: Any) -> int:
    if executor == "ray":
        import ray

        return max(1, int(ray.cluster_resources().get("CPU", 1)))  # type: ignore[no-untyped-call]
    return max(1, int(getattr(executor, "_max_workers", None) or os.cpu_count() or 1))


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise StudioError("executor='ray' needs Ray: pip install 'compression-studio[ray]' (or pass a concurrent.futures executor)") from exc
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    return ray


def measure_distributed(
    session: Any,
    base: Plan,
    layers: Sequence[str],
    settings: Sequence[Setting],
    executor: Any,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    stack_bytes: int = STACK_BYTES,
) -> tuple[float, int, list[SensitivityEntry], float]:
    """``measure_layers`` fanned out over ``executor`` (a concurrent.futures.Executor or "ray")."""
    if executor != "ray" and not isinstance(executor, cf.Executor):
        raise StudioError(f"executor must be None, 'local', 'ray' or a concurrent.futures.Executor; got {executor!r}")
    recipe = session.recipe()
    if isinstance(recipe.model, torch.jit.ScriptModule):
        raise StudioError("a TorchScript model cannot be sent to worker processes; run the probes here (executor=None)")
    ray = _ray() if executor == "ray" else None
    n = _workers(executor)
    chunks = chunk_layers(layers, session.layer_names, n)
    args = (base.to_dict(), [s.to_dict() for s in settings])
    total = len(layers) * len(settings) + 1
    done = 0
    report(progress, 0, total)
    results: list[dict[str, Any]] = []
    if ray is not None:
        remote = ray.remote(num_cpus=1)(_measure_chunk)
        shared = ray.put(recipe)
        refs = {remote.remote(shared, args[0], chunk, args[1], 1, stack_bytes): chunk for chunk in chunks}
        pending = list(refs)
        try:
            while pending:
                if cancel is not None and cancel():
                    raise Cancelled("cancelled")
                ready, pending = ray.wait(pending, num_returns=1, timeout=POLL_S)
                for ref in ready:
                    results.append(ray.get(ref))
                    done += len(refs[ref]) * len(settings)
                    report(progress, done, total)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    else:
        threads = max(1, (os.cpu_count() or 1) // len(chunks)) if isinstance(executor, cf.ProcessPoolExecutor) else 0
        futures = {executor.submit(_measure_chunk, recipe, args[0], chunk, args[1], threads, stack_bytes): chunk for chunk in chunks}
        waiting = set(futures)
        try:
            while waiting:
                if cancel is not None and cancel():
                    raise Cancelled("cancelled")
                finished, waiting = cf.wait(waiting, timeout=POLL_S, return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    results.append(future.result())
                    done += len(futures[future]) * len(settings)
                    report(progress, done, total)
        except BaseException:
            for future in waiting:
                future.cancel()
            raise
    report(progress, total, total)
    metrics = {r["base_metric"] for r in results}
    if len(metrics) > 1:
        raise StudioError(f"the workers measured different base metrics {sorted(metrics)}; the model is not deterministic across processes")
    entries = [SensitivityEntry.from_dict(e) for r in results for e in r["entries"]]
    return results[0]["base_metric"], results[0]["base_size"], entries, float(sum(r["forward_s"] for r in results))

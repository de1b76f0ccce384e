"""Compressing layers side by side: a few threads, each running PyTorch's ops on one thread.

Compressing a layer is a chain of short ops (the pruning threshold, k-means on a histogram,
the exact assignment, gap statistics, Huffman counts). PyTorch's intra-op threads gain little
on ops this short and spin between them. Measured on BERT-base's layer shapes (5-bit k-means,
30% pruned, Huffman), per weight on 2 cores:

- with 2 intra-op threads, one layer at a time: 45-58 ns of CPU time, 24-31 ns of wall time;
- with one thread per layer and two layers at a time: 34-40 ns of CPU time, 20-23.5 ns wall.

Every layer is compressed on one thread, also when it is the only one asked for. So a result
does not depend on how many threads the machine has: a reduction (a scale search's error, an
SQNR) sums in the same order everywhere, and a layer compressed again later gives the same
bytes.

OpenMP's thread count is a per-thread setting, so the workers' single thread leaves other
threads' passes as they were. PyTorch also keeps it as the default for threads that start
later; the caller's own count is put back as soon as the work is done.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import torch

from .progress import CancelFn, Cancelled

T = TypeVar("T")
MAX_WORKERS = 4  # beyond a few, layers compete for memory bandwidth and the GIL

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _forget_pool() -> None:
    """In a forked child: the parent's workers did not come along (a process pool's worker
    that compresses gets workers of its own)."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _workers() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            n = max(1, min(torch.get_num_threads(), MAX_WORKERS))
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="studio-compress")
        return _pool


def _on_one_thread(fn: Callable[[], T], cancel: CancelFn | None) -> T:
    if cancel is not None and cancel():
        raise Cancelled("cancelled")
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    return fn()


def side_by_side(tasks: Mapping[str, Callable[[], T]], cost: Mapping[str, int] | None = None, cancel: CancelFn | None = None) -> dict[str, T]:
    """Run ``tasks`` on the workers, each on one PyTorch thread, the costliest first (``cost``,
    e.g. weights); returns their results by name. Raises ``Cancelled`` once ``cancel()`` is
    true (tasks not yet started are skipped), and a task's own error as it is."""
    if not tasks:
        return {}
    threads = torch.get_num_threads()
    order = sorted(tasks, key=lambda name: -(cost or {}).get(name, 0))
    pool = _workers()
    futures: dict[str, Future[T]] = {name: pool.submit(_on_one_thread, tasks[name], cancel) for name in order}
    try:
        return {name: futures[name].result() for name in tasks}
    finally:
        for future in futures.values():
            future.cancel()
        for future in futures.values():
            if not future.cancelled():
                future.exception()  # wait: nothing runs on after the caller has moved on
        torch.set_num_threads(threads)  # the default for threads that start later, as it was


def on_one_thread(fn: Callable[[], T]) -> T:
    """``fn()`` run on a worker, on one PyTorch thread (see the module's docstring)."""
    return side_by_side({"": fn})[""]

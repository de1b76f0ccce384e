"""Giving freed memory back to the operating system, and measuring a pass's working memory.

PyTorch's CPU tensors come from ``malloc``. glibc keeps freed blocks below its mmap
threshold (which grows up to 32 MiB as large blocks are freed) in its heaps, so after a
plan's weights are compressed, or a file is decoded and run, the process keeps hundreds
of MB it no longer uses. ``malloc_trim(0)`` hands those pages back. Elsewhere (macOS,
musl, Windows) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
import threading
from collections.abc import Callable

_trim: Callable[[int], int] | None = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _trim = getattr(_libc, "malloc_trim", None)
    except OSError:  # pragma: no cover - a libc without malloc_trim
        _trim = None


def release_free_memory(collect: bool = False) -> bool:
    """Return freed heap memory to the OS (``collect``: run Python's garbage collector
    first). Returns whether anything could be asked of the allocator."""
    if collect:
        gc.collect()
    if _trim is None:
        return False
    _trim(0)
    return True


_PAGE = 4096
try:
    _PAGE = os.sysconf("SC_PAGE_SIZE")
except (AttributeError, ValueError, OSError):  # pragma: no cover - no sysconf
    pass
_STATM = "/proc/self/statm"


def resident_bytes() -> int | None:
    """The process's resident set size in bytes, or None where ``/proc`` cannot tell."""
    try:
        with open(_STATM, "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class PeakSampler:
    """Samples the resident set size in a thread while a pass runs, to measure the pass's
    working memory: the peak of ``RSS - accounted()`` above where it started.

    ``accounted`` says how many bytes the caller already counts elsewhere (e.g. outputs it
    keeps on purpose). ``peak`` is None where the RSS cannot be read (no ``/proc``): the
    caller then keeps its own estimate. Samples come every ``interval`` seconds and at exit,
    so a peak shorter than the interval can be missed: a lower bound, close for passes of
    large tensors, whose allocations outlive a sample.
    """

    def __init__(self, accounted: Callable[[], int], interval: float = 0.002) -> None:
        self.accounted = accounted
        self.interval = interval
        self.peak: int | None = None
        self._start = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        rss = resident_bytes()
        if rss is not None:
            self.peak = max(self.peak or 0, rss - self.accounted() - self._start)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> PeakSampler:
        start = resident_bytes()
        if start is not None:
            self._start = start - self.accounted()
            self.peak = 0
            self._thread = threading.Thread(target=self._loop, name="studio-rss-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._sample()

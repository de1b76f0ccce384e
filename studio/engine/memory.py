"""Giving freed memory back to the operating system.

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
import sys
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

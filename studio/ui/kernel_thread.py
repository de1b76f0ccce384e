"""Figure updates run on the kernel's thread, where the front end's messages are handled.

Plotly sends an edit to the page by setting a synced trait and clearing it at once
(``_py2js_update = msg`` then ``= None``). While the kernel's thread applies a message from
a view of the same figure (a click, a zoom, a view reporting what it drew), ipywidgets
holds the figure's trait notifications; an edit made meanwhile on another thread is then
announced only afterwards, when the trait is None again, and the page never gets it
(tests/ui/test_kernel_thread.py shows it). Evaluations, searches and training report on
threads of their own. Updates asked for on another thread are queued on the kernel's event
loop instead; scripts and tests, with no running loop, update at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable


class KernelThread:
    """Where the widgets were made: the running event loop of that thread, if any."""

    def __init__(self) -> None:
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # no kernel: a script or a test
            self._loop = None
        self._thread = threading.get_ident()
        self._due: set[Callable[[], None]] = set()
        self._lock = threading.Lock()

    def run(self, update: Callable[[], None]) -> None:
        """Call ``update`` now when on the kernel's thread (or with no loop), else soon on it.
        An update asked for again before it ran runs once: it reads the state when it runs."""
        loop = self._loop
        if loop is None or threading.get_ident() == self._thread:
            update()
            return
        with self._lock:
            if update in self._due:
                return
            self._due.add(update)

        def due() -> None:
            with self._lock:
                self._due.discard(update)
            update()

        try:
            loop.call_soon_threadsafe(due)
        except RuntimeError:  # the loop has closed: the kernel is going away
            with self._lock:
                self._due.discard(update)

    def later(self, seconds: float, update: Callable[[], None]) -> None:
        """Call ``update`` on the kernel's thread after ``seconds`` (on a timer thread with no loop)."""
        loop = self._loop
        if loop is None:
            timer = threading.Timer(seconds, update)
            timer.daemon = True
            timer.start()
            return
        try:
            loop.call_soon_threadsafe(loop.call_later, seconds, update)
        except RuntimeError:
            pass

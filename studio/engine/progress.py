"""Progress reporting and cancellation for long work, through plain callables.

``progress(done, total)`` is called as work advances; ``cancel()`` returning True
stops the work at the next check with :class:`Cancelled`. Neither knows about any UI.
"""

from __future__ import annotations

from collections.abc import Callable

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


class Cancelled(Exception):
    """Raised when a ``cancel`` callable asked the work to stop."""


def check(cancel: CancelFn | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled("cancelled")


def report(progress: ProgressFn | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)

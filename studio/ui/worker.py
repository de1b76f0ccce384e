"""Evaluation off the kernel's main thread, where the newest request always wins.

``submit(plan)`` returns at once. A worker thread evaluates the newest plan; a plan
submitted while another is running cancels it through the engine's ``cancel``
callable, so no stale result is ever delivered as current.
"""

from __future__ import annotations

import atexit
import dataclasses
import threading
import weakref
from collections.abc import Callable

from ..engine import Cancelled, Plan, Report, Session

_LIVE: weakref.WeakSet[Evaluator] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Stop every worker before the interpreter goes: a thread killed inside a torch
    forward pass at exit aborts the process."""
    for evaluator in list(_LIVE):
        evaluator.close()


class Evaluator:
    """Evaluates the newest submitted plan in a worker thread; an older one still running is cancelled.

    ``on_result(report)``, ``on_error(message)``, ``on_busy(bool)`` and
    ``on_progress(done, total)`` are called from the worker thread (``on_busy(True)``
    from the submitting thread).
    """

    def __init__(
        self,
        on_result: Callable[[Report], None],
        on_error: Callable[[str], None],
        on_busy: Callable[[bool], None],
        on_progress: Callable[[int, int], None] | None = None,
        latency_runtime: Callable[[], str | None] | None = None,
    ) -> None:
        self._latency_runtime = latency_runtime  # when it names a runtime, each report also gets its latency there
        self._on_result = on_result
        self._on_error = on_error
        self._on_busy = on_busy
        self._on_progress = on_progress
        self._cond = threading.Condition()
        self._job: tuple[int, Session, Plan] | None = None
        self._generation = 0
        self._running = False
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="studio-evaluator", daemon=True)
        self._thread.start()
        _LIVE.add(self)

    def close(self, timeout: float = 10.0) -> None:
        """Cancel any running evaluation and stop the worker thread."""
        with self._cond:
            self._closed = True
            self._generation += 1  # cancels the running evaluation at its next check
            self._job = None
            self._cond.notify_all()
        self._thread.join(timeout)

    def submit(self, session: Session, plan: Plan) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("this evaluator is closed")
            self._generation += 1
            self._job = (self._generation, session, plan)
            self._on_busy(True)  # inside the lock, so it can never land after the worker's False
            self._cond.notify_all()

    def wait(self, timeout: float = 60.0) -> bool:
        """Block until no evaluation is pending or running (for tests and scripts)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._job is None and not self._running, timeout)

    def _cancel_for(self, generation: int) -> Callable[[], bool]:
        return lambda: self._generation != generation

    def _progress_for(self, generation: int) -> Callable[[int, int], None] | None:
        on_progress = self._on_progress
        if on_progress is None:
            return None

        def progress(done: int, total: int) -> None:
            if self._generation == generation:  # a superseded pass reports nothing
                on_progress(done, total)

        return progress

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._job is not None or self._closed)
                if self._closed:
                    return
                if self._job is None:  # woken by close()
                    continue
                generation, session, plan = self._job
                self._job = None
                self._running = True
            try:
                report = session.evaluate(plan, progress=self._progress_for(generation), cancel=self._cancel_for(generation))
                runtime = self._latency_runtime() if self._latency_runtime is not None else None
                if runtime and self._generation == generation:
                    latency = session.latency(plan, runtime=runtime, cancel=self._cancel_for(generation))
                    report = dataclasses.replace(report, latency=latency)
                if self._generation == generation:
                    self._on_result(report)
            except Cancelled:
                pass
            except Exception as exc:  # shown in the app; the worker keeps serving
                if self._generation == generation:
                    self._on_error(f"evaluation failed: {exc}")
            finally:
                with self._cond:
                    self._running = False
                    if self._job is None:
                        self._on_busy(False)
                    self._cond.notify_all()


class Job:
    """One long piece of work at a time in a background thread: a sensitivity run, a
    search, a fine-tuning. ``start(work)`` runs ``work(progress, cancel)``; its result goes
    to ``on_done``, an error's message to ``on_error``; ``cancel()`` stops it at the
    engine's next check (then neither is called)."""

    def __init__(
        self,
        on_done: Callable[[str, object], None],
        on_error: Callable[[str, str], None],
        on_progress: Callable[[int, int], None],
        on_busy: Callable[[str], None],
    ) -> None:
        self._on_done, self._on_error, self._on_progress, self._on_busy = on_done, on_error, on_progress, on_busy
        self._cancelled = threading.Event()
        self._thread: threading.Thread | None = None
        self.name = ""

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, name: str, work: Callable[[Callable[[int, int], None], Callable[[], bool]], object]) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is still running: cancel it first")
        self.name = name
        self._cancelled = threading.Event()
        cancelled = self._cancelled
        self._on_busy(name)

        def run() -> None:
            try:
                result = work(self._on_progress, cancelled.is_set)
                if not cancelled.is_set():
                    self._on_done(name, result)
            except Cancelled:
                pass
            except Exception as exc:  # shown in the app; the app keeps working
                if not cancelled.is_set():
                    self._on_error(name, str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}")
            finally:
                self._on_busy("")

        self._thread = threading.Thread(target=run, name=f"studio-{name}", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        self._cancelled.set()

    def wait(self, timeout: float = 60.0) -> bool:
        """Block until the work has finished (for tests and scripts)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

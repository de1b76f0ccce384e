"""The Studio's long work, as part of its state: sensitivity, fit-to-budget and recovery.

One job runs at a time, in a background thread (``worker.Job``), with progress, time
left and cancel. Results land in traits (``sensitivity``, ``search_result``, ``epochs``);
a search puts every candidate it measured into History and makes the chosen plan
current; a recovery makes the fine-tuned model the session's model, and
``undo_recovery`` brings the model before it back. Nothing here touches a widget.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import traitlets

from ..engine import Plan, Report, Session, StudioError
from ..engine.recovered import EpochRecord, Recovered
from ..engine.search import SearchResult
from ..engine.sensitivity_table import SensitivityTable
from .worker import Job

SENSITIVITY_BITS = (2, 3, 4, 6, 8)


class LongWork(traitlets.HasTraits):
    """Traits and verbs of the Studio's long jobs; ``StudioState`` builds on it."""

    job = traitlets.Unicode("")  # the running job: "sensitivity", "search", "recovery", or ""
    job_progress = traitlets.Float(0.0)
    job_eta_s = traitlets.Float(-1.0)
    sensitivity = traitlets.Instance(SensitivityTable, allow_none=True)
    search_result = traitlets.Instance(SearchResult, allow_none=True)
    epochs: traitlets.List[Any] = traitlets.List()  # EpochRecords of the running (or last) recovery
    recovered = traitlets.Unicode("")  # what the current model was recovered from, "" if it was not
    can_undo_recovery = traitlets.Bool(False)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.train_data: Any = None  # what recovery trains on (never the eval data)
        self.teacher_name = ""  # a sample name: recovery may distil a narrower student of it
        self._before_recovery: list[tuple[Session, str, Plan, Any, str]] = []
        self._job = Job(self._job_done, self._job_failed, self._job_progressed, self._job_busy)
        self._job_started = 0.0

    # -- verbs ------------------------------------------------------------------------
    def run_sensitivity(self, mode: str = "measured", bits: tuple[int, ...] = SENSITIVITY_BITS) -> None:
        """Measure (or, with mode="proxy", estimate) each layer's cost at each bit width."""
        session = self._require_session()
        self._start("sensitivity", lambda progress, cancel: session.sensitivity(bits=bits, prune=(), mode=mode, progress=progress, cancel=cancel))

    def fit(self, max_drop: float | None = None, target_ratio: float | None = None) -> None:
        """Search the smallest plan within ``max_drop`` (metric points, 0.01 = 1 point), or the
        most accurate one at ``target_ratio``× smaller."""
        session = self._require_session()
        if (max_drop is None) == (target_ratio is None):
            raise StudioError("give one budget: a largest drop in points, or a size ratio")
        target = None if target_ratio is None else float(target_ratio)
        self._start("search", lambda progress, cancel: session.search(target_size=target, max_drop=max_drop, progress=progress, cancel=cancel))

    def recover(self, method: str = "qat", epochs: int = 5, lr: float = 1e-3, width: float = 1.0) -> None:
        """Fine-tune under the current plan (QAT or distillation from the float model), or with
        ``width`` < 1 distil a narrower student of the sample; the result becomes the model."""
        session = self._require_session()
        if self.train_data is None:
            raise StudioError("recovery needs training data: open a sample, or pass Studio(model, eval_data, train_data=...)")
        plan, train = self.plan, self.train_data  # type: ignore[attr-defined]
        teacher = session.recipe().model
        if width < 1.0:
            if not self.teacher_name:
                raise StudioError("a narrower student can be made of the sample architectures only; use width 1.0 for your model")
            from ..samples import student

            session = session.with_model(student(self.teacher_name, width))
            plan, method = Plan(), "distill"
        self.epochs = []

        def work(progress: Any, cancel: Any) -> tuple[Session, Recovered, float]:
            rec = session.finetune(plan, train, method=method, epochs=epochs, lr=lr, teacher=teacher,
                                   progress=progress, cancel=cancel, on_epoch=lambda e: self._epoch(e))
            if rec.model is None:  # finetune always returns the trained model
                raise StudioError("the recovery returned no model")
            return session.with_model(rec.model), rec, width

        self._start("recovery", work)

    def measure_latency(self) -> None:
        """Time the current plan (and the float model) in ``latency_runtime``; the report and its
        history point get the figure."""
        session, plan, runtime = self._require_session(), self.plan, self.latency_runtime  # type: ignore[attr-defined]
        self._start("latency", lambda progress, cancel: (plan, session.latency(plan, runtime=runtime, cancel=cancel)))

    def cancel_job(self) -> None:
        self._job.cancel()

    def wait_job(self, timeout: float = 120.0) -> bool:
        return self._job.wait(timeout)

    def undo_recovery(self) -> None:
        """Bring back the model (and plan) from before the last recovery."""
        if not self._before_recovery:
            return
        session, source, plan, train, teacher = self._before_recovery.pop()
        self.recovered = ""
        self.load(session, source, train_data=train, teacher=teacher, keep_history=True, plan=plan)  # type: ignore[attr-defined]
        self.can_undo_recovery = bool(self._before_recovery)

    # -- the job's callbacks (worker thread) ----------------------------------------------
    def _require_session(self) -> Session:
        session = self.session  # type: ignore[attr-defined]
        if session is None:
            raise StudioError("load a model first")
        if self._job.running:
            raise StudioError(f"the {self._job.name} is still running: wait for it, or cancel it")
        return session

    def _start(self, name: str, work: Any) -> None:
        owner = self.session  # type: ignore[attr-defined]
        self._job_started = time.perf_counter()
        self._job.start(name, lambda progress, cancel: (owner, work(progress, cancel)))

    def _epoch(self, record: EpochRecord) -> None:
        self.epochs = [*self.epochs, record]

    def _job_busy(self, name: str) -> None:
        with self.hold_trait_notifications():
            self.job_progress, self.job_eta_s = 0.0, -1.0
            self.job = name

    def _job_progressed(self, done: int, total: int) -> None:
        fraction = done / max(total, 1)
        elapsed = time.perf_counter() - self._job_started
        with self.hold_trait_notifications():
            self.job_progress = fraction
            self.job_eta_s = elapsed * (1 - fraction) / fraction if 0.02 <= fraction < 1 else -1.0

    def _job_failed(self, name: str, message: str) -> None:
        self.error = f"{name} failed: {message}"  # type: ignore[attr-defined]

    def _job_done(self, name: str, result: Any) -> None:
        owner, value = result
        if owner is not self.session:  # type: ignore[attr-defined]
            return  # another model was loaded meanwhile
        if name == "sensitivity":
            self.sensitivity = value
        elif name == "search":
            self._searched(value)
        elif name == "recovery":
            self._recovered(*value)
        elif name == "latency":
            plan, latency = value
            report: Report | None = self.eval_report  # type: ignore[attr-defined,has-type]  # StudioState's trait
            if report is not None and report.plan == plan:
                self.eval_report = dataclasses.replace(report, latency=latency)  # type: ignore[attr-defined]
            self._set_latency(plan, latency.ms)  # type: ignore[attr-defined]

    def _searched(self, result: SearchResult) -> None:
        from .state import HistoryPoint

        points = [
            HistoryPoint(c.plan, c.size_bytes, c.metric, f"search ({c.step}): {c.compression_ratio:.1f}×, {100 * c.delta:+.2f} pts", "search", self.session)  # type: ignore[attr-defined]
            for c in result.candidates
        ]
        self.add_history(points)  # type: ignore[attr-defined]
        self.search_result = result
        self.set_plan(result.plan)  # type: ignore[attr-defined]

    def _recovered(self, session: Session, rec: Recovered, width: float) -> None:
        before = (self.session, self.source, self.plan, self.train_data, self.teacher_name)  # type: ignore[attr-defined]
        label = f"{rec.config.method}, {len(rec.history)} epochs" + (f", student width {width:g}" if width < 1 else "")
        source = f"{before[1]} (recovered: {label})"
        self._before_recovery.append(before)
        self.recovered = label  # before loading: the new model's points are "recovered"
        self.load(session, source, train_data=before[3], teacher=before[4] if width >= 1 else "", keep_history=True, plan=rec.plan)  # type: ignore[attr-defined]
        self.can_undo_recovery = True

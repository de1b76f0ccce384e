"""The Studio's one state object: a traitlets model with no widgets in it.

Views observe it and call its verbs; it never touches a widget. Every plan change
goes through ``set_plan``, which keeps undo/redo, recomputes sizes at once (the
engine's ``Session.size`` runs no forward pass), publishes the new plan and its sizes
in one atomic step, and submits the plan to its own :class:`Evaluator`. Measured
reports arrive from the worker thread and are taken as current only when they are
for the current plan. A ``StudioState`` works without any widget: scripts and tests
drive it directly.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import traitlets

from ..engine import Plan, Report, Session, StudioError
from .work import LongWork
from .worker import Evaluator


@dataclass(frozen=True)
class HistoryPoint:
    """One evaluated plan: a point on size against metric.

    ``kind`` is "measured" (a plan the user made), "search" (a candidate of Fit to budget)
    or "recovered" (measured on a fine-tuned model); ``session`` is the model it was
    measured on, so that restoring it can bring that model back."""

    plan: Plan
    size_bytes: int
    metric: float
    label: str
    kind: str = "measured"
    session: Any = field(default=None, compare=False, repr=False)
    latency_ms: float | None = None  # per batch, when measured (see Session.latency)


def describe_plan(plan: Plan) -> str:
    text = plan.default.label()
    if plan.overrides:
        text += f" + {len(plan.overrides)} layer override{'s' if len(plan.overrides) > 1 else ''}"
    return text


def pareto_indices(costs: list[float], metrics: list[float]) -> list[int]:
    """Indices of the points no other point beats on both cost (smaller) and metric (higher)."""
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -metrics[i]))
    front, best = [], float("-inf")
    for i in order:
        if metrics[i] > best:
            front.append(i)
            best = metrics[i]
    return front


class StudioState(LongWork):
    """Everything the Studio shows: the session, the plan and its sizes, the measured report,
    the history of evaluated plans, undo/redo, and the evaluation's progress."""

    session = traitlets.Instance(Session, allow_none=True)
    source = traitlets.Unicode("")  # what is loaded: a sample name or a file name
    plan = traitlets.Instance(Plan, default_value=Plan())
    size_report = traitlets.Instance(Report, allow_none=True)  # always for ``plan``; set with it
    eval_report = traitlets.Instance(Report, allow_none=True)  # measured, for the current plan only
    last_report = traitlets.Instance(Report, allow_none=True)  # the newest measured report, maybe stale
    evaluating = traitlets.Bool(False)
    progress = traitlets.Float(0.0)  # of the running evaluation, 0..1
    eta_s = traitlets.Float(-1.0)  # estimated seconds left (-1: unknown)
    selected = traitlets.Unicode("")
    history: traitlets.List[HistoryPoint] = traitlets.List()
    error = traitlets.Unicode("")
    can_undo = traitlets.Bool(False)
    can_redo = traitlets.Bool(False)
    auto_latency = traitlets.Bool(False)  # measure each evaluated plan's latency too
    latency_runtime = traitlets.Unicode("onnxruntime")

    def __init__(self, evaluate: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._undo: list[Plan] = []
        self._redo: list[Plan] = []
        self._coalesce: Any = None
        self._lock = threading.RLock()
        self._opened: dict[int, tuple[Session, str, Any, str, str]] = {}  # models this history measured
        self._started = 0.0
        self.evaluator = (
            Evaluator(self.accept, self._failed, self._busy, self._progressed, lambda: self.latency_runtime if self.auto_latency else None)
            if evaluate
            else None
        )

    # -- loading ----------------------------------------------------------------
    def load(self, session: Session, source: str, train_data: Any = None, teacher: str = "", keep_history: bool = False, plan: Plan | None = None) -> None:
        """Switch to a new model; the plan starts in float. ``train_data`` is what recovery may
        train on, ``teacher`` a sample name whose narrower students recovery may distil.
        History starts anew with the measured float model, unless ``keep_history``; ``plan``
        is the first plan (float by default)."""
        with self._lock, self.hold_trait_notifications():  # observers see the new model whole
            self._undo.clear()
            self._redo.clear()
            self._coalesce = None
            self.last_report = None
            self.error = ""
            self.source = source
            self.train_data, self.teacher_name = train_data, teacher
            if not keep_history:
                self.history = []
                self.sensitivity = None
                self.search_result = None
                self.recovered = ""
            if not keep_history:
                self._opened.clear()
            self.session = session
            self.selected = session.layer_names[0]
            self._apply(plan or Plan())
            self._opened[id(session)] = (session, source, train_data, teacher, self.recovered)
            if not keep_history:  # the float model was measured when the session was made
                size = self.size_report
                assert size is not None  # _apply measured it
                float_point = HistoryPoint(Plan(), size.size_bytes, session.baseline_metric, describe_plan(Plan()), session=session)
                self.history = [float_point]

    # -- plan changes ------------------------------------------------------------
    def set_plan(self, plan: Plan, coalesce: Any = None) -> None:
        """Make ``plan`` current. Consecutive changes with the same ``coalesce`` key
        (one slider being dragged) make a single undo step."""
        with self._lock:
            if plan == self.plan:
                return
            if coalesce is None or coalesce != self._coalesce:
                self._undo.append(self.plan)
            self._coalesce = coalesce
            self._redo.clear()
            self._apply(plan)

    def set_layer(self, name: str, **changes: Any) -> None:
        key = (name, tuple(sorted(changes)))
        self.set_plan(self.plan.with_layer(name, **changes), coalesce=key)

    def set_layers(self, names: list[str], **changes: Any) -> None:
        """The same change on several layers (a group of the Layers panel): one undo step."""
        key = (tuple(names), tuple(sorted(changes)))
        self.set_plan(self.plan.with_layers(names, **changes), coalesce=key)

    def set_all(self, **changes: Any) -> None:
        key = ("*", tuple(sorted(changes)))
        self.set_plan(self.plan.with_all(**changes), coalesce=key)

    def undo(self) -> None:
        with self._lock:
            if not self._undo:
                return
            self._redo.append(self.plan)
            self._coalesce = None
            self._apply(self._undo.pop())

    def redo(self) -> None:
        with self._lock:
            if not self._redo:
                return
            self._undo.append(self.plan)
            self._coalesce = None
            self._apply(self._redo.pop())

    def reset(self) -> None:
        self.set_plan(Plan())
        self._coalesce = None

    def restore(self, index: int) -> None:
        """Make the plan of history point ``index`` current again (and its model, if another)."""
        if not 0 <= index < len(self.history):
            raise StudioError(f"there is no history point {index}")
        point = self.history[index]
        if point.session is not None and point.session is not self.session:
            self._switch_back(point.session, point.plan)
        self.set_plan(point.plan)
        self._coalesce = None

    def _switch_back(self, session: Session, plan: Plan) -> None:
        """Bring back a model this history measured (one from before or after a recovery)."""
        if id(session) not in self._opened:
            raise StudioError("that point was measured on a model that is no longer open")
        _, source, train, teacher, recovered = self._opened[id(session)]
        self.recovered = recovered
        self.load(session, source, train_data=train, teacher=teacher, keep_history=True, plan=plan)

    def _set_latency(self, plan: Plan, latency_ms: float) -> None:
        """Give the history point of ``plan`` (on the current model) its measured latency."""
        self.history = [
            dataclasses.replace(p, latency_ms=latency_ms) if p.plan == plan and p.session is self.session else p for p in self.history
        ]

    def add_history(self, points: list[HistoryPoint]) -> None:
        """Add measured points (e.g. a search's candidates) that are not in History yet."""
        with self._lock:
            known = {(p.plan, id(p.session)) for p in self.history}
            self.history = [*self.history, *(p for p in points if (p.plan, id(p.session)) not in known)]

    def select(self, name: str) -> None:
        if self.session is not None:
            self.session.layer(name)  # ValueError for unknown names
        self.selected = name

    def _apply(self, plan: Plan) -> None:
        """Publish ``plan`` and its sizes in one step, then have it measured."""
        size = self.session.size(plan) if self.session is not None else None  # may raise: nothing changed yet
        with self.hold_trait_notifications():
            self.eval_report = None
            self.can_undo = bool(self._undo)
            self.can_redo = bool(self._redo)
            self.size_report = size
            self.plan = plan
        if self.session is not None and self.evaluator is not None:
            self.evaluator.submit(self.session, plan)

    # -- results -------------------------------------------------------------------
    def accept(self, report: Report) -> None:
        """A measured report arrived (from any thread)."""
        with self._lock:
            self.last_report = report
            kind = "recovered" if self.recovered else "measured"
            latency = None if report.latency is None else report.latency.ms
            point = HistoryPoint(report.plan, report.size_bytes, float(report.metric or 0.0), describe_plan(report.plan), kind, self.session, latency)
            self.add_history([point])
            if latency is not None:
                self._set_latency(report.plan, latency)
            if report.plan == self.plan:
                self.eval_report = report

    def _failed(self, message: str) -> None:
        self.error = message

    def _busy(self, busy: bool) -> None:
        with self.hold_trait_notifications():
            if busy:
                self._started = time.perf_counter()
                self.progress, self.eta_s = 0.0, -1.0
            self.evaluating = busy

    def _progressed(self, done: int, total: int) -> None:
        fraction = done / max(total, 1)
        elapsed = time.perf_counter() - self._started
        with self.hold_trait_notifications():
            self.progress = fraction
            self.eta_s = elapsed * (1 - fraction) / fraction if 0.05 <= fraction < 1 else -1.0

    def wait(self, timeout: float = 60.0) -> bool:
        """Block until the newest plan has been evaluated (for scripts and tests)."""
        return self.evaluator.wait(timeout) if self.evaluator is not None else True

    def close(self) -> None:
        """Stop the evaluation thread."""
        if self.evaluator is not None:
            self.evaluator.close()

"""Automatic mixed precision: the smallest plan within a metric drop, or the best within a size.

``search(session, target_size=..., max_drop=...)`` works in four steps, weights only
(post-training, no activation quantization):

1. compress every layer with every option of the search space (bits, prune ratios,
   uniform or k-means, granularity, clipping; or float) for its exact bytes (cached by
   the session);
2. measure the sensitivity table (one layer changed at a time, incrementally) and take
   the Fisher proxy from a few backward passes; a layer's damage for an option is the
   KL to the float model that its probe measured, or, for options not probed (such as
   bits and pruning together), the proxy scaled to that layer's measured KLs; then the
   options on each layer's lower convex hull of (bytes, damage) are measured too
   (``damage.py``);
3. a knapsack over those damages gives the least-damage plan for every size budget
   (``knapsack.py``);
4. measured refinement (``refine.py``): for a drop budget, a bisection along that front,
   then greedy one-layer moves; for a size budget, the best fitting points and one-layer
   upgrades; each candidate evaluated (incrementally when one layer changes). A candidate
   is within a drop budget when its measured drop is, and so is its ``smoothed_drop``:
   an isotonic fit of drop on KL over every candidate, so that a plan whose drop measured
   luckily low for its KL is judged with its neighbours.

The plans are chosen on the eval set that measures them, so the chosen plan's drop is
a slightly optimistic estimate (it was picked among noisy measurements); a held-out
split measures it without that bias (``benchmarks/bench_guidance.py`` does).

Every evaluated candidate is returned with its size, metric, delta and paired standard
error; ``pareto`` marks those no other candidate beats on both size and metric. A
candidate whose drop is within the 95% interval of ``max_drop`` is marked "within noise".
Nothing is random but the proxy's sampled labels (without eval labels), seeded by ``seed``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .budget import resolve_budget
from .damage import OptionTable, estimate, measure_hulls
from .errors import StudioError
from .knapsack import frontier
from .plan import Plan
from .progress import CancelFn, ProgressFn
from .proxy import fisher_diagonal
from .refine import Refiner, plan_of
from .search_space import SearchSpace
from .sensitivity import SensitivityTable, sensitivity

DEFAULT_EVALUATIONS = 16
MEASURE_ALL_MAX = 400  # at most this many options (layers x options) are all measured


@dataclass(frozen=True)
class SearchCandidate:
    """One evaluated plan.

    budget: "meets" (within the budget, the drop's 95% interval included), "within noise"
    (the drop budget lies inside the drop's 95% interval) or "exceeds".
    """

    plan: Plan
    size_bytes: int
    compression_ratio: float
    metric: float
    delta: float
    delta_stderr: float | None
    estimated_damage: float  # the knapsack's estimate (KL to the float model, added over layers)
    kl: float | None  # the measured KL to the float model
    smoothed_drop: float  # the drop fitted to every candidate's KL (isotonic); a plan is chosen only when this is within max_drop too
    budget: str
    pareto: bool
    step: str  # "knapsack" (a point of the estimated front) or "refine" (a one-layer move)

    @property
    def drop(self) -> float:
        return -self.delta

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["plan"] = self.plan.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchCandidate:
        data = dict(data)
        data["plan"] = Plan.from_dict(data["plan"])
        return cls(**data)


@dataclass(frozen=True)
class SearchResult:
    """The chosen plan, every evaluated candidate (``pareto`` marks the front), and the budget."""

    plan: Plan
    chosen: int  # index into candidates
    candidates: tuple[SearchCandidate, ...]
    target_size_bytes: int | None
    max_drop: float | None
    strict: bool
    metric_name: str
    baseline_metric: float
    float_size_bytes: int
    space: SearchSpace
    seed: int
    seconds: float
    stage_seconds: dict[str, float]  # compress, sensitivity, proxy, hull, refine
    probes: int  # one-layer probes measured (the sensitivity table's and the hulls')
    sensitivity: SensitivityTable | None = None

    @property
    def best(self) -> SearchCandidate:
        return self.candidates[self.chosen]

    def pareto(self) -> list[SearchCandidate]:
        """The evaluated candidates on the Pareto front, smallest first."""
        return sorted((c for c in self.candidates if c.pareto), key=lambda c: c.size_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.to_dict(),
            "chosen": self.chosen,
            "candidates": [c.to_dict() for c in self.candidates],
            "target_size_bytes": self.target_size_bytes,
            "max_drop": self.max_drop,
            "strict": self.strict,
            "metric_name": self.metric_name,
            "baseline_metric": self.baseline_metric,
            "float_size_bytes": self.float_size_bytes,
            "space": self.space.to_dict(),
            "seed": self.seed,
            "seconds": self.seconds,
            "stage_seconds": dict(self.stage_seconds),
            "probes": self.probes,
            "sensitivity": None if self.sensitivity is None else self.sensitivity.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchResult:
        data = dict(data)
        data["plan"] = Plan.from_dict(data["plan"])
        data["candidates"] = tuple(SearchCandidate.from_dict(c) for c in data["candidates"])
        data["space"] = SearchSpace.from_dict({"param_dtype": ["float32"], **data["space"]})  # saved before the option: float32
        if data.get("sensitivity") is not None:
            data["sensitivity"] = SensitivityTable.from_dict(data["sensitivity"])
        return cls(**data)


# -- progress over stages ---------------------------------------------------------------------
class _Stages:
    """One progress bar over stages of different weights (out of 1000)."""

    TOTAL = 1000

    def __init__(self, progress: ProgressFn | None, weights: Sequence[float]) -> None:
        self.progress = progress
        edges = np.cumsum([0.0, *weights]) / sum(weights)
        self.edges = [int(round(e * self.TOTAL)) for e in edges]
        self.stage = 0
        self.last = -1

    def __call__(self, stage: int) -> ProgressFn:
        def update(done: int, total: int) -> None:
            lo, hi = self.edges[stage], self.edges[stage + 1]
            value = lo + int((hi - lo) * min(done, total) / max(total, 1))
            if self.progress is not None and value > self.last:
                self.last = value
                self.progress(value, self.TOTAL)

        return update

    def finish(self) -> None:
        if self.progress is not None and self.last < self.TOTAL:
            self.progress(self.TOTAL, self.TOTAL)


# -- the search ---------------------------------------------------------------------------------
def _space(space: Any) -> SearchSpace:
    if space is None:
        return SearchSpace()
    if isinstance(space, SearchSpace):
        return space
    if isinstance(space, Mapping):
        return SearchSpace.from_dict(space)
    raise StudioError(f"space must be a SearchSpace, a dict of its fields, or None; got {type(space).__name__}")


class _Clock:
    """Seconds per stage of the search."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self.last
        self.last = now

    def total(self) -> float:
        return time.perf_counter() - self.start


def _pareto(points: Sequence[tuple[int, float]]) -> list[bool]:
    """Not beaten by another point on both size (smaller) and metric (higher)."""
    out = []
    for i, (s, m) in enumerate(points):
        beaten = any((s2 <= s and m2 >= m) and (s2 < s or m2 > m) for j, (s2, m2) in enumerate(points) if j != i)
        out.append(not beaten)
    return out


def search(
    session: Any,
    target_size: Any = None,
    max_drop: float | None = None,
    space: SearchSpace | Mapping[str, Any] | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    *,
    executor: Any = None,
    evaluations: int = DEFAULT_EVALUATIONS,
    strict: bool = False,
    measure_all: bool | None = None,
) -> SearchResult:
    """The smallest plan within ``max_drop``, or the most accurate within ``target_size``, or
    the smallest meeting both.

    target_size: bytes as an int (20000), or a compression ratio as a float or string
                 (15.0, "15x"); strings such as "20kB" are bytes.
    max_drop:    the largest drop of the metric from the float model's, in its units
                 (0.01 = one point of accuracy).
    space:       the options per layer (``SearchSpace`` or a dict of its fields).
    evaluations: how many candidate plans the refinement may evaluate.
    strict:      the chosen plan's drop must be within ``max_drop`` with its 95% interval
                 (by default the measured drop must be, and "within noise" says when the
                 interval straddles the budget).
    executor:    passed to the sensitivity step (None runs here, in order).
    measure_all: measure every option of every layer as a one-layer probe, not only those on
                 the hulls; None: when there are at most ``MEASURE_ALL_MAX`` (small models).
    """
    clock = _Clock()
    budget = resolve_budget(target_size, max_drop, session.float_size_bytes, session.baseline_metric, strict)
    space = _space(space)
    if isinstance(evaluations, bool) or not isinstance(evaluations, int) or evaluations < 1:
        raise StudioError(f"evaluations must be a positive integer; got {evaluations!r}")
    options = OptionTable(list(session.layer_names), space.options())
    bits, prune = space.probes()
    n = len(options.names)
    stages = _Stages(progress, [n * len(options.options) * 0.01, n * (len(bits) + len(prune)) * 0.02, 0.02 * n, 0.04 * n, evaluations * 0.04])

    # 1. every option's exact bytes
    options.fill_sizes(session, space.huffman, cancel, stages(0))
    smallest_bytes = session.size(plan_of(options.names, options.smallest(), space.huffman)).size_bytes
    if budget.target_bytes is not None and budget.target_bytes < smallest_bytes:
        raise StudioError(
            f"target size {budget.target_bytes} B ({budget.target_ratio:.1f}x) cannot be reached: the smallest plan "
            f"in the search space takes {smallest_bytes} B ({session.float_size_bytes / smallest_bytes:.1f}x). "
            "Give a larger target, or widen the space (lower bits, more pruning)"
        )
    clock.lap("compress")

    # 2. sensitivity, the proxy, and measured damage on each layer's hull
    table = sensitivity(session, bits=bits, prune=prune, progress=stages(1), cancel=cancel, executor=executor)
    clock.lap("sensitivity")
    fisher = fisher_diagonal(session, seed=seed, progress=stages(2), cancel=cancel)
    estimate(session, table, options, fisher, space.huffman)
    clock.lap("proxy")
    every = n * len(options.options) <= MEASURE_ALL_MAX if measure_all is None else bool(measure_all)
    measure_hulls(session, options, space.huffman, progress=stages(3), cancel=cancel, every=every)
    clock.lap("hull")

    # 3. the knapsack front, 4. measured refinement
    refiner = Refiner(session, budget, options, space.huffman, evaluations, stages(4), cancel)
    chosen = refiner.run(frontier(options.sizes, options.damages))
    clock.lap("refine")
    stages.finish()

    plans = list(refiner.done)
    sizes = [refiner.size(p) for p in plans]
    reports = [refiner.done[p][0] for p in plans]
    front = _pareto([(s, refiner.metric(p)) for s, p in zip(sizes, plans)])
    candidates = tuple(
        SearchCandidate(
            plan=p, size_bytes=s, compression_ratio=session.float_size_bytes / s, metric=refiner.metric(p),
            delta=refiner.metric(p) - session.baseline_metric, delta_stderr=r.delta_stderr, estimated_damage=refiner.done[p][1],
            kl=None if r.fidelity is None else r.fidelity.kl, smoothed_drop=refiner.smoothed_drop(p),
            budget=budget.status(-(r.delta or 0.0), r.delta_stderr, s), pareto=f, step=refiner.done[p][2],
        )
        for p, s, r, f in zip(plans, sizes, reports, front)
    )
    return SearchResult(
        plan=chosen, chosen=plans.index(chosen), candidates=candidates,
        target_size_bytes=budget.target_bytes, max_drop=budget.max_drop, strict=budget.strict, metric_name=session.metric_name,
        baseline_metric=session.baseline_metric, float_size_bytes=session.float_size_bytes, space=space, seed=int(seed),
        seconds=clock.total(), stage_seconds=clock.laps, probes=len(table.entries) + options.probes, sensitivity=table,
    )

"""Measured refinement: evaluated candidates along the knapsack's estimated front.

For a drop budget, a bisection along the front (smallest first) finds the smallest
point whose measured drop is within the budget; greedy one-layer moves, each the least
estimated damage per byte saved, then try to shrink it further. For a size budget,
the fitting points with the least estimated damage are measured, then one-layer
upgrades that still fit. Each evaluation goes through ``session.evaluate`` (a one-layer
move runs downstream of that layer only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .budget import Budget
from .damage import OptionTable
from .errors import StudioError
from .knapsack import FrontierPoint
from .plan import LayerSpec, Plan
from .progress import CancelFn, ProgressFn, check
from .report import Report


def plan_of(names: Sequence[str], specs: Sequence[LayerSpec], huffman: bool) -> Plan:
    """A plan giving each layer its spec, with the most common spec as the default (a short header)."""
    counts: dict[LayerSpec, int] = {}
    for spec in specs:
        counts[spec] = counts.get(spec, 0) + 1
    default = max(counts, key=lambda s: (counts[s], -list(specs).index(s)))
    overrides = tuple((name, spec) for name, spec in zip(names, specs) if spec != default)
    return Plan(default=default, overrides=overrides, huffman=huffman)


class Refiner:
    """Evaluates candidates (at most ``evaluations``) and keeps every one it evaluated."""

    def __init__(self, session: Any, budget: Budget, options: OptionTable, huffman: bool, evaluations: int, progress: ProgressFn | None, cancel: CancelFn | None) -> None:
        self.session = session
        self.budget = budget
        self.options = options
        self.huffman = huffman
        self.evaluations = evaluations
        self.progress = progress
        self.cancel = cancel
        self.done: dict[Plan, tuple[Report, float, str]] = {}  # plan -> (report, estimated damage, step)
        self._sizes: dict[Plan, int] = {}

    # -- one candidate --------------------------------------------------------------
    def plan(self, choice: Sequence[int]) -> Plan:
        return plan_of(self.options.names, [self.options.options[o] for o in choice], self.huffman)

    def damage(self, choice: Sequence[int]) -> float:
        return float(sum(row[o] for row, o in zip(self.options.damages, choice)))

    def size(self, plan: Plan) -> int:
        if plan not in self._sizes:
            self._sizes[plan] = self.session.size(plan).size_bytes
        return self._sizes[plan]

    def fits(self, plan: Plan) -> bool:
        return self.budget.target_bytes is None or self.size(plan) <= self.budget.target_bytes

    def measured_passes(self, plan: Plan) -> bool:
        report = self.done[plan][0]
        return self.budget.accepts(-(report.delta or 0.0), report.delta_stderr, self.size(plan))

    def passes(self, plan: Plan) -> bool:
        """Within the budget, by the plan's measured drop and by the drop its KL predicts."""
        if not self.measured_passes(plan):
            return False
        return self.budget.max_drop is None or self.smoothed_drop(plan) <= self.budget.max_drop + 1e-12

    def smoothed_drop(self, plan: Plan) -> float:
        """The drop of ``plan`` as a non-decreasing function of its measured KL, fitted to every
        evaluated candidate (isotonic regression): a plan that measured a lucky low drop for its
        KL is judged with its neighbours."""
        points = sorted(((self.kl(p), -(self.done[p][0].delta or 0.0), p) for p in self.done), key=lambda t: (t[0], t[1]))
        blocks: list[list[Any]] = []  # [sum, count, plans]
        for _, drop, p in points:
            blocks.append([drop, 1, [p]])
            while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
                last = blocks.pop()
                blocks[-1][0] += last[0]
                blocks[-1][1] += last[1]
                blocks[-1][2] += last[2]
        for total, count, plans in blocks:
            if plan in plans:
                return float(total / count)
        raise KeyError(plan)

    def kl(self, plan: Plan) -> float:
        fidelity = self.done[plan][0].fidelity
        return float(fidelity.kl) if fidelity is not None else 0.0

    @property
    def left(self) -> int:
        return self.evaluations - len(self.done)

    def evaluate(self, choice: Sequence[int], step: str) -> Report:
        plan = self.plan(choice)
        if plan not in self.done:
            check(self.cancel)
            self.done[plan] = (self.session.evaluate(plan, cancel=self.cancel), self.damage(choice), step)
            if self.progress is not None:
                self.progress(len(self.done), self.evaluations)
        return self.done[plan][0]

    def metric(self, plan: Plan) -> float:
        return float(self.done[plan][0].metric or 0.0)

    def choice_of(self, plan: Plan) -> list[int]:
        return [self.options.options.index(plan.spec_for(name)) for name in self.options.names]

    # -- the search -------------------------------------------------------------------
    def run(self, points: list[FrontierPoint]) -> Plan:
        fitting = [p for p in points if self.fits(self.plan(p.choice))]
        if not fitting:
            raise StudioError(f"no plan in the search space fits {self.budget.describe()}; give a larger target size")
        if self.budget.max_drop is None:
            return self._best_within_size(fitting)
        return self._smallest_within_drop(fitting)

    def _best(self) -> Plan:
        return max(self.done, key=lambda p: (self.metric(p), -self.size(p)))

    def _best_within_size(self, fitting: list[FrontierPoint]) -> Plan:
        for point in reversed(fitting[-max(1, min(4, self.evaluations // 2)) :]):
            self.evaluate(point.choice, "knapsack")
        choice = self.choice_of(self._best())
        while self.left > 0:
            move = self._next_move(choice, smaller=False)
            if move is None:
                break
            self.evaluate(move, "refine")
            if self.metric(self.plan(move)) > self.metric(self.plan(choice)):
                choice = move
        return self._best()

    def _smallest_within_drop(self, fitting: list[FrontierPoint]) -> Plan:
        hi = len(fitting) - 1  # the largest fitting point, least damage: checked first
        self.evaluate(fitting[hi].choice, "knapsack")
        while not self.measured_passes(self.plan(fitting[hi].choice)) and hi > 0 and self.left > 0:
            hi -= 1  # only with a size budget or no float option: the next point down may pass by noise
            self.evaluate(fitting[hi].choice, "knapsack")
        if not self.measured_passes(self.plan(fitting[hi].choice)):
            least = min(self.done, key=lambda p: -(self.done[p][0].delta or 0.0))
            what = "the budgets contradict each other: " if self.budget.target_bytes is not None else ""
            raise StudioError(
                f"{what}no plan within {self.budget.describe()} was found; the least drop measured is "
                f"{-(self.done[least][0].delta or 0.0):.4f} at {self.size(least)} B. Raise max_drop"
                + (" or the target size (or give only one of them)" if what else ", or allow float layers in the space")
            )
        lo = -1
        while hi - lo > 1 and self.left > 0:
            mid = (lo + hi) // 2
            self.evaluate(fitting[mid].choice, "knapsack")
            if self.passes(self.plan(fitting[mid].choice)):
                hi = mid
            else:
                lo = mid
        choice = list(fitting[hi].choice)
        tried: set[tuple[int, ...]] = set()
        while self.left > 0:
            move = self._next_move(choice, smaller=True, tried=tried)
            if move is None:
                break
            tried.add(tuple(move))
            self.evaluate(move, "refine")
            if self.passes(self.plan(move)):
                choice = move
        passing = [p for p in self.done if self.passes(p)] or [p for p in self.done if self.measured_passes(p)]
        return min(passing, key=lambda p: (self.size(p), -self.metric(p)))

    def _next_move(self, choice: Sequence[int], smaller: bool, tried: set[tuple[int, ...]] | None = None) -> list[int] | None:
        """The best untried one-layer move: the least damage added per byte saved (smaller),
        or the most damage removed per byte added that still fits (larger)."""
        best, best_key = None, math.inf
        for i, (sizes, damages) in enumerate(zip(self.options.sizes, self.options.damages)):
            here = choice[i]
            for o in range(len(sizes)):
                saved = sizes[here] - sizes[o]
                added = damages[o] - damages[here]
                if o == here or (smaller and saved <= 0) or (not smaller and (saved >= 0 or added >= 0)):
                    continue
                key = added / saved if smaller else added / -saved
                if key >= best_key:
                    continue
                move = list(choice)
                move[i] = o
                plan = self.plan(move)
                if plan in self.done or (tried is not None and tuple(move) in tried) or not (smaller or self.fits(plan)):
                    continue
                best, best_key = move, key
        return best

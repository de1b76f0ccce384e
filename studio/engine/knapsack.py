"""The multiple-choice knapsack behind the search: one option per layer, least damage per byte budget.

Every layer picks one of its options, each with a size in bytes and an estimated
damage; the damages add up. A dynamic programme over byte buckets gives, for every
budget, the least total damage and the choice that reaches it; its distinct choices,
from the smallest to the largest, are the estimated Pareto front. Sizes are rounded
up to the bucket, so a choice never holds more bytes than its bucket says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_BUCKETS = 4096


@dataclass(frozen=True)
class FrontierPoint:
    choice: tuple[int, ...]  # per layer, the index of its option
    bytes: int  # the options' exact bytes added up
    damage: float  # the estimated damage added up


def frontier(sizes: Sequence[Sequence[int]], damages: Sequence[Sequence[float]], buckets: int = DEFAULT_BUCKETS) -> list[FrontierPoint]:
    """The least-damage choice for every budget, distinct choices from the smallest up."""
    sizes_np = [np.asarray(s, dtype=np.int64) for s in sizes]
    damages_np = [np.asarray(d, dtype=np.float64) for d in damages]
    most = int(sum(int(s.max()) for s in sizes_np))
    unit = max(1, -(-most // buckets))
    k = most // unit + len(sizes_np) + 1
    dp = np.full(k, np.inf)
    dp[0] = 0.0
    picks = []
    for size, damage in zip(sizes_np, damages_np):
        weights = -(-size // unit)
        best = np.full(k, np.inf)
        pick = np.full(k, -1, dtype=np.int32)
        for o, (w, d) in enumerate(zip(weights, damage)):
            cand = np.full(k, np.inf)
            cand[w:] = dp[: k - w] + d
            better = cand < best
            best[better] = cand[better]
            pick[better] = o
        dp = best
        picks.append(pick)
    points = []
    lowest = np.inf
    for budget in range(k):
        if dp[budget] < lowest - 1e-15:
            lowest = dp[budget]
            choice = []
            b = budget
            for pick, size in zip(reversed(picks), reversed(sizes_np)):
                o = int(pick[b])
                choice.append(o)
                b -= int(-(-size[o] // unit))
            choice.reverse()
            exact = sum(int(s[o]) for s, o in zip(sizes_np, choice))
            points.append(FrontierPoint(tuple(choice), exact, float(dp[budget])))
    return points

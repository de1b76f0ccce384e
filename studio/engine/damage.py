"""The search's cost model: per layer and option, its exact bytes and its estimated damage.

Damage is the KL divergence from the float model's outputs to the outputs with that
one layer compressed (averaged over the eval set). It is measured for the options the
sensitivity table probed (a probe with float32 parameters stands for its float16 twin:
rounding the scales to float16 moves a weight by at most 2**-11 of its range); for the others it is the Fisher proxy scaled to the layer's
measured KLs. Then, for a few rounds, every option on a layer's lower convex hull of
(bytes, damage) that is still an estimate is measured as a one-layer probe (from the
last layer to the first, so each pass runs downstream only), because those are the
options a budgeted choice picks. When every option of every layer takes few probes
(``every``: a small model), all are measured instead: estimates of options that combine
bits and pruning can be far off (digits-mlp's fc2 at int3 with 60% pruned measures a KL of
0.013; the layer-scaled proxy says 0.20), and a choice among exact one-layer damages is
better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .plan import LayerSpec, Plan
from .progress import CancelFn, ProgressFn, check
from .proxy import FisherInfo
from .sensitivity import SensitivityTable

HULL_ROUNDS = 3


@dataclass
class OptionTable:
    """Per layer: each option's exact bytes, its damage, and whether that damage was measured."""

    names: list[str]
    options: list[LayerSpec]
    sizes: list[list[int]] = field(default_factory=list)
    damages: list[list[float]] = field(default_factory=list)
    measured: list[list[bool]] = field(default_factory=list)
    probes: int = 0  # one-layer probes measured for the hull

    def fill_sizes(self, session: Any, huffman: bool, cancel: CancelFn | None, progress: ProgressFn | None) -> None:
        for i, name in enumerate(self.names):
            row = []
            for spec in self.options:
                check(cancel)
                row.append(session.compressed(name, spec, huffman).size.total)
            self.sizes.append(row)
            if progress is not None:
                progress(i + 1, len(self.names))

    def smallest(self) -> list[LayerSpec]:
        return [self.options[int(np.argmin(row))] for row in self.sizes]


def estimate(session: Any, table: SensitivityTable, options: OptionTable, fisher: FisherInfo, huffman: bool) -> None:
    """Measured KL where the table probed an option; the layer-scaled proxy elsewhere."""
    probed = {(e.layer, e.spec): float(e.kl) for e in table.entries if e.kl is not None}
    measured = {(name, spec): kl for (name, probe), kl in probed.items() for spec in _twins(probe)}
    measured.update(probed)
    proxies = [[_proxy(session, fisher, name, spec, huffman) for spec in options.options] for name in options.names]
    scales = []
    for name, row in zip(options.names, proxies):
        pairs = [(measured[(name, spec)], p) for spec, p in zip(options.options, row) if (name, spec) in measured]
        kl, proxy = sum(k for k, _ in pairs), sum(p for _, p in pairs)
        scales.append(kl / proxy if proxy > 0 and kl > 0 else math.nan)
    finite = [s for s in scales if math.isfinite(s)]
    fallback = float(np.median(finite)) if finite else 1.0
    for name, row, scale in zip(options.names, proxies, scales):
        scale = scale if math.isfinite(scale) else fallback
        damages, known = [], []
        for spec, p in zip(options.options, row):
            if spec.is_float:
                damages.append(0.0)
                known.append(True)
            elif (name, spec) in measured:
                damages.append(max(measured[(name, spec)], 0.0))
                known.append(True)
            else:
                damages.append(scale * p)
                known.append(False)
        options.damages.append(damages)
        options.measured.append(known)


def _twins(spec: LayerSpec) -> tuple[LayerSpec, ...]:
    """The spec with each parameter dtype."""
    return tuple(spec.replace(param_dtype=d) for d in ("float32", "float16"))


def _proxy(session: Any, fisher: FisherInfo, name: str, spec: LayerSpec, huffman: bool) -> float:
    if spec.is_float:
        return 0.0
    w = session.compressed(name, spec, huffman)
    return fisher.damage(name, w.float_view, w.dequant_view)


def lower_hull(sizes: list[int], damages: list[float]) -> list[int]:
    """Indices of the options on the lower convex hull of (bytes, damage), smallest first."""
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i], damages[i]))
    pareto: list[int] = []
    for i in order:
        if not pareto or damages[i] < damages[pareto[-1]]:
            if pareto and sizes[i] == sizes[pareto[-1]]:
                pareto.pop()
            pareto.append(i)
    hull: list[int] = []
    for i in pareto:
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            cross = (sizes[b] - sizes[a]) * (damages[i] - damages[a]) - (damages[b] - damages[a]) * (sizes[i] - sizes[a])
            if cross <= 0:
                hull.pop()
            else:
                break
        hull.append(i)
    return hull


def measure_hulls(
    session: Any, options: OptionTable, huffman: bool, rounds: int = HULL_ROUNDS,
    progress: ProgressFn | None = None, cancel: CancelFn | None = None, every: bool = False,
) -> None:
    """Measure the estimated options on each layer's hull, until the hulls hold only measured ones
    (``every``: every option, in one round)."""
    for r in range(1 if every else rounds):
        todo = [
            (i, o)
            for i in reversed(range(len(options.names)))
            for o in (range(len(options.sizes[i])) if every else lower_hull(options.sizes[i], options.damages[i]))
            if not options.measured[i][o]
        ]
        if not todo:
            break
        for n, (i, o) in enumerate(todo):
            check(cancel)
            plan = Plan(huffman=huffman).with_layer(options.names[i], options.options[o])
            report = session.evaluate(plan, cancel=cancel)
            options.damages[i][o] = max(report.fidelity.kl, 0.0) if report.fidelity is not None else options.damages[i][o]
            options.measured[i][o] = True
            options.probes += 1
            if progress is not None:
                progress(r * 1000 + (1000 * (n + 1)) // len(todo), (1 if every else rounds) * 1000)

"""Per-layer sensitivity: what each layer costs in metric, and saves in bytes, per setting.

``sensitivity(session)`` probes every layer with every setting (by default 2, 3, 4, 6
and 8 bits, and 25/50/75% pruning), one layer changed from the base plan at a time.

- ``mode="measured"`` evaluates each probe on the eval set. The probes run from the
  last layer to the first, all settings of a layer together, so each pass re-runs
  only what lies downstream of the probed layer (the session's incremental runner);
  each entry is exactly what ``session.evaluate`` reports for the probe plan.
- ``mode="proxy"`` runs no probe: it ranks by the Fisher-weighted weight error
  (``proxy.py``), from a few backward passes on the float model.

``spearman``/``rank_agreement`` say how well the two rankings agree.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import StudioError
from .metrics import paired_delta_stderr, top1_correct
from .plan import INT_BITS, MAX_PRUNE, LayerSpec, Plan
from .progress import CancelFn, ProgressFn, check, report
from .proxy import FisherInfo, fisher_diagonal
from .report import Z95

DEFAULT_BITS = (2, 3, 4, 6, 8)
DEFAULT_PRUNE = (0.25, 0.5, 0.75)
MODES = ("measured", "proxy")


@dataclass(frozen=True)
class Setting:
    """One probe: changes applied to a layer's spec in the base plan (e.g. bits=4)."""

    label: str
    changes: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, **changes: Any) -> Setting:
        label = ", ".join(f"{k}={v}" for k, v in sorted(changes.items()))
        return cls(label, tuple(sorted(changes.items())))

    def apply(self, spec: LayerSpec) -> LayerSpec:
        return spec.replace(**dict(self.changes))

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "changes": dict(self.changes)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Setting:
        return cls(str(data["label"]), tuple(sorted(dict(data["changes"]).items())))


def make_settings(bits: Iterable[Any] = DEFAULT_BITS, prune: Iterable[Any] = DEFAULT_PRUNE) -> tuple[Setting, ...]:
    """The probe settings; a StudioError says what is wrong with a bit width or prune ratio."""
    out = []
    for b in bits or ():
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or int(b) not in INT_BITS + (16,):
            raise StudioError(f"sensitivity bits must be integers in 2..8 or 16; got {b!r}")
        out.append(Setting.of(bits=int(b)))
    for p in prune or ():
        if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)) or not 0 < float(p) <= MAX_PRUNE:
            raise StudioError(f"sensitivity prune ratios must be fractions in (0, {MAX_PRUNE}], e.g. 0.5; got {p!r}")
        out.append(Setting.of(prune=float(p)))
    if not out:
        raise StudioError("give at least one bit width or prune ratio to probe")
    if len({s.label for s in out}) != len(out):
        raise StudioError("the probe settings repeat a bit width or prune ratio")
    return tuple(out)


@dataclass(frozen=True)
class SensitivityEntry:
    """One probe: ``layer`` changed by ``setting`` from the base plan.

    metric, delta (against the base plan), delta_stderr (paired, against the base plan),
    within_noise and kl (to the float model) are measured; None in proxy mode.
    proxy is the Fisher estimate of the loss added (nats); None in measured mode.
    """

    layer: str
    setting: str
    spec: LayerSpec
    size_bytes: int  # the whole model under the probe plan
    layer_bytes: int
    bytes_saved: int  # base plan's size minus the probe plan's size
    sqnr_db: float | None  # None: the stored weight is exact
    metric: float | None = None
    delta: float | None = None
    delta_stderr: float | None = None
    within_noise: bool | None = None
    kl: float | None = None
    proxy: float | None = None
    computed_fraction: float | None = None  # share of the module calls the probe's pass ran

    @property
    def drop(self) -> float | None:
        return None if self.delta is None else -self.delta

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["spec"] = self.spec.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SensitivityEntry:
        data = dict(data)
        data["spec"] = LayerSpec.from_dict(data["spec"])
        return cls(**data)


@dataclass(frozen=True)
class SensitivityTable:
    """Layers x settings. ``entries`` are in layer order, then setting order."""

    mode: str
    metric_name: str
    base: Plan
    base_metric: float | None  # measured mode only
    baseline_metric: float  # the float model's
    base_size_bytes: int
    float_size_bytes: int
    layers: tuple[str, ...]
    settings: tuple[Setting, ...]
    entries: tuple[SensitivityEntry, ...]
    seconds: float
    forward_passes: float | None = None  # probes' computed module calls / calls of a full pass (measured mode)
    forward_seconds: float | None = None  # the probes' time running the model (measured mode)
    proxy_loss: str | None = None  # proxy mode: the loss the Fisher was taken of

    def entry(self, layer: str, setting: str) -> SensitivityEntry:
        for e in self.entries:
            if e.layer == layer and e.setting == setting:
                return e
        raise StudioError(f"no probe of {layer!r} with {setting!r}; layers {list(self.layers)}, settings {[s.label for s in self.settings]}")

    def grid(self, field: str) -> list[list[Any]]:
        """``field`` of every entry as rows (layers) by columns (settings), for a heatmap."""
        n = len(self.settings)
        values = [getattr(e, field) for e in self.entries]
        return [values[i * n : (i + 1) * n] for i in range(len(self.layers))]

    def layer_scores(self) -> dict[str, float]:
        """Per layer, how sensitive it is: the mean metric drop over the settings (measured),
        or the mean proxy (proxy mode). Higher is more sensitive."""
        field = "delta" if self.mode == "measured" else "proxy"
        sign = -1.0 if field == "delta" else 1.0
        scores = {}
        for layer, row in zip(self.layers, self.grid(field)):
            values = [sign * v for v in row if v is not None and math.isfinite(v)]
            scores[layer] = float(np.mean(values)) if values else math.nan
        return scores

    def ranking(self) -> list[str]:
        """Layers from the most to the least sensitive."""
        scores = self.layer_scores()
        return sorted(self.layers, key=lambda name: (-scores[name], self.layers.index(name)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "metric_name": self.metric_name,
            "base": self.base.to_dict(),
            "base_metric": self.base_metric,
            "baseline_metric": self.baseline_metric,
            "base_size_bytes": self.base_size_bytes,
            "float_size_bytes": self.float_size_bytes,
            "layers": list(self.layers),
            "settings": [s.to_dict() for s in self.settings],
            "entries": [e.to_dict() for e in self.entries],
            "seconds": self.seconds,
            "forward_passes": self.forward_passes,
            "forward_seconds": self.forward_seconds,
            "proxy_loss": self.proxy_loss,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SensitivityTable:
        data = dict(data)
        data["base"] = Plan.from_dict(data["base"])
        data["layers"] = tuple(data["layers"])
        data["settings"] = tuple(Setting.from_dict(s) for s in data["settings"])
        data["entries"] = tuple(SensitivityEntry.from_dict(e) for e in data["entries"])
        return cls(**data)


# -- ranking agreement ---------------------------------------------------------------------
def _ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks from 1, ties given their average rank."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    if len(a) != len(b) or len(a) < 2:
        raise StudioError("Spearman's correlation needs two sequences of the same length, at least 2")
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def rank_agreement(measured: SensitivityTable, proxy: SensitivityTable) -> dict[str, float]:
    """How well the proxy ranks what the measured table ranks: Spearman over the layers'
    scores and over every (layer, setting) entry (measured drop against proxy)."""
    if measured.layers != proxy.layers or [s.label for s in measured.settings] != [s.label for s in proxy.settings]:
        raise StudioError("the two tables must probe the same layers with the same settings")
    m, p = measured.layer_scores(), proxy.layer_scores()
    pairs = [(-(e.delta or 0.0), q.proxy or 0.0) for e, q in zip(measured.entries, proxy.entries)]
    return {
        "layers": spearman([m[n] for n in measured.layers], [p[n] for n in measured.layers]) if len(m) > 1 else math.nan,
        "entries": spearman([x for x, _ in pairs], [y for _, y in pairs]),
    }


# -- measuring --------------------------------------------------------------------------------
def _flags(session: Any, outputs: list[torch.Tensor], reference: list[torch.Tensor] | None) -> torch.Tensor:
    """Per-sample correctness, as the default metric scores it."""
    if session.has_targets or reference is None:
        return torch.cat([top1_correct(o, t.cpu()) for o, (_, t) in zip(outputs, session.batches())])
    return torch.cat([(r.argmax(-1) == o.argmax(-1)).flatten() for r, o in zip(reference, outputs)])


class _Prober:
    """Runs probes on one session against one base plan."""

    def __init__(self, session: Any, base: Plan, cancel: CancelFn | None) -> None:
        self.session = session
        self.base = base
        self.cancel = cancel
        self.float_base = base == Plan()
        self.reference = None
        if not self.float_base and not session.has_targets:
            self.reference = session.outputs(Plan(), cancel=cancel)
        self.base_report = session.evaluate(base, cancel=cancel)
        self.base_flags = None
        if not self.float_base and self.base_report.delta_stderr is not None:
            self.base_flags = _flags(session, session.outputs(base, cancel=cancel), self.reference)
        self.forward_seconds = 0.0

    def probe(self, layer: str, setting: Setting) -> SensitivityEntry:
        spec = setting.apply(self.base.spec_for(layer))
        plan = self.base.with_layer(layer, spec)
        rep = self.session.evaluate(plan, cancel=self.cancel)
        self.forward_seconds += rep.timing.forward_s if rep.timing is not None else 0.0
        stderr = rep.delta_stderr
        if self.base_flags is not None:
            stderr = paired_delta_stderr(self.base_flags, _flags(self.session, self.session.outputs(plan), self.reference))
        delta = rep.metric - self.base_report.metric
        lr = rep.layers[layer]
        return SensitivityEntry(
            layer=layer, setting=setting.label, spec=spec, size_bytes=rep.size_bytes, layer_bytes=lr.total,
            bytes_saved=self.base_report.size_bytes - rep.size_bytes, sqnr_db=lr.sqnr_db, metric=rep.metric,
            delta=delta, delta_stderr=stderr, within_noise=None if stderr is None else abs(delta) <= Z95 * stderr,
            kl=rep.fidelity.kl if rep.fidelity is not None else None,
            computed_fraction=rep.timing.computed_fraction if rep.timing is not None else None,
        )


def measure_layers(
    session: Any,
    base: Plan,
    layers: Sequence[str],
    settings: Sequence[Setting],
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> tuple[float, int, list[SensitivityEntry], float]:
    """Measured probes of ``layers`` on ``session``: (base metric, base size, entries, seconds running the model).

    The probes run from the last layer to the first, all settings of a layer together.
    ``progress`` counts probes, after the base evaluation."""
    total = len(layers) * len(settings) + 1
    report(progress, 0, total)
    prober = _Prober(session, base, cancel)
    report(progress, 1, total)
    order = sorted(layers, key=session.layer_names.index, reverse=True)
    entries = []
    for layer in order:
        for setting in settings:
            check(cancel)
            entries.append(prober.probe(layer, setting))
            report(progress, len(entries) + 1, total)
    return float(prober.base_report.metric or 0.0), prober.base_report.size_bytes, entries, prober.forward_seconds


def _proxy_entries(session: Any, base: Plan, layers: Sequence[str], settings: Sequence[Setting], fisher: FisherInfo) -> tuple[int, list[SensitivityEntry]]:
    base_size = session.size(base).size_bytes
    entries = []
    for layer in layers:
        for setting in settings:
            spec = setting.apply(base.spec_for(layer))
            plan = base.with_layer(layer, spec)
            rep = session.size(plan)
            weight = session.compressed(layer, spec, plan.huffman)
            lr = rep.layers[layer]
            entries.append(SensitivityEntry(
                layer=layer, setting=setting.label, spec=spec, size_bytes=rep.size_bytes, layer_bytes=lr.total,
                bytes_saved=base_size - rep.size_bytes, sqnr_db=lr.sqnr_db,
                proxy=fisher.damage(layer, weight.float_view, weight.dequant_view),
            ))
    return base_size, entries


def _check_base(session: Any, base: Plan | None) -> Plan:
    if base is None:
        return Plan()
    if not isinstance(base, Plan):
        raise StudioError(f"base must be a studio.Plan (or None for the float model); got {type(base).__name__}")
    base.check_names(session.layer_names)
    return base


def sensitivity(
    session: Any,
    bits: Iterable[int] = DEFAULT_BITS,
    prune: Iterable[float] = DEFAULT_PRUNE,
    base: Plan | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    executor: Any = None,
    *,
    mode: str = "measured",
    layers: Sequence[str] | None = None,
    seed: int = 0,
) -> SensitivityTable:
    """Probe every layer (or ``layers``) with every setting, one layer changed from ``base``
    (default: the float model) at a time.

    executor: None (or "local") runs here, in order, which is fastest with incremental
    evaluation; a ``concurrent.futures.Executor`` or ``"ray"`` fans the layers out in
    chunks, each worker building its own session once (measured mode only).
    seed: seeds the proxy's sampled labels (used when the eval data has no labels).
    """
    if mode not in MODES:
        raise StudioError(f"mode must be one of {list(MODES)}; got {mode!r}")
    settings = make_settings(bits, prune)
    base = _check_base(session, base)
    names = list(session.layer_names if layers is None else layers)
    for name in names:
        session.layer(name)
    if not names:
        raise StudioError("give at least one layer to probe")
    names = sorted(set(names), key=session.layer_names.index)
    start = time.perf_counter()
    if mode == "proxy":
        if executor not in (None, "local"):
            raise StudioError("the proxy runs a few backward passes on one machine; use executor=None with mode='proxy'")
        fisher = fisher_diagonal(session, seed=seed, progress=progress, cancel=cancel)
        base_size, entries = _proxy_entries(session, base, names, settings, fisher)
        return SensitivityTable(
            mode="proxy", metric_name=session.metric_name, base=base, base_metric=None, baseline_metric=session.baseline_metric,
            base_size_bytes=base_size, float_size_bytes=session.float_size_bytes, layers=tuple(names), settings=tuple(settings),
            entries=tuple(entries), seconds=time.perf_counter() - start, proxy_loss=fisher.loss,
        )
    if executor in (None, "local"):
        base_metric, base_size, entries, forward_s = measure_layers(session, base, names, settings, progress, cancel)
    else:
        from .executors import measure_distributed

        base_metric, base_size, entries, forward_s = measure_distributed(session, base, names, settings, executor, progress, cancel)
    order = {(name, s.label): (i, j) for i, name in enumerate(names) for j, s in enumerate(settings)}
    entries = sorted(entries, key=lambda e: order[(e.layer, e.setting)])
    fractions = [e.computed_fraction for e in entries if e.computed_fraction is not None]
    return SensitivityTable(
        mode="measured", metric_name=session.metric_name, base=base, base_metric=base_metric, baseline_metric=session.baseline_metric,
        base_size_bytes=base_size, float_size_bytes=session.float_size_bytes, layers=tuple(names), settings=tuple(settings),
        entries=tuple(entries), seconds=time.perf_counter() - start,
        forward_passes=float(sum(fractions)) if fractions else None, forward_seconds=forward_s,
    )

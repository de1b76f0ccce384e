"""What a sensitivity run returns: probe settings, entries, the table, and rank agreement.

Plain frozen dataclasses with ``to_dict``/``from_dict``; ``SensitivityTable.grid`` lays an
entry field out as layers by settings, for a heatmap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import StudioError
from .plan import INT_BITS, MAX_PRUNE, LayerSpec, Plan

DEFAULT_BITS = (2, 3, 4, 6, 8)
DEFAULT_PRUNE = (0.25, 0.5, 0.75)


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
    stacked says how many probes shared the probe's pass (``stacked.py``), and
    unstacked_because why it had a pass of its own, when it did.
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
    computed_fraction: float | None = None  # share of a full pass's module calls the probe ran (a stacked pass's split evenly)
    stacked: int = 1  # probes of this layer that ran together in one stacked pass (1: a pass of its own)
    unstacked_because: str | None = None  # measured mode: why the probe ran in a pass of its own

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

    def unstacked(self) -> dict[str, int]:
        """Why probes ran in passes of their own, with how many did (empty when every probe ran stacked)."""
        reasons: dict[str, int] = {}
        for e in self.entries:
            if e.stacked == 1 and e.unstacked_because:
                reasons[e.unstacked_because] = reasons.get(e.unstacked_because, 0) + 1
        return reasons

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

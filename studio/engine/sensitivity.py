"""Per-layer sensitivity: what each layer costs in metric, and saves in bytes, per setting.

``sensitivity(session)`` probes every layer with every setting (by default 2, 3, 4, 6
and 8 bits, and 25/50/75% pruning), one layer changed from the base plan at a time.

- ``mode="measured"`` evaluates each probe on the eval set. The probes run from the
  last layer to the first, all settings of a layer together, so each pass re-runs
  only what lies downstream of the probed layer (the session's incremental runner).
  The settings of a layer share one pass, stacked along the batch (``stacked.py``):
  what lies downstream runs once for all of them. Sizes are exactly what
  ``session.evaluate`` reports for the probe plan; metrics are too, but for the last
  float bits a larger batch can change in the downstream layers' arithmetic. Where the
  settings cannot be stacked, each probe is a ``session.evaluate`` of its own, and
  the entry says why (``unstacked_because``).
- ``mode="proxy"`` runs no probe: it ranks by the Fisher-weighted weight error
  (``proxy.py``), from a few backward passes on the float model.

The results (``SensitivityTable``) and ``spearman``/``rank_agreement``, which say how well
the two rankings agree, live in ``sensitivity_table.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from .errors import StudioError
from .metrics import paired_delta_stderr, top1_correct
from .plan import LayerSpec, Plan
from .progress import CancelFn, ProgressFn, check, report
from .proxy import FisherInfo, fisher_diagonal
from .report import Z95, Report
from .sensitivity_table import (
    DEFAULT_BITS,
    DEFAULT_PRUNE,
    SensitivityEntry,
    SensitivityTable,
    Setting,
    make_settings,
    rank_agreement,
    spearman,
)
from .stacked import STACK_BYTES, Unstackable, group_size, run_stacked

__all__ = [
    "DEFAULT_BITS", "DEFAULT_PRUNE", "MODES", "SensitivityEntry", "SensitivityTable", "Setting",
    "make_settings", "measure_layers", "rank_agreement", "sensitivity", "spearman",
]

MODES = ("measured", "proxy")


# -- measuring --------------------------------------------------------------------------------
def _flags(session: Any, outputs: list[torch.Tensor], reference: list[torch.Tensor] | None) -> torch.Tensor:
    """Per-sample correctness, as the default metric scores it."""
    if session.has_targets or reference is None:
        return torch.cat([top1_correct(o, t.cpu()) for o, (_, t) in zip(outputs, session.batches())])
    return torch.cat([(r.argmax(-1) == o.argmax(-1)).flatten() for r, o in zip(reference, outputs)])


class _Prober:
    """Runs probes on one session against one base plan."""

    def __init__(self, session: Any, base: Plan, cancel: CancelFn | None, stack_bytes: int = STACK_BYTES) -> None:
        self.session = session
        self.base = base
        self.cancel = cancel
        self.stack_bytes = stack_bytes
        self.unstackable = "" if stack_bytes > 0 else "stacking was turned off (stack_bytes=0)"
        self.float_base = base == Plan()
        self.reference = None
        if not self.float_base and not session.has_targets:
            self.reference = session.outputs(Plan(), cancel=cancel)
        self.base_report = session.evaluate(base, cancel=cancel)
        self.base_flags = None
        if not self.float_base and self.base_report.delta_stderr is not None:
            self.base_flags = _flags(session, session.outputs(base, cancel=cancel), self.reference)
        self.forward_seconds = 0.0

    def probe_layer(self, layer: str, settings: Sequence[Setting]) -> Iterator[list[SensitivityEntry]]:
        """Every setting of ``layer``, a group at a time: stacked where it can be, else one probe per pass."""
        reason = self.unstackable or ("only one setting to probe" if len(settings) < 2 else "")
        done = 0
        if not reason:
            try:
                size = group_size(self.session, len(settings), self.stack_bytes)
                if size < 2:
                    raise Unstackable(f"two settings stacked would hold more than stack_bytes={self.stack_bytes} in one activation", model_wide=True)
                while done < len(settings):
                    check(self.cancel)
                    group = self._stacked(layer, settings[done : done + size])
                    done += len(group)
                    yield group
            except Unstackable as exc:
                reason = exc.reason if exc.model_wide else f"{layer}: {exc.reason}"
                if exc.model_wide:
                    self.unstackable = exc.reason
        for setting in settings[done:]:
            check(self.cancel)
            yield [self.probe(layer, setting, reason)]

    def _stacked(self, layer: str, settings: Sequence[Setting]) -> list[SensitivityEntry]:
        specs = [setting.apply(self.base.spec_for(layer)) for setting in settings]
        plans = [self.base.with_layer(layer, spec) for spec in specs]
        run = run_stacked(self.session, self.base, layer, plans, self.cancel)
        self.forward_seconds += run.forward_s
        fraction = run.computed / run.calls / len(plans) if run.calls else None
        entries = []
        for setting, spec, plan, outputs in zip(settings, specs, plans, run.outputs):
            score = self.session.score(outputs)
            entries.append(self._entry(
                layer, setting, spec, plan, self.session.size(plan), score.metric, score.delta_stderr, score.fidelity.kl,
                fraction, len(plans), None, outputs,
            ))
        return entries

    def probe(self, layer: str, setting: Setting, reason: str | None = None) -> SensitivityEntry:
        """One probe, in a pass of its own (``reason``: why it was not stacked)."""
        spec = setting.apply(self.base.spec_for(layer))
        plan = self.base.with_layer(layer, spec)
        rep = self.session.evaluate(plan, cancel=self.cancel)
        self.forward_seconds += rep.timing.forward_s if rep.timing is not None else 0.0
        return self._entry(
            layer, setting, spec, plan, rep, rep.metric, rep.delta_stderr, rep.fidelity.kl if rep.fidelity is not None else None,
            rep.timing.computed_fraction if rep.timing is not None else None, 1, reason, None,
        )

    def _entry(
        self, layer: str, setting: Setting, spec: LayerSpec, plan: Plan, rep: Report, metric: float | None, stderr: float | None,
        kl: float | None, fraction: float | None, stacked: int, reason: str | None, outputs: list[torch.Tensor] | None,
    ) -> SensitivityEntry:
        if self.base_flags is not None:
            outputs = outputs if outputs is not None else self.session.outputs(plan)
            stderr = paired_delta_stderr(self.base_flags, _flags(self.session, outputs, self.reference))
        delta = (metric or 0.0) - (self.base_report.metric or 0.0)
        lr = rep.layers[layer]
        return SensitivityEntry(
            layer=layer, setting=setting.label, spec=spec, size_bytes=rep.size_bytes, layer_bytes=lr.total,
            bytes_saved=self.base_report.size_bytes - rep.size_bytes, sqnr_db=lr.sqnr_db, metric=metric,
            delta=delta, delta_stderr=stderr, within_noise=None if stderr is None else abs(delta) <= Z95 * stderr,
            kl=kl, computed_fraction=fraction, stacked=stacked, unstacked_because=reason,
        )


def measure_layers(
    session: Any,
    base: Plan,
    layers: Sequence[str],
    settings: Sequence[Setting],
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    stack_bytes: int = STACK_BYTES,
) -> tuple[float, int, list[SensitivityEntry], float]:
    """Measured probes of ``layers`` on ``session``: (base metric, base size, entries, seconds running the model).

    The probes run from the last layer to the first, the settings of a layer stacked along
    the batch in one pass (``stacked.py``) where they can be, within ``stack_bytes``.
    ``progress`` counts probes, after the base evaluation."""
    total = len(layers) * len(settings) + 1
    report(progress, 0, total)
    prober = _Prober(session, base, cancel, stack_bytes)
    report(progress, 1, total)
    order = sorted(layers, key=session.layer_names.index, reverse=True)
    entries: list[SensitivityEntry] = []
    for layer in order:
        for group in prober.probe_layer(layer, settings):
            entries += group
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
    stack_bytes: int = STACK_BYTES,
) -> SensitivityTable:
    """Probe every layer (or ``layers``) with every setting, one layer changed from ``base``
    (default: the float model) at a time.

    executor: None (or "local") runs here, in order, which is fastest with incremental
    evaluation; a ``concurrent.futures.Executor`` or ``"ray"`` fans the layers out in
    chunks, each worker building its own session once (measured mode only).
    seed: seeds the proxy's sampled labels (used when the eval data has no labels).
    stack_bytes: the largest activation a stacked pass may hold (a layer's settings are
    split into groups to stay under it); 0 gives every probe a pass of its own.
    """
    if mode not in MODES:
        raise StudioError(f"mode must be one of {list(MODES)}; got {mode!r}")
    if isinstance(stack_bytes, bool) or not isinstance(stack_bytes, int) or stack_bytes < 0:
        raise StudioError(f"stack_bytes must be a whole number of bytes, 0 or more (0: no stacking); got {stack_bytes!r}")
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
        base_metric, base_size, entries, forward_s = measure_layers(session, base, names, settings, progress, cancel, stack_bytes)
    else:
        from .executors import measure_distributed

        base_metric, base_size, entries, forward_s = measure_distributed(session, base, names, settings, executor, progress, cancel, stack_bytes)
    order = {(name, s.label): (i, j) for i, name in enumerate(names) for j, s in enumerate(settings)}
    entries = sorted(entries, key=lambda e: order[(e.layer, e.setting)])
    fractions = [e.computed_fraction for e in entries if e.computed_fraction is not None]
    return SensitivityTable(
        mode="measured", metric_name=session.metric_name, base=base, base_metric=base_metric, baseline_metric=session.baseline_metric,
        base_size_bytes=base_size, float_size_bytes=session.float_size_bytes, layers=tuple(names), settings=tuple(settings),
        entries=tuple(entries), seconds=time.perf_counter() - start,
        forward_passes=float(sum(fractions)) if fractions else None, forward_seconds=forward_s,
    )

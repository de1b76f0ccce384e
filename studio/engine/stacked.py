"""Stacked probes: several settings of one layer in one downstream pass, along the batch.

Every probe of a layer changes that layer only, so everything upstream of it is the same
for all its settings. A stacked pass runs the model on the eval batch tiled S times
(S settings): each module call before the layer hands back its kept output (the
incremental runner's) tiled S times, the layer runs once per setting on that setting's
slice of its input, with that setting's weights, and everything downstream runs once on
the S-times-larger batch. The scored output is split back into S chunks, one per probe.
So the module calls downstream of a layer run once for all its settings, not once each.

This relies on the model treating each sample on its own (true of eval-mode models). A
survey (passes of 2 and 3 copies of one sample, once per session) tells which call outputs
carry the batch in dim 0 (tiled) and which do not depend on it (handed back as they are).
Where neither holds, where the module calls depend on the batch size, or the model
quantizes activations dynamically (ranges over the whole batch), probes run one at a time
and the reason is recorded (``Unstackable``). A stacked pass keeps nothing: the runner's
kept outputs and records are left as they were.
"""

from __future__ import annotations

import copy
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .batch_pass import BatchPass
from .data import Inputs, batch_len, call_model, slice_inputs, to_device
from .kept import Entry, _leaves
from .plan import Plan
from .progress import CancelFn, Cancelled, check
from .replay import IncrementalRunner

STACK_BYTES = 512 << 20  # the largest activation a stacked pass may hold: probes are grouped to stay under it

Major = tuple[bool, ...] | None  # per call: for each tensor it returns, whether dim 0 is the batch; None: neither rule holds


class Unstackable(Exception):
    """Why a layer's probes cannot run stacked; ``model_wide`` when no layer of the model can."""

    def __init__(self, reason: str, model_wide: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.model_wide = model_wide


@dataclass(frozen=True)
class Survey:
    """How each module call's outputs depend on the batch, by call index."""

    major: list[Major]
    per_sample_bytes: int  # the largest call output, per sample
    reason: str  # why nothing can be stacked ("" when it can)


def _map_leaves(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``value`` with every tensor replaced by ``fn(tensor)``, in the order ``kept._leaves`` visits them."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (tuple, list)):
        items = [_map_leaves(v, fn) for v in value]
        if type(value) in (tuple, list):
            return type(value)(items)
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if isinstance(value, Mapping):  # dicts, and Hugging Face ModelOutput (an OrderedDict)
        try:
            out = copy.copy(value)
            for key, v in value.items():
                out[key] = _map_leaves(v, fn)  # type: ignore[index]
        except TypeError as exc:
            raise Unstackable(f"a module returns a {type(value).__name__} that cannot be rebuilt") from exc
        return out
    return value


def tile(inputs: Inputs, times: int) -> Inputs:
    """Every input tensor repeated ``times`` times along dim 0 (each must have the batch there)."""
    n = batch_len(inputs)

    def rep(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 0 or t.shape[0] != n:
            raise Unstackable("an input tensor does not have the batch in dim 0", model_wide=True)
        return torch.cat([t] * times)

    return _map_leaves(inputs, rep)


class _Recorder(BatchPass):
    """A pass that runs every call and notes the shapes and dtypes of what each returns."""

    def __init__(self, runner: IncrementalRunner) -> None:
        super().__init__(runner, 0, 0, None, lambda counter: None)
        self.keep = False
        self.shapes: list[list[tuple[tuple[int, ...], int]] | None] = []

    def call(self, idx: int, fwd: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        i = self.counter
        self.counter += 1
        self.mods.append(idx)
        self.shapes.append(None)
        out = self.runner._invoke(idx, fwd, args, kwargs)
        leaves: list[torch.Tensor] = []
        if _leaves(out, leaves):  # what the runner can keep, in the order it keeps it
            self.shapes[i] = [(tuple(t.shape), t.element_size()) for t in leaves]
        return out


def _classify(a: list[tuple[tuple[int, ...], int]] | None, b: list[tuple[tuple[int, ...], int]] | None) -> tuple[Major, int]:
    """A call's outputs at 2 and 3 samples: which carry the batch in dim 0, and their bytes per sample."""
    if a is None or b is None or len(a) != len(b):
        return None, 0
    flags, per_sample = [], 0
    for (sa, size), (sb, _) in zip(a, b):
        if sa == sb:
            flags.append(False)
        elif len(sa) == len(sb) > 0 and (sa[0], sb[0]) == (2, 3) and sa[1:] == sb[1:]:
            flags.append(True)
            per_sample += size * int(torch.Size(sa[1:]).numel())
        else:
            return None, 0
    return tuple(flags), per_sample


_SURVEYS: weakref.WeakKeyDictionary[IncrementalRunner, Survey] = weakref.WeakKeyDictionary()


@torch.no_grad()
def survey(runner: IncrementalRunner, input_mode: str) -> Survey:
    """The runner's model surveyed once (cached per runner)."""
    found = _SURVEYS.get(runner)
    if found is None:
        found = _SURVEYS[runner] = _survey(runner, input_mode)
    return found


def _survey(runner: IncrementalRunner, input_mode: str) -> Survey:
    if not runner.enabled:
        return Survey([], 0, runner.reason)
    if any(".quantized.dynamic" in type(mod).__module__ for mod in runner.model.modules()):
        return Survey([], 0, "the model quantizes activations dynamically, over the whole batch")
    if (trace := runner._traces[0]) is None:
        return Survey([], 0, "the model has not run yet")
    one = slice_inputs(runner.batches[0][0], 0, 1)
    shapes = []
    for n in (2, 3):
        rec = _Recorder(runner)
        runner._run = rec
        try:
            call_model(runner.model, to_device(tile(one, n), runner.device), input_mode)
        except Unstackable as exc:
            return Survey([], 0, exc.reason)
        except Exception as exc:  # a model that cannot run on 2 or 3 samples cannot be surveyed
            return Survey([], 0, f"the model did not run on a batch of {n} copies of one sample ({type(exc).__name__})")
        finally:
            runner._run = None
        if rec.mods != trace.mods:
            return Survey([], 0, "the model's module calls depend on the batch size")
        shapes.append(rec.shapes)
    pairs = [_classify(a, b) for a, b in zip(*shapes)]
    return Survey([p[0] for p in pairs], max((p[1] for p in pairs), default=0), "")


class _StackedPass(BatchPass):
    """One eval batch, tiled: replays the runner's kept outputs tiled, runs the probed layer per setting."""

    def __init__(
        self, runner: IncrementalRunner, batch: int, boundary: int, cancel: CancelFn | None,
        major: list[Major], layer_mods: set[int], loads: Sequence[Callable[[], None]], n: int,
    ) -> None:
        super().__init__(runner, batch, boundary, cancel, lambda counter: None)
        self.keep = False
        self.major = major
        self.layer_mods = layer_mods
        self.loads = loads
        self.n = n
        self.load_s = 0.0  # pointing the layer at each setting's weights (outside the forward time, as in evaluate)

    def call(self, idx: int, fwd: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.cancel is not None and self.cancel():
            raise Cancelled("cancelled")
        i, prev = self.counter, self.prev
        if prev is None or i >= len(prev.mods) or prev.mods[i] != idx:
            raise Unstackable("the model's module calls differed from its last pass", model_wide=True)
        if i < self.boundary:
            end = prev.ends[i]
            entry = self.runner._store.get((self.batch, i)) if end <= self.boundary else None
            if entry is not None and entry.intact():
                self.counter = end
                self.replayed += end - i
                return self._tiled(entry, i)
        self.counter += 1
        outer, self.current_module = self.current_module, idx
        try:
            if idx in self.layer_mods:
                return self._per_setting(idx, fwd, args, kwargs)
            self.computed += 1
            return self.runner._invoke(idx, fwd, args, kwargs)
        finally:
            self.current_module = outer

    def _tiled(self, entry: Entry, i: int) -> Any:
        flags = self.major[i] if i < len(self.major) else None
        if flags is None or len(flags) != len(entry.leaves):
            module = self.runner._modules[self.prev.mods[i]] if self.prev is not None else None
            name = next((n for n, m in self.runner.model.named_modules() if m is module), str(i))
            raise Unstackable(f"it needs the output of {name}, whose batch is not in dim 0")
        it = iter(flags)
        s = len(self.loads)
        copied = entry.copied
        return _map_leaves(entry.value, lambda t: torch.cat([t] * s) if next(it) else (t.clone() if copied else t))

    def _per_setting(self, idx: int, fwd: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        n, total = self.n, self.n * len(self.loads)
        if not args or not isinstance(args[0], torch.Tensor) or args[0].dim() == 0 or args[0].shape[0] != total:
            raise Unstackable("its input does not have the batch in dim 0")
        start, outs = self.counter, []
        for k, load in enumerate(self.loads):
            start_load = time.perf_counter()
            load()
            self.load_s += time.perf_counter() - start_load
            self.counter = start  # calls nested in the layer's are numbered alike for every setting

            def part(v: Any, k: int = k) -> Any:
                return v[k * n : (k + 1) * n] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == total else v

            out = self.runner._invoke(idx, fwd, tuple(part(a) for a in args), {key: part(v) for key, v in kwargs.items()})
            if not isinstance(out, torch.Tensor) or out.dim() == 0 or out.shape[0] != n:
                raise Unstackable("its output is not a tensor with the batch in dim 0")
            outs.append(out)
            self.computed += 1
        return torch.cat(outs)


@dataclass(frozen=True)
class StackedRun:
    """The outputs of one stacked pass, per probe plan, and what it ran."""

    outputs: list[list[torch.Tensor]]  # per plan: one tensor per eval batch
    calls: int  # module calls of one full pass over the eval set
    computed: int  # calls the stacked pass ran (the probed layer's once per setting)
    forward_s: float


def group_size(session: Any, settings: int, stack_bytes: int) -> int:
    """How many settings of a layer one stacked pass may hold: its largest activation within ``stack_bytes``."""
    m = session._m
    found = survey(m.runner, m.input_mode)
    if found.reason:
        raise Unstackable(found.reason, model_wide=True)
    n = max(batch_len(x) for x, _ in m.scorer.batches)
    return max(1, min(settings, stack_bytes // max(1, found.per_sample_bytes * n)))


@torch.no_grad()
def run_stacked(session: Any, base: Plan, layer: str, plans: Sequence[Plan], cancel: CancelFn | None = None) -> StackedRun:
    """The outputs of every probe plan (``base`` with ``layer`` changed) from one stacked pass per eval batch."""
    m = session._m
    runner: IncrementalRunner = m.runner
    found = survey(runner, m.input_mode)
    if found.reason:
        raise Unstackable(found.reason, model_wide=True)
    if layer in runner._outside_uses:
        raise Unstackable("its weight is also used outside its own module")
    acts = [m.activation_params(plan) for plan in plans]
    if any(a != acts[0] for a in acts):
        raise Unstackable("the settings quantize its activations differently")
    base_weights = m.compress_all(base, "evaluate", cancel)
    weights = [m.compressed(layer, plan.spec_for(layer), plan.huffman) for plan in plans]
    loads = [lambda w=w: m.prepared.load({layer: w}) for w in weights]
    configs = m.configs(plans[0], acts[0])
    outputs: list[list[torch.Tensor]] = [[] for _ in plans]
    calls = computed = 0
    load_s = 0.0
    with m.lock:
        check(cancel)
        m.prepared.load(base_weights)
        runner._acts = {idx: acts[0][name] for idx, name in runner._layer_of_module.items() if name in acts[0]}
        start = time.perf_counter()
        for b, (inputs, _) in enumerate(runner.batches):
            n = batch_len(inputs)
            run = _StackedPass(runner, b, runner.boundary(b, configs), cancel, found.major, runner._layer_mods[layer], loads, n)
            runner._run = run
            try:
                raw = call_model(runner.model, tile(to_device(inputs, runner.device), len(plans)), m.input_mode)
            finally:
                runner._run = None
            out = runner.pick(raw)
            if out.dim() == 0 or out.shape[0] != n * len(plans):
                raise Unstackable("the scored output does not have the batch in dim 0", model_wide=True)
            for k in range(len(plans)):
                outputs[k].append(out[k * n : (k + 1) * n])
            calls += len(run.prev.mods) if run.prev is not None else run.counter
            computed += run.computed
            load_s += run.load_s
        forward_s = time.perf_counter() - start - load_s
    return StackedRun(outputs, calls, computed, forward_s)


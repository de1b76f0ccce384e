"""Incremental evaluation: after a change, run only what lies downstream of it.

Every module call of the working model is numbered in call order, per eval batch, and
its output may be kept. A pass after a plan change finds the first call that uses a
changed layer (the boundary). Everything called before the boundary saw the same
inputs and the same weights as in the last pass, so a call that both starts and ends
before it can hand back its kept output instead of running; the calls nested inside
it are skipped too. This needs no graph: it works on any eager model, with dict
inputs, residuals or data-dependent control flow, and the outputs are bit-identical
to a full pass by construction.

What is kept is chosen after the first (profiled) pass by a greedy that maximises the compute
skipped, averaged over a change at each layer, within a byte budget less a pass's own working
memory (measured: see ``IncrementalRunner.reserved_bytes``) and what else the budget holds
(``held``: the eval data, weights beyond their allowance; see ``measure.HeldBytes``), so kept
outputs and a pass fit the budget together; when a kind of pass needs more room, or less, or
the rest moved, the choice is made anew.
A kept output that something modified in place afterwards is detected through the
tensors' version counters and never handed back; from then on that call's output is kept
as a private copy and handed back as a fresh copy (a convolution followed by an in-place
ReLU or residual add stays replayable, for the price of a memory copy). Beyond the budget, outputs are
recomputed. TorchScript modules cannot be cut: every pass is a full pass, and the
report says so.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .batch_pass import BatchPass, WeightUses
from .data import Batch, call_model, slice_inputs, to_device
from .hooks import ActPair, quantize_input, quantize_output
from .kept import INF, Entry, Trace, choose_kept
from .memory import PeakSampler, release_free_memory
from .progress import CancelFn, Cancelled, ProgressFn

DEFAULT_BUDGET = 1 << 30
SAMPLED_SHARE = 32  # later passes are measured while some pass was measured to need at least 1/32 of the budget
SAMPLER_SLACK = 8  # the reserve is the measured working memory and 1/8 more (see reserved_bytes)
HELD_SLACK = 32  # the kept calls are chosen anew when what else the budget holds moved by 1/32 of it


@dataclass(frozen=True)
class PassInfo:
    """How one evaluation pass ran."""

    mode: str  # "incremental" or "full"
    reason: str  # why it was a full pass, or notes
    calls: int  # module calls in the pass
    computed: int  # calls that ran
    replayed: int  # calls whose kept output was handed back (nested calls included)


class IncrementalRunner:
    """Runs the working model over the eval batches, downstream of the last change only."""

    def __init__(
        self,
        model: nn.Module,
        layer_modules: Mapping[str, nn.Module],
        batches: list[Batch],
        *,
        input_mode: str,
        device: torch.device,
        pick: Callable[[Any], torch.Tensor],
        budget_bytes: int = DEFAULT_BUDGET,
        held: Callable[[], int] | None = None,
    ) -> None:
        self.model = model
        self.batches = batches
        self.input_mode = input_mode
        self.device = device
        self.pick = pick
        self.budget_bytes = int(budget_bytes)
        self._held = held  # what else the budget holds (the eval data, weights beyond their allowance), asked each pass
        self.held_bytes = held() if held is not None else 0
        self.enabled = not isinstance(model, torch.jit.ScriptModule)
        self.reason = "" if self.enabled else "TorchScript modules cannot be cut, so every pass runs in full"
        self.notes: set[str] = set()
        n = len(batches)
        self._traces: list[Trace | None] = [None] * n
        self._configs: list[Mapping[str, Hashable] | None] = [None] * n
        self._valid: list[int] = [INF] * n
        self._outputs: list[torch.Tensor | None] = [None] * n
        self._store: dict[tuple[int, int], Entry] = {}
        self._bytes = 0
        self._largest = 0  # the largest output of one call
        # the most working memory a pass was measured to use (CPU, Linux), by whether it quantizes activations
        self._working = {False: 0, True: 0}
        self._selected_for = (0, 0)  # the reserve and the room the kept calls were chosen for
        self._selected: set[int] | None = None  # call indices worth keeping; None until profiled
        self._blacklist: set[int] = set()
        self._copied: set[int] = set()  # calls whose output is modified in place later: kept as copies
        self._run: BatchPass | None = None
        self._acts: dict[int, ActPair] = {}
        self._modules: list[nn.Module] = []
        self._layer_of_module: dict[int, str] = {}
        self._layer_mods: dict[str, set[int]] = {}
        self._param_layer: dict[int, str] = {}
        self._outside_uses: set[str] = set()
        self._profile_times: np.ndarray | None = None
        self._profile_sizes = np.zeros(0)
        if self.enabled:
            self._wrap(layer_modules)

    # -- set-up ------------------------------------------------------------------------
    def _wrap(self, layer_modules: Mapping[str, nn.Module]) -> None:
        index = {}
        for name, module in self.model.named_modules():
            if not name or id(module) in index:
                continue
            index[id(module)] = len(self._modules)
            self._modules.append(module)
            module.forward = self._wrapper(index[id(module)], module.forward)
        for layer, module in layer_modules.items():
            weight = module.weight
            self._param_layer[id(weight)] = layer
            self._layer_of_module[index[id(module)]] = layer
            users = {index[id(m)] for m in self.model.modules() if id(m) in index and any(p is weight for p in m._parameters.values())}
            self._layer_mods[layer] = users | {index[id(module)]}

    def _wrapper(self, idx: int, fwd: Callable[..., Any]) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> Any:
            run = self._run
            if run is None:
                return self._invoke(idx, fwd, args, kwargs)
            return run.call(idx, fwd, args, kwargs)

        return forward

    def _invoke(self, idx: int, fwd: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        pair = self._acts.get(idx)
        if pair is None:
            return fwd(*args, **kwargs)
        args = quantize_input(args, pair[0]) or args
        out = fwd(*args, **kwargs)
        quantized = quantize_output(out, pair[1])
        return out if quantized is None else quantized

    # -- keeping outputs ------------------------------------------------------------------
    @property
    def kept_bytes(self) -> int:
        return self._bytes

    def _drop(self, key: tuple[int, int]) -> None:
        entry = self._store.pop(key, None)
        if entry is not None:
            self._bytes -= entry.nbytes

    def _keep(self, run: BatchPass, i: int, out: Any) -> None:
        if not run.keep:
            return
        key = (run.batch, i)
        self._drop(key)
        profiling = self._selected is None
        if i in self._blacklist or not (self._selected is None or i in self._selected):
            return
        entry = Entry.of(out, copy=i in self._copied)
        if entry is None:
            self._blacklist.add(i)
            return
        if profiling:
            run.sizes[i] = entry.nbytes
        self._largest = max(self._largest, entry.nbytes)
        if self._bytes + entry.nbytes > self._limit():
            return
        self._store[key] = entry
        self._bytes += entry.nbytes
        run.refreshed.add(i)

    def release(self) -> None:
        """Drop every kept output (while an exported file runs beside the session, say): the
        next pass runs in full, and keeps them again."""
        self._store.clear()
        self._bytes = 0
        self._valid = [0] * len(self.batches)
        self._outputs = [None] * len(self.batches)

    # -- passes ------------------------------------------------------------------------------
    def boundary(self, batch: int, configs: Mapping[str, Hashable]) -> int:
        """The first call index of ``batch`` that a layer changed since its last pass uses."""
        trace, done = self._traces[batch], self._configs[batch]
        if not self.enabled or trace is None or done is None:
            return 0
        bound = self._valid[batch]
        for layer, config in configs.items():
            if done.get(layer) == config:
                continue
            if layer in self._outside_uses:
                self.notes.add(f"the weight of {layer} is also used outside its own module, so a change to it runs a full pass")
                return 0
            firsts = [trace.first[m] for m in self._layer_mods[layer] if m in trace.first]
            bound = min([bound, *firsts]) if firsts else 0
        return bound

    def run(
        self,
        configs: Mapping[str, Hashable],
        acts: Mapping[str, ActPair],
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> tuple[list[torch.Tensor], PassInfo]:
        """Outputs of the working model (weights already loaded) for every eval batch."""
        self._acts = {idx: acts[layer] for idx, layer in self._layer_of_module.items() if layer in acts}
        if self._held is not None:
            self.held_bytes = self._held()
        if self._stale_choice():
            self._select()  # this kind of pass needs another reserve, or the rest of the budget moved
        self.notes.clear()
        # progress counts module calls when the last pass tells how many there are, else batches
        per_call = all(t is not None for t in self._traces) and self.enabled
        total = sum(len(t.mods) for t in self._traces if t is not None) if per_call else len(self.batches)
        outputs: list[torch.Tensor] = []
        done = 0
        calls = computed = replayed = 0
        last_pct = -1

        def tick(counter: int) -> None:
            nonlocal last_pct
            pct = (100 * (done + counter)) // max(total, 1)
            if progress is not None and per_call and pct != last_pct and done + counter < total:
                last_pct = pct
                progress(done + counter, total)

        for b, (inputs, _) in enumerate(self.batches):
            trace = self._traces[b]
            bound = self.boundary(b, configs)
            cached = self._outputs[b]
            if bound >= INF and cached is not None and trace is not None:  # nothing this batch sees changed
                outputs.append(cached)
                calls += len(trace.mods)
                replayed += len(trace.mods)
            else:
                if cancel is not None and cancel():
                    raise Cancelled("cancelled")
                run = self._run_batch(b, bound, inputs, configs, cancel, tick)
                outputs.append(self._outputs[b])  # type: ignore[arg-type]
                calls += len(run.mods)
                computed += run.computed
                replayed += run.replayed
            done += (len(trace.mods) if trace is not None else 0) if per_call else 1
            if progress is not None and not per_call:
                progress(done, total)
        if progress is not None and per_call:
            progress(total, total)
        if self._selected is None and self.enabled:
            self._select()
        mode = "incremental" if self.enabled and replayed > 0 else "full"
        reasons = ([self.reason] if self.reason else []) + sorted(self.notes)
        return outputs, PassInfo(mode, "; ".join(reasons), calls, computed, replayed)

    def _find_outside_uses(self, inputs: Any) -> None:
        """Run two samples once, watching every op, to find weights used outside their own module.

        A separate pass: a TorchFunctionMode can change which kernels some modules pick
        (e.g. attention's fast path), so nothing it computes is kept or scored."""
        run = BatchPass(self, 0, 0, None, lambda counter: None)
        run.keep = False
        self._run = run
        try:
            with torch.no_grad(), WeightUses(self):
                call_model(self.model, to_device(slice_inputs(inputs, 0, 2), self.device), self.input_mode)
        finally:
            self._run = None

    def _run_batch(
        self, b: int, bound: int, inputs: Any, configs: Mapping[str, Hashable], cancel: CancelFn | None, tick: Callable[[int], None]
    ) -> BatchPass:
        if self._selected is None and self.enabled and b == 0:
            self._find_outside_uses(inputs)
            release_free_memory()  # freed heap pages would hide the pass's working memory from the sampler
        self._let_go(b, bound)
        run = BatchPass(self, b, bound, cancel, tick)
        self._run = run
        sampler = PeakSampler(lambda: self._bytes) if self._sampling() else nullcontext()
        try:
            with torch.no_grad(), sampler:
                raw = call_model(self.model, to_device(inputs, self.device), self.input_mode)
            out = self.pick(raw)
        except BaseException:
            self._abort(b, run.boundary)
            raise
        finally:
            self._run = None
        self._commit(b, run, configs)
        self._outputs[b] = out
        if self._selected is None:
            self._profile(run)
        peak = sampler.peak if isinstance(sampler, PeakSampler) else None
        kind = bool(self._acts)
        if peak is not None and peak > self._working[kind]:
            self._working[kind] = peak
            if self._stale_choice():
                self._select()  # passes like this one need more room: keep less
        return run

    def _let_go(self, b: int, bound: int) -> None:
        """Before batch ``b`` runs, drop the kept outputs it will compute anew: calls at or past
        the boundary, or ending past it. Freed first, their memory is what the new outputs
        reuse; freed only as each new one arrived, a pass needed room for both, and glibc's heap
        grew by up to a third of a GiB per BERT-base pass, pages it kept until trimmed."""
        trace = self._traces[b]
        ends = trace.ends if trace is not None else []
        for key in [k for k in self._store if k[0] == b and (k[1] >= bound or (k[1] < len(ends) and ends[k[1]] > bound))]:
            self._drop(key)

    def _sampling(self) -> bool:
        """Whether to measure this pass's working memory: on the CPU, in the profiled passes,
        and in later ones while it is a fair part of the budget (a thread per batch costs ~1 ms)."""
        if self.device.type != "cpu":
            return False
        return self._selected is None or max(self._working.values()) * SAMPLED_SHARE >= self.budget_bytes

    @property
    def reserved_bytes(self) -> int:
        """What the budget keeps free for the working memory of a pass of the current plan:
        the most that passes of its kind (activations quantized or not) were measured to use
        (and an eighth more: sampled every 2 ms, the peak reads about 10% below the kernel's
        own, VmHWM reset per batch, on ResNet-18 and ResNet-50),
        the float passes' until a pass that quantizes activations was measured, and at least
        twice the largest output of one call (all there is where nothing can be measured: no
        ``/proc``, or a GPU)."""
        measured = (self._working[True] if self._acts else 0) or self._working[False]
        return max(measured + measured // SAMPLER_SLACK, 2 * self._largest)

    def _limit(self) -> int:
        """What kept outputs may take now: the room, or the room the kept calls were chosen for
        where that is more (by less than ``HELD_SLACK``'s share, or they would be chosen anew),
        so that the chosen calls late in a pass are kept too."""
        return self.room if self._selected is None else max(self.room, self._selected_for[1])

    @property
    def room(self) -> int:
        """What kept outputs may take: the budget less a pass's working memory and what else it holds."""
        return max(0, self.budget_bytes - self.reserved_bytes - self.held_bytes)

    def _profile(self, run: BatchPass) -> None:
        """Add a profiled pass's call times and output sizes (summed over batches, by call index)."""
        n = len(run.times)
        if self._profile_times is None:
            self._profile_times = np.zeros(n)
            self._profile_sizes = np.zeros(n)
        m = min(n, len(self._profile_times))
        self._profile_times[:m] += np.asarray(run.times[:m])
        for i, size in run.sizes.items():
            if i < m:
                self._profile_sizes[i] += size

    def _commit(self, b: int, run: BatchPass, configs: Mapping[str, Hashable]) -> None:
        for key in [k for k in self._store if k[0] == b and k[1] >= run.boundary and k[1] not in run.refreshed]:
            self._drop(key)  # kept under the old plan and not refreshed: stale
        self._traces[b] = Trace(run.mods, run.ends)
        self._configs[b] = dict(configs)
        self._valid[b] = INF

    def _abort(self, b: int, bound: int) -> None:
        """A pass stopped inside batch ``b``: what it kept past the boundary mixes two plans."""
        for key in [k for k in self._store if k[0] == b and k[1] >= bound]:
            self._drop(key)
        self._valid[b] = min(self._valid[b], bound)
        self._outputs[b] = None

    # -- choosing what to keep ---------------------------------------------------------------
    def _stale_choice(self) -> bool:
        """Whether to choose the kept calls anew: the reserve changed, or the room moved by more
        than 1/``HELD_SLACK`` of the budget (a smaller move is let be: choosing anew for a few
        MB less could drop many kept outputs, the greedy not being monotone)."""
        if self._selected is None:
            return False
        reserve, room = self._selected_for
        return self.reserved_bytes != reserve or abs(self.room - room) > self.budget_bytes // HELD_SLACK

    def _select(self) -> None:
        """Choose the calls to keep within the room, and drop the other kept outputs: after the
        profiled pass, and whenever the choice is stale (``_stale_choice``; calls chosen anew
        are kept as passes compute them)."""
        self._selected_for = (self.reserved_bytes, self.room)
        trace = self._traces[0]
        if trace is None or self._profile_times is None:
            self._selected = set()
            return
        n = min(len(trace.mods), len(self._profile_times))
        boundaries = [min(firsts) for firsts in ([trace.first[m] for m in mods if m in trace.first] for mods in self._layer_mods.values()) if firsts]
        self._selected = choose_kept(
            np.asarray(trace.ends[:n], dtype=np.int64), self._profile_times[:n], self._profile_sizes[:n],
            np.asarray(boundaries, dtype=np.int64), self._blacklist, self.room,
        )
        for key in [k for k in self._store if k[1] not in self._selected]:
            self._drop(key)

    def describe(self) -> dict[str, Any]:
        """What the runner keeps, for reports and benchmarks."""
        return {
            "enabled": self.enabled,
            "kept_calls": 0 if self._selected is None else len(self._selected),
            "kept_bytes": self._bytes,
            "budget_bytes": self.budget_bytes,
            "calls_per_batch": 0 if self._traces[0] is None else len(self._traces[0].mods),
            "reserved_bytes": self.reserved_bytes,  # a pass's own working memory, kept out of the budget
            "held_bytes": self.held_bytes,  # the eval data, and weights beyond their allowance: out of the budget too
            "working_bytes_measured": {"float": self._working[False], "quantized activations": self._working[True]},
        }

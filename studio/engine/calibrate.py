"""Activation calibration: statistics gathered once, quantization parameters chosen once.

The calibration set runs through the float model once for ranges the first time any
plan quantizes activations (or not at all: by default the calibration set is the first
eval batch, whose ranges are gathered during the session's own first float pass), and
once more for histograms the first time a plan's calibration method needs them (every
method but min-max). Those statistics are kept
for the session; the parameters for a (layer, bits, method) are chosen once and
reused by every later plan.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .activations import RANGE_ONLY_METHODS, ActQParams, ActStats, choose_qparams
from .data import Batch, batch_len, call_model, slice_inputs, to_batches, to_device
from .errors import StudioError
from .plan import Plan
from .prepared import PreparedModel
from .progress import ProgressFn

ActPair = tuple[ActQParams | None, ActQParams | None]


CALIBRATION_SAMPLES = 256


class Calibrator:
    """Activation statistics of each layer's input and output over the calibration set."""

    @classmethod
    def for_data(cls, calibration_data: Any, eval_batches: list[Batch], batch_size: int, input_mode: str, device: torch.device) -> Calibrator:
        """Calibrate on ``calibration_data`` (any eval-data form), or by default on the first
        CALIBRATION_SAMPLES eval samples."""
        if calibration_data is None:
            batches: list[Batch] = [(slice_inputs(x, 0, CALIBRATION_SAMPLES), None) for x, _ in eval_batches[:1]]
        else:
            batches = to_batches(calibration_data, batch_size, what="calibration_data")
        # the default set is the whole first eval batch when that has at most CALIBRATION_SAMPLES
        first = calibration_data is None and bool(eval_batches) and batch_len(eval_batches[0][0]) <= CALIBRATION_SAMPLES
        return cls(batches, input_mode, device, is_first_eval_batch=first)

    def __init__(self, batches: list[Batch], input_mode: str, device: torch.device, is_first_eval_batch: bool = False) -> None:
        self.batches = batches
        self.input_mode = input_mode
        self.device = device
        self._stats: dict[tuple[str, str], ActStats] | None = None
        self._histograms = False
        self._params: dict[tuple[str, int, str], ActPair] = {}
        self._lock = threading.Lock()
        self.is_first_eval_batch = is_first_eval_batch  # the calibration set is exactly the first eval batch

    @contextmanager
    def ranges_from(self, prepared: PreparedModel, names: Iterable[str]) -> Iterator[ProgressFn]:
        """While the session's first float pass runs on the working copy, gather the ranges
        from its first batch, where that batch is the whole calibration set (the default
        calibration set, a first batch of at most CALIBRATION_SAMPLES): the calibration then
        costs no pass of its own. Yields the progress callback to give that pass, which stops
        the observing once the first batch is done."""
        if prepared.scripted or not self.is_first_eval_batch or self._stats is not None:
            yield lambda done, total: None
            return
        stats = {(name, side): ActStats() for name in names for side in ("in", "out")}
        modules = {name: prepared.modules[name] for name in names}
        handles = self._install(modules, stats, "observe_range")
        complete = False

        def progress(done: int, total: int) -> None:
            nonlocal complete
            if done >= 1 and handles:
                complete = True
                for handle in handles:
                    handle.remove()
                handles.clear()

        try:
            yield progress
        finally:
            for handle in handles:
                handle.remove()
        if complete:
            with self._lock:
                if self._stats is None:
                    self._stats = {k: v for k, v in stats.items() if v.lo <= v.hi}

    @torch.no_grad()
    def stats(self, prepared: PreparedModel, names: Iterable[str], method: str = "kl") -> dict[tuple[str, str], ActStats]:
        """Each layer's input/output statistics over the calibration set, from a float copy
        of the prepared (folded) model: ranges, and histograms where ``method`` needs them;
        each computed once per session."""
        if prepared.scripted:
            raise StudioError(
                "activation quantization needs an eager PyTorch model (TorchScript modules take no hooks); "
                "load the weights into the architecture (safetensors) or set act_bits=None"
            )
        with self._lock:
            if self._stats is None:
                stats = self._observe(prepared, names, "observe_range", None)
                self._stats = {k: v for k, v in stats.items() if v.lo <= v.hi}
            if method not in RANGE_ONLY_METHODS and not self._histograms:
                self._observe(prepared, dict.fromkeys(name for name, _ in self._stats), "observe_hist", self._stats)
                self._histograms = True
            return self._stats

    def _observe(self, prepared: PreparedModel, names: Iterable[str], phase: str,
                 stats: dict[tuple[str, str], ActStats] | None) -> dict[tuple[str, str], ActStats]:
        """One pass of the calibration set through a float copy, feeding ``phase`` of each stat."""
        model = prepared.float_model(shared=True).to(self.device)
        modules = {name: model.get_submodule(name) for name in names}
        if stats is None:
            stats = {(name, side): ActStats() for name in modules for side in ("in", "out")}
        handles = self._install(modules, stats, phase)
        try:
            for inputs, _ in self.batches:
                call_model(model, to_device(inputs, self.device), self.input_mode)
        finally:
            for handle in handles:
                handle.remove()
        return stats

    def _install(self, modules: dict[str, nn.Module], stats: dict[tuple[str, str], ActStats], phase: str) -> list[RemovableHandle]:
        """Hooks feeding ``phase`` of each layer's input and output stat."""
        handles = []
        for name, module in modules.items():
            if (stat := stats.get((name, "in"))) is not None:
                handles.append(module.register_forward_pre_hook(self._pre(stat, phase)))
            if (stat := stats.get((name, "out"))) is not None:
                handles.append(module.register_forward_hook(self._post(stat, phase)))
        return handles

    @staticmethod
    def _pre(stat: ActStats, phase: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            if args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
                getattr(stat, phase)(args[0].detach())

        return hook

    @staticmethod
    def _post(stat: ActStats, phase: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            if isinstance(out, torch.Tensor):
                getattr(stat, phase)(out.detach())

        return hook

    def params(self, plan: Plan, names: Iterable[str], stats: dict[tuple[str, str], ActStats]) -> dict[str, ActPair]:
        """Per layer with ``act_bits``: the (input, output) activation parameters."""
        out: dict[str, ActPair] = {}
        for name in names:
            bits = plan.spec_for(name).act_bits
            if not bits:
                continue
            key = (name, bits, plan.calibration)
            pair = self._params.get(key)
            if pair is None:
                q_in, q_out = stats.get((name, "in")), stats.get((name, "out"))
                pair = (
                    choose_qparams(q_in, bits, plan.calibration) if q_in is not None else None,
                    choose_qparams(q_out, bits, plan.calibration) if q_out is not None else None,
                )
                self._params[key] = pair
            out[name] = pair
        return out

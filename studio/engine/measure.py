"""The measuring part of a Session: a plan compressed (cached), loaded, run and reported.

A ``Measurer`` holds what a session measures with: the prepared working copy, the
compressed-weight cache, the activation calibrator, the scorer and the incremental
runner. It compresses every layer of a plan, calibrates its activations, installs the
weights under a lock, runs what lies downstream of the change, and turns the results
into a ``Report``. ``Session`` is the public face over it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from functools import partial
from typing import Any

import torch

from .cache import WeightCache
from .calibrate import ActPair, Calibrator
from .compiled import CompressedModel
from .compress import CompressedWeight
from .data import Batch, input_bytes, slice_inputs
from .errors import StudioError
from .formats.studio import container_bytes
from .memory import release_free_memory
from .plan import LayerSpec, Plan
from .prepared import PreparedModel
from .progress import CancelFn, ProgressFn, check
from .replay import IncrementalRunner
from .report import LayerReport, Report, Timing
from .scorer import Scorer
from .workers import on_one_thread, side_by_side

Configs = dict[str, tuple[LayerSpec, ActPair | None]]
WEIGHT_ALLOWANCE = 1.5  # x the float model, besides the user's own: a dequantized working copy, and half again for codes
MIN_CACHE_BYTES = 64 << 20


def default_cache_bytes(float_bytes: int) -> int:
    """The compressed-weight cache's budget unless the user gives one: the float model's bytes,
    at least 64 MiB (a few plans' codes: with half, BERT-base's int8 and deep-compression
    weights no longer fit together, and choosing either again recompressed it). What it holds
    beyond the allowance's half comes out of the activation budget (``HeldBytes``)."""
    return max(float_bytes, MIN_CACHE_BYTES)


class HeldBytes:
    """What the activation budget also has to hold, besides kept outputs and a pass's working
    memory: the eval (and calibration) data, and whatever the session's weights take beyond
    ``WEIGHT_ALLOWANCE`` times the float model: its own copies at their largest plus the codes
    cached now. E.g. ResNet-50's BatchNorm-folded float weights sit beside the user's model and
    the dequantized working copy. So a session holds about 1.5x the float model plus
    ``activation_cache_bytes``, besides the user's model."""

    def __init__(self, prepared: PreparedModel, batches: list[Batch], cache: WeightCache) -> None:
        self.data = input_bytes(batches)
        self.copies = prepared.copies_bytes()
        self.allowance = int(WEIGHT_ALLOWANCE * prepared.float_size_bytes)
        self.cache = cache

    def __call__(self) -> int:
        return self.data + max(0, self.copies + self.cache.nbytes - self.allowance)


class Measurer:
    """Compress, run and report plans on one prepared model and its eval set."""

    def __init__(
        self, prepared: PreparedModel, scorer: Scorer, calibrator: Calibrator, input_mode: str, cache_bytes: int, activation_cache_bytes: int
    ) -> None:
        self.prepared, self.scorer, self.calibrator, self.input_mode = prepared, scorer, calibrator, input_mode
        self.layer_names = [info.name for info in prepared.layers]
        self.cache = WeightCache(cache_bytes)
        self.runner = IncrementalRunner(
            prepared.work, prepared.modules, scorer.batches, input_mode=input_mode, device=prepared.device,
            pick=scorer.pick, budget_bytes=activation_cache_bytes, held=HeldBytes(prepared, [*scorer.batches, *calibrator.batches], self.cache),
        )
        self.lock = threading.RLock()  # the working copy's weights and passes

    def baseline(self) -> list[torch.Tensor]:
        """The float model's outputs (a clear error when the eval data does not fit the model);
        the activation ranges are gathered on the way where the calibration set allows."""
        try:
            with self.calibrator.ranges_from(self.prepared, self.layer_names) as progress:
                return self.runner.run(self.configs(Plan(), {}), {}, progress)[0]
        except (RuntimeError, TypeError, IndexError) as exc:  # what a forward on misfitting data raises
            raise self.prepared.misfit(self.scorer.batches[0][0], exc) from exc

    # -- compressing -------------------------------------------------------------------------
    @staticmethod
    def key(name: str, spec: LayerSpec, huffman: bool) -> tuple[str, LayerSpec, bool]:
        """The cache key of a layer's stored weights: plans that differ only in activations share it."""
        return (name, dataclasses.replace(spec, act_bits=None) if spec.act_bits else spec, huffman)

    def compressed(self, name: str, spec: LayerSpec, huffman: bool, made: CompressedWeight | None = None) -> CompressedWeight:
        """``name``'s weight compressed by ``spec`` (cached; ``made``: already compressed by it)."""
        key = self.key(name, spec, huffman)
        compute = (lambda: made) if made is not None else (lambda: on_one_thread(lambda: self.prepared.compress(name, key[1], huffman)))
        result = self.cache.get(key, compute)
        return result if key[1] is spec else self.prepared.with_activations(name, result, spec)

    def compress_all(self, plan: Plan, pin: str, cancel: CancelFn | None = None) -> dict[str, CompressedWeight]:
        """Every layer compressed under ``plan`` (those not cached side by side: ``workers``);
        the results are pinned in the cache under ``pin``."""
        if not isinstance(plan, Plan):
            raise StudioError(f"expected a studio.Plan; got {type(plan).__name__}")
        plan.check_names(self.layer_names)
        keys = {name: self.key(name, plan.spec_for(name), plan.huffman) for name in self.layer_names}
        missing = [name for name in self.layer_names if keys[name] not in self.cache]
        made = side_by_side(
            {name: partial(self.prepared.compress, name, keys[name][1], plan.huffman) for name in missing},
            cost={name: self.prepared.info[name].params for name in missing}, cancel=cancel,
        )
        if made:  # what the workers freed sits in their own heaps, where a pass cannot reuse it
            release_free_memory()
        results = {}
        for name in self.layer_names:
            check(cancel)
            results[name] = self.compressed(name, plan.spec_for(name), plan.huffman, made.pop(name, None))
        self.cache.pin(pin, [self.key(name, r.spec, plan.huffman) for name, r in results.items()])
        return results

    def activation_params(self, plan: Plan) -> dict[str, ActPair]:
        if not plan.quantizes_activations:
            return {}
        return self.calibrator.params(plan, self.layer_names, self.calibrator.stats(self.prepared, self.layer_names, plan.calibration))

    def compiled(self, plan: Plan, results: dict[str, CompressedWeight], acts: dict[str, ActPair]) -> CompressedModel:
        example = slice_inputs(self.scorer.batches[0][0], 0, 2)
        return CompressedModel.of(self.prepared, plan, results, acts, example, self.input_mode, self.scorer.output_fn)

    def park(self) -> None:
        """Free the working copy's dequantized weights until the next pass (``PreparedModel.park``)."""
        with self.lock:
            self.prepared.park()
        release_free_memory(collect=True)

    # -- measuring ---------------------------------------------------------------------------
    def configs(self, plan: Plan, acts: dict[str, ActPair]) -> Configs:
        return {name: (plan.spec_for(name), acts.get(name)) for name in self.layer_names}

    def run(self, plan: Plan, progress: ProgressFn | None, cancel: CancelFn | None) -> tuple[list[torch.Tensor], dict[str, CompressedWeight], Timing]:
        """The outputs of the eval set under ``plan``, the compressed layers, and the time each step took."""
        start = time.perf_counter()
        results = self.compress_all(plan, "evaluate", cancel)
        acts = self.activation_params(plan)
        compressed_s = time.perf_counter() - start
        with self.lock:
            check(cancel)
            self.prepared.load(results)
            start = time.perf_counter()
            outputs, info = self.runner.run(self.configs(plan, acts), acts, progress, cancel)
            forward_s = time.perf_counter() - start
        return outputs, results, Timing(info.mode, info.reason, compressed_s, forward_s, 0.0, info.calls, info.computed)

    def evaluate(self, plan: Plan, progress: ProgressFn | None, cancel: CancelFn | None) -> Report:
        """The metric, fidelity and size of ``plan`` on the eval set."""
        outputs, results, timing = self.run(plan, progress, cancel)
        release_free_memory()  # what compressing and the pass freed
        start = time.perf_counter()
        score = self.scorer.score(outputs)
        timing = Timing(**{**timing.to_dict(), "score_s": time.perf_counter() - start})
        return self.report(
            plan, results, metric=score.metric, n_samples=self.scorer.n_samples, delta_stderr=score.delta_stderr,
            fidelity=score.fidelity, seconds=timing.compress_s + timing.forward_s + timing.score_s, timing=timing,
        )

    def report(self, plan: Plan, results: dict[str, CompressedWeight], **measured: Any) -> Report:
        p = self.prepared
        layers = {name: LayerReport.of(p.info[name], r, p.float_bytes(name)) for name, r in results.items()}
        return Report.assemble(
            plan, layers, rest_bytes=p.rest_bytes, float_size_bytes=p.float_size_bytes,
            container_bytes=container_bytes(self.compiled(plan, results, {})),  # the header holds no activation params
            metric_name=self.scorer.metric_name, baseline_metric=self.scorer.baseline_metric, **measured,
        )

"""A Session: one model, one eval set, many plans evaluated fast and honestly.

The session is a façade over small parts: the prepared (BatchNorm-folded) working
copy, a compressed-weight cache, the activation calibrator, the scorer and the
incremental runner, which after a change re-runs only what lies downstream of it.
It never writes to the user's model.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .cache import DEFAULT_BUDGET, WeightCache
from .calibrate import ActPair, Calibrator
from .compiled import CompressedModel
from .compress import CompressedWeight
from .data import OutputFn, default_output, resolve_input_mode, slice_inputs, to_batches
from .errors import StudioError
from .finetune import finetune
from .formats import RunContext
from .formats import export as export_file
from .formats.onnx import LayerRuntime, onnx_layer_runtime
from .formats.studio import container_bytes
from .latency import Latency, measure_latency
from .layers import LayerInfo
from .metrics import MetricFn
from .plan import LayerSpec, Plan
from .prepared import PreparedModel, resolve_device
from .progress import CancelFn, ProgressFn, check
from .recipe import SessionRecipe
from .recovered import Recovered
from .replay import DEFAULT_BUDGET as ACTIVATION_BUDGET
from .replay import IncrementalRunner
from .report import LayerReport, Report, Timing
from .scorer import Score, Scorer
from .search import SearchResult, search
from .sensitivity import sensitivity
from .sensitivity_table import SensitivityTable
from .verify import Verification, verify


class Session:
    """Evaluate compression plans on ``model`` over ``eval_data``.

    metric:      None for top-1 accuracy (or, without targets, agreement with the float
                 model), or a callable ``(outputs, targets) -> float`` averaged over
                 batches weighted by batch size.
    output_fn:   picks the tensor to score from the model's output (default: the tensor,
                 ``.logits``, or the first tensor of a tuple/dict).
    device:      "cpu" or "cuda".
    fold_bn:     fold BatchNorm into the preceding convolution/linear layer.
    calibration_data: batches for activation ranges (same forms as eval_data);
                 default: the first 256 samples of the eval data.
    input_mode:  how dict inputs are passed: "kwargs" (``model(**x)``), "dict"
                 (``model(x)``) or "auto" (see ``data.resolve_input_mode``).
    cache_bytes: budget of the compressed-weight cache (the current plan is always kept).
    activation_cache_bytes: budget of the outputs kept for incremental evaluation.
    """

    def __init__(
        self,
        model: nn.Module,
        eval_data: Any,
        *,
        metric: MetricFn | None = None,
        output_fn: OutputFn | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 256,
        fold_bn: bool = True,
        calibration_data: Any = None,
        input_mode: str = "auto",
        cache_bytes: int = DEFAULT_BUDGET,
        activation_cache_bytes: int = ACTIVATION_BUDGET,
    ) -> None:
        self.device = resolve_device(device)
        self._prepared = prepared = PreparedModel(model, fold_bn=fold_bn, device=self.device)
        batches = to_batches(eval_data, batch_size)
        self.input_mode = resolve_input_mode(model, batches[0][0], input_mode)
        self._scorer = Scorer(batches, output_fn or default_output, metric)
        self._calibrator = Calibrator.for_data(calibration_data, batches, batch_size, self.input_mode, self.device)
        self._recipe = SessionRecipe(
            model, batches, metric, self._scorer.output_fn, fold_bn, self.input_mode, self._calibrator.batches,
            str(self.device), cache_bytes, activation_cache_bytes,
        )
        self._cache = WeightCache(cache_bytes)
        self._runner = IncrementalRunner(
            prepared.work, prepared.modules, batches, input_mode=self.input_mode, device=self.device,
            pick=self._scorer.pick, budget_bytes=activation_cache_bytes,
        )
        self._lock = threading.RLock()  # the working copy's weights and passes
        self.layers: list[LayerInfo] = prepared.layers
        self.folds = prepared.folds
        self.float_size_bytes = prepared.float_size_bytes
        self.rest_bytes = prepared.rest_bytes
        self.supports_activations = not prepared.scripted
        self._scorer.set_reference(self._baseline())

    def _baseline(self) -> list[torch.Tensor]:
        try:
            return self._runner.run(self._configs(Plan(), {}), {})[0]
        except (RuntimeError, TypeError, IndexError) as exc:  # what a forward on misfitting data raises
            raise self._prepared.misfit(self._scorer.batches[0][0], exc) from exc

    # -- what the session holds ---------------------------------------------------------
    metric_name = property(lambda self: self._scorer.metric_name)
    baseline_metric = property(lambda self: self._scorer.baseline_metric)
    n_samples = property(lambda self: self._scorer.n_samples)
    has_targets = property(lambda self: self._scorer.has_targets)
    output_fn = property(lambda self: self._scorer.output_fn)
    metric_fn = property(lambda self: self._scorer.metric_fn)

    def recipe(self) -> SessionRecipe:
        """How this session was made, as data (``recipe().build()`` makes an equal session)."""
        return self._recipe

    def with_model(self, model: nn.Module) -> Session:
        """A session of ``model`` made as this one was: same eval data, metric, calibration and device."""
        return self._recipe.with_model(model).build()

    @property
    def layer_names(self) -> list[str]:
        return [info.name for info in self.layers]

    def layer(self, name: str) -> LayerInfo:
        if name not in self._prepared.info:
            raise StudioError(f"unknown layer {name!r}; compressible layers are: {self.layer_names}")
        return self._prepared.info[name]

    def batches(self) -> list[tuple[Any, torch.Tensor | None]]:
        """The fixed eval batches."""
        return list(self._scorer.batches)

    def float_model(self) -> nn.Module:
        """A CPU copy of the folded model with float weights (BatchNorm folded, nothing installed)."""
        return self._prepared.float_model()

    # -- compression --------------------------------------------------------------------------
    def compressed(self, name: str, spec: LayerSpec, huffman: bool = True) -> CompressedWeight:
        """The compressed weight of one layer under ``spec`` (cached)."""
        self.layer(name)
        return self._cache.get((name, spec, huffman), lambda: self._prepared.compress(name, spec, huffman))

    def _compress_all(self, plan: Plan, pin: str, cancel: CancelFn | None = None) -> dict[str, CompressedWeight]:
        if not isinstance(plan, Plan):
            raise StudioError(f"expected a studio.Plan; got {type(plan).__name__}")
        plan.check_names(self.layer_names)
        results = {}
        for name in self.layer_names:
            check(cancel)
            results[name] = self.compressed(name, plan.spec_for(name), plan.huffman)
        self._cache.pin(pin, [(name, r.spec, plan.huffman) for name, r in results.items()])
        return results

    def activation_params(self, plan: Plan) -> dict[str, ActPair]:
        """Per layer with act_bits: the (input, output) activation quantization parameters."""
        if not plan.quantizes_activations:
            return {}
        return self._calibrator.params(plan, self.layer_names, self._calibrator.stats(self._prepared, self.layer_names))

    def compile(self, plan: Plan) -> CompressedModel:
        """``plan`` applied to this model, frozen: what every export format writes."""
        return self._compiled(plan, self._compress_all(plan, "compile"), self.activation_params(plan))

    def _compiled(self, plan: Plan, results: dict[str, CompressedWeight], acts: dict[str, ActPair]) -> CompressedModel:
        example = slice_inputs(self._scorer.batches[0][0], 0, 2)
        return CompressedModel.of(self._prepared, plan, results, acts, example, self.input_mode, self._scorer.output_fn)

    # -- measuring ------------------------------------------------------------------------------
    def _configs(self, plan: Plan, acts: dict[str, ActPair]) -> dict[str, tuple[LayerSpec, ActPair | None]]:
        return {name: (plan.spec_for(name), acts.get(name)) for name in self.layer_names}

    def _report(self, plan: Plan, results: dict[str, CompressedWeight], **measured: Any) -> Report:
        p = self._prepared
        layers = {name: LayerReport.of(p.info[name], r, p.float_bytes(name)) for name, r in results.items()}
        return Report.assemble(
            plan, layers, rest_bytes=self.rest_bytes, float_size_bytes=self.float_size_bytes,
            container_bytes=container_bytes(self._compiled(plan, results, {})),  # the header holds no activation params
            metric_name=self.metric_name, baseline_metric=self.baseline_metric, **measured,
        )

    def size(self, plan: Plan) -> Report:
        """Sizes only (no forward pass): fast enough to follow a slider, and never waits
        for an evaluation running in another thread."""
        return self._report(plan, self._compress_all(plan, "size"))

    @torch.no_grad()
    def evaluate(self, plan: Plan, progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> Report:
        """Apply ``plan`` and measure the metric, fidelity and size on the eval set."""
        outputs, results, timing = self._run(plan, progress, cancel)
        start = time.perf_counter()
        score = self._scorer.score(outputs)
        timing = Timing(**{**timing.to_dict(), "score_s": time.perf_counter() - start})
        return self._report(
            plan, results, metric=score.metric, n_samples=self.n_samples, delta_stderr=score.delta_stderr,
            fidelity=score.fidelity, seconds=timing.compress_s + timing.forward_s + timing.score_s, timing=timing,
        )

    def score(self, outputs: list[torch.Tensor]) -> Score:
        """Score outputs (one tensor per eval batch) exactly as ``evaluate`` does."""
        return self._scorer.score(outputs)

    def outputs(self, plan: Plan, progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> list[torch.Tensor]:
        """The compressed model's outputs (the scored tensor of each eval batch) under ``plan``."""
        return self._run(plan, progress, cancel)[0]

    def _run(self, plan: Plan, progress: ProgressFn | None, cancel: CancelFn | None) -> tuple[list[torch.Tensor], dict[str, CompressedWeight], Timing]:
        start = time.perf_counter()
        results = self._compress_all(plan, "evaluate", cancel)
        acts = self.activation_params(plan)
        compressed_s = time.perf_counter() - start
        with self._lock:
            check(cancel)
            self._prepared.load(results)
            start = time.perf_counter()
            outputs, info = self._runner.run(self._configs(plan, acts), acts, progress, cancel)
            forward_s = time.perf_counter() - start
        return outputs, results, Timing(info.mode, info.reason, compressed_s, forward_s, 0.0, info.calls, info.computed)

    def compressed_model(self, plan: Plan) -> nn.Module:
        """A new module computing exactly what ``evaluate(plan)`` measured."""
        return self.compile(plan).simulated_model()

    # -- exports --------------------------------------------------------------------------------
    def export(self, plan: Plan, path: str | Path, format: str = "plan") -> Path:
        """Write ``plan`` applied to this model to ``path`` (a file, or a folder) as ``format``."""
        return export_file(self.compile(plan), path, format)

    def verify(self, path: str | Path) -> Verification:
        """Run an exported file in its own runtime on the eval data, beside the studio's figures."""
        ctx = RunContext(self._scorer.batches, self._scorer.pick, self.input_mode, self.compile)
        return verify(path, ctx, lambda outputs: self._scorer.score(outputs).metric, self.evaluate)

    def runtime_support(self, plan: Plan, runtime: str = "onnxruntime") -> dict[str, LayerRuntime]:
        """Per layer: how ``runtime`` stores and runs ``plan``'s choices."""
        if runtime != "onnxruntime":
            raise StudioError(f"unknown runtime {runtime!r}; available: ['onnxruntime']")
        plan.check_names(self.layer_names)
        return {name: onnx_layer_runtime(plan.spec_for(name)) for name in self.layer_names}

    # -- guidance ------------------------------------------------------------------------------
    # -- guidance and recovery (each in its own module) ----------------------------------------
    def sensitivity(self, *args: Any, **kwargs: Any) -> SensitivityTable:
        """Per-layer sensitivity table: see ``studio.engine.sensitivity.sensitivity``."""
        return sensitivity(self, *args, **kwargs)

    def search(self, *args: Any, **kwargs: Any) -> SearchResult:
        """Automatic mixed precision under a budget: see ``studio.engine.search.search``."""
        return search(self, *args, **kwargs)

    def latency(self, plan: Plan, runtime: str = "onnxruntime", repeats: int = 15, threads: int = 1, cancel: CancelFn | None = None) -> Latency:
        """``plan``'s latency per batch in ``runtime`` beside the float model's: see ``studio.engine.latency``."""
        return measure_latency(self.compile(plan), self.compile(Plan()), self._scorer.batches[0][0], runtime, repeats, threads, cancel)

    def finetune(self, plan: Plan, train_data: Any, **kwargs: Any) -> Recovered:
        """Win accuracy back by training under ``plan``: see ``studio.engine.finetune.finetune``."""
        return finetune(self, plan, train_data, **kwargs)

    def __repr__(self) -> str:
        return (
            f"Session({len(self.layers)} layers, {self.n_samples} eval samples, "
            f"{self.metric_name} {self.baseline_metric:.4f}, float {self.float_size_bytes} B)"
        )

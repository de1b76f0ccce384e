"""A Session: one model, one eval set, many plans evaluated fast and honestly.

The session is a façade over small parts: the prepared (BatchNorm-folded) working
copy, the scorer, and a ``Measurer`` (measure.py) with the compressed-weight cache, the
activation calibrator and the incremental runner, which re-runs only what a change reaches.
It never writes to the user's model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .calibrate import ActPair, Calibrator
from .compiled import CompressedModel
from .compress import CompressedWeight
from .data import OutputFn, default_output, resolve_input_mode, to_batches
from .errors import StudioError
from .finetune import finetune
from .formats import RunContext
from .formats import export as export_file
from .formats.onnx import LayerRuntime, onnx_layer_runtime
from .latency import Latency, measure_latency
from .layers import LayerInfo
from .measure import Measurer, default_cache_bytes
from .memory import release_free_memory
from .metrics import MetricFn
from .plan import LayerSpec, Plan
from .prepared import PreparedModel, resolve_device
from .progress import CancelFn, ProgressFn
from .recipe import SessionRecipe
from .recovered import Recovered
from .replay import DEFAULT_BUDGET as ACTIVATION_BUDGET
from .report import Report
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
    cache_bytes: budget of the compressed-weight cache (the current plan is always kept);
                 by default the float model's bytes, at least 64 MiB.
    activation_cache_bytes: the memory budget of evaluation: the outputs kept for incremental
                 evaluation, a pass's own working memory (measured), the eval data, and what
                 the session's weights take beyond 1.5x the float model (a BatchNorm-folded
                 copy, cached codes beyond half the float model). With it, a session holds
                 about 1.5x the float model plus this budget, besides the user's model.
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
        cache_bytes: int | None = None,
        activation_cache_bytes: int = ACTIVATION_BUDGET,
    ) -> None:
        self.device = resolve_device(device)
        self._prepared = prepared = PreparedModel(model, fold_bn=fold_bn, device=self.device)
        batches = to_batches(eval_data, batch_size)
        self.input_mode = resolve_input_mode(model, batches[0][0], input_mode)
        self._scorer = scorer = Scorer(batches, output_fn or default_output, metric)
        calibrator = Calibrator.for_data(calibration_data, batches, batch_size, self.input_mode, self.device)
        self._recipe = SessionRecipe(
            model, batches, metric, scorer.output_fn, fold_bn, self.input_mode, calibrator.batches,
            str(self.device), cache_bytes, activation_cache_bytes,
        )
        cache = default_cache_bytes(prepared.float_size_bytes) if cache_bytes is None else cache_bytes
        self._m = Measurer(prepared, scorer, calibrator, self.input_mode, cache, activation_cache_bytes)
        self._runner = self._m.runner
        self.layers: list[LayerInfo] = prepared.layers
        self.folds = prepared.folds
        self.float_size_bytes = prepared.float_size_bytes
        self.rest_bytes = prepared.rest_bytes
        self.supports_activations = not prepared.scripted
        scorer.set_reference(self._m.baseline())
        self.metric_name, self.baseline_metric, self.n_samples = scorer.metric_name, scorer.baseline_metric, scorer.n_samples
        self.has_targets, self.output_fn, self.metric_fn = scorer.has_targets, scorer.output_fn, scorer.metric_fn

    # -- what the session holds ---------------------------------------------------------
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
        return self._m.compressed(name, spec, huffman)

    def activation_params(self, plan: Plan) -> dict[str, ActPair]:
        """Per layer with act_bits: the (input, output) activation quantization parameters."""
        return self._m.activation_params(plan)

    def compile(self, plan: Plan) -> CompressedModel:
        """``plan`` applied to this model, frozen: what every export format writes."""
        return self._m.compiled(plan, self._m.compress_all(plan, "compile"), self.activation_params(plan))

    # -- measuring ------------------------------------------------------------------------------
    def size(self, plan: Plan) -> Report:
        """Sizes only (no forward pass): fast enough to follow a slider, and never waits
        for an evaluation running in another thread."""
        return self._m.report(plan, self._m.compress_all(plan, "size"))

    @torch.no_grad()
    def evaluate(self, plan: Plan, progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> Report:
        """Apply ``plan`` and measure the metric, fidelity and size on the eval set."""
        return self._m.evaluate(plan, progress, cancel)

    def score(self, outputs: list[torch.Tensor]) -> Score:
        """Score outputs (one tensor per eval batch) exactly as ``evaluate`` does."""
        return self._scorer.score(outputs)

    def outputs(self, plan: Plan, progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> list[torch.Tensor]:
        """The compressed model's outputs (the scored tensor of each eval batch) under ``plan``."""
        return self._m.run(plan, progress, cancel)[0]

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
        self._m.park()  # the file's own model and the working copy's weights need not both be held,
        self._runner.release()  # nor the kept activations (the studio's own pass below keeps them again)
        try:
            return verify(path, ctx, lambda outputs: self._scorer.score(outputs).metric, self.evaluate)
        finally:
            release_free_memory(collect=True)

    def runtime_support(self, plan: Plan, runtime: str = "onnxruntime") -> dict[str, LayerRuntime]:
        """Per layer: how ``runtime`` stores and runs ``plan``'s choices."""
        if runtime != "onnxruntime":
            raise StudioError(f"unknown runtime {runtime!r}; available: ['onnxruntime']")
        plan.check_names(self.layer_names)
        return {name: onnx_layer_runtime(plan.spec_for(name)) for name in self.layer_names}

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

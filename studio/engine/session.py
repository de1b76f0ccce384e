"""A Session: one model, one eval set, many plans evaluated fast and honestly.

The session deep-copies the user's model once into a working copy (BatchNorm folded
into the preceding layer, as deployment runtimes do) and never touches the user's
model again. Each (layer, spec) is compressed once and cached; evaluating a plan
writes only the layers whose spec changed into the working copy, then runs the eval
set. ``Session.size`` answers sizes alone, without running the model.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .compress import CompressedWeight, compress_view
from .export import export as export_to
from .export import unfold_weight
from .activations import ActQParams, ActStats, choose_qparams
from .data import OutputFn, call_model, default_output, describe_inputs, to_batches, to_device
from .data import _slice as slice_inputs
from .hooks import install_act_hooks
from .layers import LAYER_KINDS, LayerInfo, find_bn_pairs, find_layers, fold_bn as fold_batchnorm, replace_module
from .metrics import FidelityAccumulator, MetricFn, paired_delta_stderr, top1_correct
from .plan import LayerSpec, Plan
from .progress import CancelFn, ProgressFn, check, report
from .quantize import channel_view, from_channel_view
from .report import LayerReport, Report

if TYPE_CHECKING:
    from .verify import Verification
from .studio_format import container_bytes

CACHE_BYTES = 1 << 30
CALIBRATION_SAMPLES = 256
FLOAT_SPEC = LayerSpec()


def tensor_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """Bytes of tensors as stored, counting storage shared by several names once."""
    seen: set[tuple[int, int, torch.dtype]] = set()
    total = 0
    for t in tensors.values():
        key = (t.data_ptr(), t.numel(), t.dtype)
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total


def _expected_input(kind: str, module: nn.Module) -> str:
    if kind == "Linear":
        return f"inputs whose last dimension is in_features={module.in_features}"
    if kind.startswith("Conv"):
        dims = int(kind[-2])
        spatial = ", ".join("HWD"[i] if dims > 1 else "L" for i in range(dims))
        return f"inputs of shape (N, in_channels={module.in_channels}, {spatial})"
    if kind == "Embedding":
        return f"integer token ids below num_embeddings={module.num_embeddings}"
    return "inputs that match its weight"


class Session:
    """Evaluate compression plans on ``model`` over ``eval_data``.

    metric:     None for top-1 accuracy (or, without targets, agreement with the float
                model), or a callable ``(outputs, targets) -> float`` averaged over
                batches weighted by batch size.
    output_fn:  picks the tensor to score from the model's output (default: the tensor,
                ``.logits``, or the first tensor of a tuple/dict).
    device:     "cpu" or "cuda".
    fold_bn:    fold BatchNorm into the preceding convolution/linear layer.
    calibration_data: batches for activation ranges (same forms as eval_data);
                default: the first CALIBRATION_SAMPLES samples of the eval data.
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
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        self.device = self._resolve_device(device)
        self._check_finite(model)
        self.float_size_bytes = tensor_bytes(model.state_dict())
        self.metric_fn = metric
        self.output_fn = output_fn or default_output
        self._work_lock = threading.RLock()  # the working copy's weights and forward passes
        self._cache_lock = threading.Lock()  # the compressed-weight cache; never held while computing

        self._original_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        work = copy.deepcopy(model).eval()
        self.folds: list[tuple[str, str]] = find_bn_pairs(work) if fold_bn else []
        modules = dict(work.named_modules())
        self._bn_eps = {bn_name: float(modules[bn_name].eps) for _, bn_name in self.folds}
        for layer_name, bn_name in self.folds:
            fold_batchnorm(modules[layer_name], modules[bn_name])
            replace_module(work, bn_name, nn.Identity())
        found = find_layers(work)
        if not found:
            kinds = sorted(k.name for k in LAYER_KINDS.values())
            raise ValueError(f"the model has no compressible layers; Compression Studio compresses {kinds}")
        self._work = work.to(self.device)
        folded = dict(self.folds)
        self._modules: dict[str, nn.Module] = {}
        self._views: dict[str, torch.Tensor] = {}
        infos = []
        layer_tensors: set[int] = set()
        for name, module, kind in found:
            weight = module.weight
            bias = getattr(module, "bias", None)
            self._modules[name] = module
            # clone: the working weight is overwritten by every plan, the float view must not be
            self._views[name] = channel_view(weight.detach().float().cpu(), kind.channel_axis, True).clone()
            layer_tensors.add(id(weight))
            if isinstance(bias, torch.Tensor):
                layer_tensors.add(id(bias))
            infos.append(
                LayerInfo(
                    name=name,
                    kind=kind.name,
                    weight_shape=tuple(weight.shape),
                    params=weight.numel() + (bias.numel() if isinstance(bias, torch.Tensor) else 0),
                    channel_axis=kind.channel_axis,
                    has_bias=isinstance(bias, torch.Tensor),
                    folded_bn=folded.get(name),
                )
            )
        self.layers: list[LayerInfo] = infos
        self._info = {info.name: info for info in infos}
        self._rest = {k: t for k, t in work.state_dict(keep_vars=True).items() if id(t) not in layer_tensors}
        self.rest_bytes = sum(t.numel() * t.element_size() for t in self._rest.values())
        self._current: dict[str, LayerSpec] = {info.name: FLOAT_SPEC for info in infos}
        self._cache: OrderedDict[tuple[str, LayerSpec, bool], CompressedWeight] = OrderedDict()
        self._cache_bytes = 0

        self._batches = to_batches(eval_data, batch_size)
        if calibration_data is None:
            self._calibration = [(slice_inputs(x, 0, CALIBRATION_SAMPLES), None) for x, _ in self._batches[:1]]
        else:
            self._calibration = to_batches(calibration_data, batch_size, what="calibration_data")
        self._act_stats: dict[tuple[str, str], ActStats] | None = None
        self._act_active: dict[str, tuple[ActQParams | None, ActQParams | None]] = {}
        self.supports_activations = not isinstance(self._work, torch.jit.ScriptModule)
        if self.supports_activations:
            for name, module in self._modules.items():
                install_act_hooks(module, lambda name=name: self._act_active.get(name, (None, None)))
        self.has_targets = self._batches[0][1] is not None
        self._reference: list[torch.Tensor] = []
        self._baseline_correct: torch.Tensor | None = None
        self.n_samples = 0
        self.metric_name = "top-1 accuracy" if self.has_targets else "top-1 agreement with float"
        if metric is not None:
            self.metric_name = getattr(metric, "__name__", "metric")
        self.baseline_metric = 0.0
        self._compute_baseline()

    # -- set-up ---------------------------------------------------------------------
    @staticmethod
    def _resolve_device(device: str | torch.device) -> torch.device:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"unknown device {device!r}; use 'cpu' or 'cuda'") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' was asked for but CUDA is not available here; use device='cpu'")
        return dev

    @staticmethod
    def _check_finite(model: nn.Module) -> None:
        for key, tensor in model.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ValueError(
                    f"'{key}' holds NaN or Inf values; the model cannot be compressed until they are "
                    "fixed (check the training run or the file it was loaded from)"
                )

    def _forward(self, inputs: Any) -> torch.Tensor:
        out = call_model(self._work, to_device(inputs, self.device))
        return self.output_fn(out).detach().float().cpu()

    @torch.no_grad()
    def _compute_baseline(self) -> None:
        first_name = self.layers[0].name
        try:
            outputs = [self._forward(x) for x, _ in self._batches]
        except (RuntimeError, TypeError, IndexError) as exc:
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            info = self._info[first_name]
            raise ValueError(
                f"the eval data does not fit the model: it gives {describe_inputs(self._batches[0][0])}, "
                f"and the forward pass failed ({detail}). The first layer '{first_name}' ({info.kind}) "
                f"expects {_expected_input(info.kind, self._modules[first_name])}."
            ) from None
        self._reference = outputs
        score, correct, _ = self._score(outputs)
        self._baseline_correct = correct
        self.baseline_metric = score
        self.n_samples = sum(int(o.shape[0]) for o in outputs)

    def _score(self, outputs: list[torch.Tensor]) -> tuple[float, torch.Tensor | None, FidelityAccumulator]:
        fid = FidelityAccumulator()
        for ref, out in zip(self._reference or outputs, outputs):
            fid.add(ref, out)
        if self.metric_fn is not None:
            total, weight = 0.0, 0
            for out, (_, targets) in zip(outputs, self._batches):
                n = int(out.shape[0])
                total += float(self.metric_fn(out, targets)) * n
                weight += n
            return total / weight, None, fid
        if not self.has_targets:
            flags = torch.cat(fid.agree_flags)
            return float(flags.float().mean()), flags, fid
        correct = torch.cat([top1_correct(out, t.cpu()) for out, (_, t) in zip(outputs, self._batches)])
        if correct.numel() == 0:
            raise ValueError("the eval targets are all ignore_index (-100): there is nothing to score")
        return float(correct.float().mean()), correct, fid

    # -- compression ----------------------------------------------------------------
    @property
    def layer_names(self) -> list[str]:
        return [info.name for info in self.layers]

    def layer(self, name: str) -> LayerInfo:
        if name not in self._info:
            raise ValueError(f"unknown layer {name!r}; compressible layers are: {self.layer_names}")
        return self._info[name]

    def compressed(self, name: str, spec: LayerSpec, huffman: bool = True) -> CompressedWeight:
        """The compressed weight of one layer under ``spec`` (cached)."""
        self.layer(name)
        key = (name, spec, huffman)
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        module = self._modules[name]
        bias = getattr(module, "bias", None)
        other = bias.numel() * bias.element_size() if isinstance(bias, torch.Tensor) else 0
        float_width = 8 * module.weight.element_size()
        extra = 0
        if spec.act_bits:
            per_tensor = 4 + (1 if spec.act_bits == 8 else 2)  # fp32 scale and a zero-point
            extra = per_tensor * (1 if self._info[name].kind == "Embedding" else 2)
        result = compress_view(self._views[name], spec, huffman, other, float_width, extra)
        cost = 3 * result.float_view.numel() * 4
        with self._cache_lock:
            self._cache[key] = result
            self._cache_bytes += cost
            while self._cache_bytes > CACHE_BYTES and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._cache_bytes -= 3 * old.float_view.numel() * 4
            return result

    def _compress_all(self, plan: Plan, cancel: CancelFn | None = None) -> dict[str, CompressedWeight]:
        if not isinstance(plan, Plan):
            raise ValueError(f"expected a studio.Plan; got {type(plan).__name__}")
        plan.check_names(self.layer_names)
        results = {}
        for name in self.layer_names:
            check(cancel)
            results[name] = self.compressed(name, plan.spec_for(name), plan.huffman)
        return results

    @torch.no_grad()
    def _load_weights(self, results: dict[str, CompressedWeight]) -> None:
        for name, result in results.items():
            if self._current[name] == result.spec:
                continue
            module = self._modules[name]
            info = self._info[name]
            weight = from_channel_view(result.dequant_view, module.weight, info.channel_axis, True)
            module.weight.copy_(weight.to(module.weight.dtype))
            self._current[name] = result.spec

    def _layer_reports(self, results: dict[str, CompressedWeight]) -> dict[str, LayerReport]:
        reports = {}
        for name, result in results.items():
            info = self._info[name]
            module = self._modules[name]
            float_bytes = info.params * module.weight.element_size()
            reports[name] = LayerReport(
                name=name,
                kind=info.kind,
                spec=result.spec,
                params=info.params,
                float_bytes=float_bytes,
                size=result.size,
                sqnr_db=result.sqnr_db,
                sparsity=result.sparsity,
                folded_bn=info.folded_bn,
            )
        return reports

    def _report(self, plan: Plan, results: dict[str, CompressedWeight], **measured: Any) -> Report:
        layers = self._layer_reports(results)
        container = container_bytes(self, plan, results)
        return Report(
            plan=plan,
            layers=layers,
            size_bytes=sum(layer.total for layer in layers.values()) + self.rest_bytes + container,
            float_size_bytes=self.float_size_bytes,
            rest_bytes=self.rest_bytes,
            container_bytes=container,
            metric_name=self.metric_name,
            baseline_metric=self.baseline_metric,
            **measured,
        )

    # -- public API -----------------------------------------------------------------
    def size(self, plan: Plan) -> Report:
        """Sizes only (no forward pass): fast enough to follow a slider, and never waits
        for an evaluation running in another thread."""
        return self._report(plan, self._compress_all(plan))

    @torch.no_grad()
    def evaluate(self, plan: Plan, progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> Report:
        """Apply ``plan`` and measure the metric, fidelity and size on the eval set."""
        start = time.perf_counter()
        results = self._compress_all(plan, cancel)
        with self._work_lock:
            check(cancel)
            self._set_activations(plan)
            self._load_weights(results)
            outputs = []
            total = len(self._batches)
            for i, (inputs, _) in enumerate(self._batches):
                check(cancel)
                outputs.append(self._forward(inputs))
                report(progress, i + 1, total)
            score, correct, fid = self._score(outputs)
            stderr = None
            if correct is not None and self._baseline_correct is not None:
                stderr = paired_delta_stderr(self._baseline_correct, correct)
            return self._report(
                plan,
                results,
                metric=score,
                n_samples=self.n_samples,
                delta_stderr=stderr,
                fidelity=fid.result(),
                seconds=time.perf_counter() - start,
            )

    def compressed_model(self, plan: Plan) -> nn.Module:
        """A new module (a copy of the working model) with ``plan``'s weights in float."""
        results = self._compress_all(plan)
        with self._work_lock:
            self._load_weights(results)
            model = copy.deepcopy(self._work)
            acts = self.activation_params(plan)
        for name, module in model.named_modules():
            if name in self._info and self.supports_activations:
                module._forward_pre_hooks.clear()
                module._forward_hooks.clear()
                if name in acts:
                    install_act_hooks(module, lambda q=acts[name]: q)
        return model

    def fold_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """An original-architecture state dict with this session's BatchNorm folds applied."""
        state = {k: v.clone() for k, v in state.items()}
        for layer, bn in self.folds:
            get = lambda key: state.pop(f"{bn}.{key}", None)  # noqa: E731
            gamma, beta, mean, var = get("weight"), get("bias"), get("running_mean"), get("running_var")
            get("num_batches_tracked")
            factor = (gamma if gamma is not None else torch.ones_like(var)) / torch.sqrt(var + self._bn_eps[bn])
            weight = state[f"{layer}.weight"]
            state[f"{layer}.weight"] = weight * factor.reshape([-1] + [1] * (weight.dim() - 1))
            bias = state.get(f"{layer}.bias", torch.zeros_like(mean))
            state[f"{layer}.bias"] = (bias - mean) * factor + (beta if beta is not None else torch.zeros_like(mean))
        return state

    def model_from_state(self, state: dict[str, torch.Tensor], acts: dict[str, Any] | None = None) -> nn.Module:
        """The folded working architecture with ``state`` loaded and activation quantizers installed."""
        model = self.float_model()
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"the weights do not fit this session's model ({str(exc)[:300]})") from None
        for name, pair in (acts or {}).items():
            install_act_hooks(model.get_submodule(name), lambda pair=pair: pair)
        return model

    def runtime_support(self, plan: Plan, runtime: str = "onnxruntime") -> dict[str, Any]:
        """Per layer: how ``runtime`` stores and runs ``plan``'s choices (see onnx_export.LayerRuntime)."""
        if runtime != "onnxruntime":
            raise ValueError(f"unknown runtime {runtime!r}; available: ['onnxruntime']")
        from .onnx_export import onnx_layer_runtime

        plan.check_names(self.layer_names)
        return {name: onnx_layer_runtime(plan.spec_for(name)) for name in self.layer_names}

    def verify(self, path: str | Path) -> "Verification":
        """Run an exported file in its own runtime on the eval data; see ``studio.engine.verify``."""
        from .verify import verify

        return verify(self, path)

    def rest_tensors(self) -> dict[str, torch.Tensor]:
        """The working model's tensors outside the compressible layers' weights and biases."""
        return dict(self._rest)

    def layer_bias(self, name: str) -> torch.Tensor | None:
        bias = getattr(self._modules[name], "bias", None)
        return bias if isinstance(bias, torch.Tensor) else None

    def compress_plan(self, plan: Plan) -> dict[str, CompressedWeight]:
        """Every layer's compressed weight under ``plan`` (cached per layer and spec)."""
        return self._compress_all(plan)

    def float_model(self) -> nn.Module:
        """A CPU copy of the working model (BatchNorm folded) with float weights and no hooks."""
        with self._work_lock:
            self._load_weights({n: self.compressed(n, FLOAT_SPEC) for n in self.layer_names})
            model = copy.deepcopy(self._work).cpu()
        if self.supports_activations:
            for name in self.layer_names:
                module = model.get_submodule(name)
                module._forward_pre_hooks.clear()
                module._forward_hooks.clear()
        return model

    def example_inputs(self, n: int = 2) -> Any:
        """The first ``n`` eval inputs, e.g. for tracing an export."""
        return slice_inputs(self._batches[0][0], 0, n)

    def batches(self) -> list[tuple[Any, torch.Tensor | None]]:
        """The fixed eval batches."""
        return list(self._batches)

    def score(self, outputs: list[torch.Tensor]) -> tuple[float, Any]:
        """Score outputs (one tensor per eval batch) as ``evaluate`` does: (metric, fidelity)."""
        metric, _, fid = self._score(outputs)
        return metric, fid.result()

    # -- activations ----------------------------------------------------------------
    @torch.no_grad()
    def _calibrate(self) -> dict[tuple[str, str], ActStats]:
        """Run the calibration set through the float model, twice: ranges, then histograms."""
        if self._act_stats is not None:
            return self._act_stats
        with self._work_lock:
            saved = dict(self._act_active)
            self._act_active.clear()
            self._load_weights({n: self.compressed(n, FLOAT_SPEC) for n in self.layer_names})
            stats: dict[tuple[str, str], ActStats] = {}
            for name in self.layer_names:
                stats[(name, "in")] = ActStats()
                stats[(name, "out")] = ActStats()
            for phase in ("observe_range", "observe_hist"):
                handles = []
                for name, module in self._modules.items():
                    def pre(mod, args, name=name, phase=phase):  # noqa: ANN001
                        if args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
                            getattr(stats[(name, "in")], phase)(args[0].detach())

                    def post(mod, args, out, name=name, phase=phase):  # noqa: ANN001
                        if isinstance(out, torch.Tensor):
                            getattr(stats[(name, "out")], phase)(out.detach())

                    handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
                try:
                    for inputs, _ in self._calibration:
                        call_model(self._work, to_device(inputs, self.device))
                finally:
                    for handle in handles:
                        handle.remove()
            self._act_active.update(saved)
            self._act_stats = {k: v for k, v in stats.items() if v.hist is not None}
            return self._act_stats

    def activation_params(self, plan: Plan) -> dict[str, tuple[ActQParams | None, ActQParams | None]]:
        """Per layer with act_bits: the (input, output) activation quantization parameters."""
        if not plan.quantizes_activations:
            return {}
        if not self.supports_activations:
            raise ValueError(
                "activation quantization needs an eager PyTorch model (TorchScript modules take no hooks); "
                "load the weights into the architecture (safetensors) or set act_bits=None"
            )
        stats = self._calibrate()
        params = {}
        for name in self.layer_names:
            bits = plan.spec_for(name).act_bits
            if not bits:
                continue
            q_in = stats.get((name, "in"))
            q_out = stats.get((name, "out"))
            params[name] = (
                choose_qparams(q_in, bits, plan.calibration) if q_in is not None else None,
                choose_qparams(q_out, bits, plan.calibration) if q_out is not None else None,
            )
        return params

    def _set_activations(self, plan: Plan) -> None:
        params = self.activation_params(plan)
        self._act_active.clear()
        self._act_active.update(params)

    def dequantized_state_dict(self, plan: Plan) -> dict[str, torch.Tensor]:
        """The original model's state dict with ``plan``'s dequantized weights (BatchNorm
        folds undone), loadable into the original architecture."""
        results = self._compress_all(plan)
        state = {k: v.clone().contiguous() for k, v in self._original_state.items()}
        folded = dict(self.folds)
        for name, result in results.items():
            info = self._info[name]
            key = f"{name}.weight" if name else "weight"
            if key not in state:
                continue  # e.g. a TorchScript module with other names: leave the float weight
            weight = from_channel_view(result.dequant_view, state[key], info.channel_axis, True).to(state[key].dtype)
            bn = folded.get(name)
            if bn is not None:
                bn_state = {k[len(bn) + 1 :]: v for k, v in self._original_state.items() if k.startswith(bn + ".")}
                weight = unfold_weight(weight, bn_state, self._bn_eps[bn], state[key])
            state[key] = weight.contiguous()
        return state

    def export(self, plan: Plan, path: str | Path, format: str = "plan") -> Path:
        """Write ``plan`` applied to this model to ``path``; see ``studio.engine.export``."""
        return export_to(self, plan, path, format)

    def __repr__(self) -> str:
        return (
            f"Session({len(self.layers)} layers, {self.n_samples} eval samples, "
            f"{self.metric_name} {self.baseline_metric:.4f}, float {self.float_size_bytes} B)"
        )

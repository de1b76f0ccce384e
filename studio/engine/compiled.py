"""A plan applied to a model, frozen: what every export format consumes.

``Session.compile(plan)`` returns a :class:`CompressedModel`: per layer the compressed
weight (codes, scales or codebook, masks, dequantized values, byte counts), the bias as
stored (float16 under ``param_dtype="float16"``) and the activation parameters, plus the BatchNorm folds, the other tensors and example
inputs. Writers and verifiers take it and never see the Session.

It is not plain JSON data: its serialisation is the studio file format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .bn import unfold_weight
from .compress import CompressedWeight
from .errors import StudioError
from .hooks import ActPair, install_act_hooks
from .layers import LayerInfo, LayerKind, weight_key
from .plan import Plan
from .prepared import PreparedModel
from .quantize import from_channel_view


def _constant(pair: ActPair) -> Callable[[], ActPair]:
    return lambda: pair


@dataclass(frozen=True)
class CompressedModel:
    """``plan`` applied to a prepared (BatchNorm-folded) model."""

    plan: Plan
    layers: tuple[LayerInfo, ...]
    weights: Mapping[str, CompressedWeight]
    biases: Mapping[str, torch.Tensor | None]
    acts: Mapping[str, ActPair]
    folds: tuple[tuple[str, str], ...]
    bn_eps: Mapping[str, float]
    rest: Mapping[str, torch.Tensor]  # every other tensor of the folded model, by state-dict key
    example_inputs: Any
    input_mode: str
    prepared: PreparedModel
    output_fn: Callable[[Any], torch.Tensor] | None = None  # the tensor scored from the model's output

    @classmethod
    def of(
        cls, prepared: PreparedModel, plan: Plan, weights: Mapping[str, CompressedWeight], acts: Mapping[str, ActPair],
        example_inputs: Any, input_mode: str, output_fn: Callable[[Any], torch.Tensor] | None = None,
    ) -> CompressedModel:
        names = [info.name for info in prepared.layers]
        return cls(
            plan=plan, layers=tuple(prepared.layers), weights=weights, biases={n: prepared.bias_for(n, plan.spec_for(n)) for n in names},
            acts=acts, folds=tuple(prepared.folds), bn_eps=dict(prepared.bn_eps), rest=dict(prepared.rest),
            example_inputs=example_inputs, input_mode=input_mode, prepared=prepared, output_fn=output_fn,
        )

    def kind(self, name: str) -> LayerKind:
        return next(info for info in self.layers if info.name == name).layer_kind

    # -- models ----------------------------------------------------------------------------
    def float_model(self) -> nn.Module:
        """The folded architecture with float weights, to read only (e.g. to trace for ONNX):
        it shares the user's tensors."""
        return self.prepared.float_model(shared=True)

    def simulated_model(self) -> nn.Module:
        """A standalone module computing exactly what the studio evaluated for the plan."""
        model = self.prepared.copy_with({name: w.dequant_view for name, w in self.weights.items()}, self.biases)
        for name, pair in self.acts.items():
            install_act_hooks(model.get_submodule(name), _constant(pair))
        return model

    def model_from_state(self, state: Mapping[str, torch.Tensor], acts: Mapping[str, ActPair] | None = None) -> nn.Module:
        """The folded architecture with ``state`` loaded and activation quantizers installed."""
        model = self.prepared.float_model(shared=True)
        current = model.state_dict()
        # the state's tensors become the model's (assign): the shared float weights are never written
        state = {k: v.to(current[k].dtype) if k in current else v for k, v in state.items()}
        try:
            model.load_state_dict(state, strict=True, assign=not self.prepared.scripted)
        except RuntimeError as exc:
            raise StudioError(f"the weights do not fit this session's model ({str(exc)[:300]})") from exc
        for name, pair in (acts or {}).items():
            install_act_hooks(model.get_submodule(name), _constant(pair))
        return model.eval()

    # -- state dicts -------------------------------------------------------------------------
    def original_state_dict(self) -> dict[str, torch.Tensor]:
        """The user's model's state dict with the plan's dequantized weights, BatchNorm folds
        undone, so that it loads into the original architecture."""
        original = self.prepared.original_state()
        state = {k: v.clone().contiguous() for k, v in original.items()}
        folded = dict(self.folds)
        for info in self.layers:
            key = weight_key(info.name)
            if key not in state:
                continue  # e.g. a TorchScript module with other names: leave the float weight
            result = self.weights[info.name]
            weight = from_channel_view(result.dequant_view, state[key], info.channel_axis, True).to(state[key].dtype)
            bn = folded.get(info.name)
            if bn is not None:
                bn_stats = {k[len(bn) + 1 :]: v for k, v in original.items() if k.startswith(bn + ".")}
                weight = unfold_weight(weight, bn_stats, self.bn_eps[bn], state[key])
            state[key] = weight.contiguous()
            self._stored_bias(state, info.name, bn)
        return state

    def _stored_bias(self, state: dict[str, torch.Tensor], name: str, bn: str | None) -> None:
        """Put a bias rounded to float16 into ``state``: the layer's own, or for a folded layer
        the BatchNorm's shift moved so that folding gives the rounded bias again."""
        stored, folded = self.biases.get(name), self.prepared.layer_bias(name)
        if stored is None or folded is None or stored.dtype == folded.dtype:
            return
        key = weight_key(bn, "bias") if bn is not None else weight_key(name, "bias")
        if key not in state:
            return  # a BatchNorm without a shift: the file keeps the float bias
        delta = stored.to(torch.float64) - folded.to(torch.float64) if bn is not None else None
        value = stored.to(torch.float64) if delta is None else state[key].to(torch.float64) + delta
        state[key] = value.to(state[key].dtype).contiguous()

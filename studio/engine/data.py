"""Evaluation data in every shape users bring, turned into one fixed list of batches.

Accepted: a pair ``(inputs, targets)`` of whole-dataset tensors, a ``DataLoader``, or
any iterable of ``(inputs, targets)`` batches. ``inputs`` may be a tensor, a tuple of
tensors (passed positionally) or a dict (passed as keyword arguments); ``targets``
may be None (the score is then fidelity to the float model). The batches are
materialised once, so every evaluation sees the same samples in the same order.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from .errors import StudioError

Inputs = Any  # Tensor | tuple[Tensor, ...] | dict[str, Tensor]
Batch = tuple[Inputs, "torch.Tensor | None"]
DEFAULT_BATCH_SIZE = 256


def _is_inputs(obj: Any) -> bool:
    if isinstance(obj, torch.Tensor):
        return True
    if isinstance(obj, Mapping):
        return all(isinstance(v, torch.Tensor) for v in obj.values())
    if isinstance(obj, (tuple, list)):
        return len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj)
    return False


def batch_len(inputs: Inputs) -> int:
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0]) if inputs.dim() > 0 else 1
    first = next(iter(inputs.values())) if isinstance(inputs, Mapping) else inputs[0]
    return int(first.shape[0])


def slice_inputs(inputs: Inputs, start: int, stop: int) -> Inputs:
    if isinstance(inputs, torch.Tensor):
        return inputs[start:stop]
    if isinstance(inputs, Mapping):
        return {k: v[start:stop] for k, v in inputs.items()}
    return tuple(v[start:stop] for v in inputs)


def to_batches(data: Any, batch_size: int = DEFAULT_BATCH_SIZE, what: str = "eval_data") -> list[Batch]:
    """Normalise ``data`` to a list of ``(inputs, targets)`` batches; ValueError if unusable."""
    if data is None:
        raise StudioError(f"{what} is missing: pass (inputs, targets) tensors, a DataLoader or a list of batches")
    if (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and _is_inputs(data[0])
        and (data[1] is None or isinstance(data[1], torch.Tensor))
    ):
        inputs, targets = data
        n = batch_len(inputs)
        if targets is not None and int(targets.shape[0]) != n:
            raise StudioError(f"{what}: {n} inputs but {int(targets.shape[0])} targets; they must match one to one")
        batches = [
            (slice_inputs(inputs, i, i + batch_size), None if targets is None else targets[i : i + batch_size])
            for i in range(0, n, batch_size)
        ]
    else:
        if not isinstance(data, Iterable):
            raise StudioError(f"{what} must be (inputs, targets), a DataLoader or an iterable of batches; got {type(data).__name__}")
        batches = []
        for i, item in enumerate(data):
            if isinstance(item, Mapping) and not _is_inputs(item):
                raise StudioError(f"{what}: batch {i} is a dict with non-tensor values")
            if isinstance(item, (tuple, list)) and len(item) == 2 and _is_inputs(item[0]):
                inputs, targets = item
            elif _is_inputs(item):
                inputs, targets = item, None
            else:
                raise StudioError(f"{what}: batch {i} is not (inputs, targets); got {type(item).__name__}")
            if targets is not None and not isinstance(targets, torch.Tensor):
                targets = torch.as_tensor(targets)
            batches.append((inputs, targets))
    batches = [b for b in batches if batch_len(b[0]) > 0]
    if not batches:
        raise StudioError(f"{what} is empty: it needs at least one sample")
    has_targets = {b[1] is not None for b in batches}
    if len(has_targets) > 1:
        raise StudioError(f"{what}: some batches have targets and some do not; give targets for all or none")
    return batches


def to_device(inputs: Inputs, device: torch.device) -> Inputs:
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    if isinstance(inputs, Mapping):
        return {k: v.to(device) for k, v in inputs.items()}
    return tuple(v.to(device) for v in inputs)


INPUT_MODES = ("auto", "kwargs", "dict")


def resolve_input_mode(model: torch.nn.Module, inputs: Inputs, mode: str = "auto") -> str:
    """How dict inputs are passed: ``"kwargs"`` (``model(**inputs)``, Hugging Face style) or
    ``"dict"`` (``model(inputs)``, one dict argument, sentence-transformers style).

    ``"auto"`` picks "dict" when the model's forward takes exactly one required argument
    and its name is not one of the dict's keys; otherwise "kwargs".
    """
    if mode not in INPUT_MODES:
        raise StudioError(f"input_mode must be one of {list(INPUT_MODES)}; got {mode!r}")
    if mode != "auto":
        return mode
    if not isinstance(inputs, Mapping):
        return "kwargs"
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):  # e.g. a TorchScript method
        return "kwargs"
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    named = [p for p in params if p.kind in positional]
    required = [p for p in named if p.default is inspect.Parameter.empty]
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    if len(required) == 1 and required[0].name not in inputs and not takes_kwargs:
        return "dict"
    return "kwargs"


def call_model(model: torch.nn.Module, inputs: Inputs, mode: str = "kwargs") -> Any:
    if isinstance(inputs, Mapping):
        return model(inputs) if mode == "dict" else model(**inputs)
    if isinstance(inputs, tuple):
        return model(*inputs)
    return model(inputs)


def default_output(outputs: Any) -> torch.Tensor:
    """The tensor to score: the tensor itself, ``.logits``/``['logits']``, or the first tensor."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    logits = getattr(outputs, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(outputs, Mapping):
        logits = outputs.get("logits")
        if isinstance(logits, torch.Tensor):
            return logits
        outputs = list(outputs.values())
    if isinstance(outputs, (tuple, list)):
        for item in outputs:
            if isinstance(item, torch.Tensor):
                return item
    raise StudioError(
        f"cannot find a tensor in the model's output ({type(outputs).__name__}); "
        "pass output_fn=... to pick the tensor to score"
    )


def input_bytes(batches: Iterable[Batch]) -> int:
    """Bytes of the tensors these batches hold (inputs and targets), each storage counted once
    (batches sliced from one tensor share it)."""
    storages: dict[int, int] = {}
    for inputs, targets in batches:
        tensors = list(inputs.values()) if isinstance(inputs, Mapping) else [inputs]
        for t in [*tensors, targets]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def describe_inputs(inputs: Inputs) -> str:
    if isinstance(inputs, torch.Tensor):
        return f"a tensor of shape {tuple(inputs.shape)} ({inputs.dtype})"
    if isinstance(inputs, Mapping):
        return "keyword tensors " + ", ".join(f"{k}={tuple(v.shape)}" for k, v in inputs.items())
    return "positional tensors " + ", ".join(str(tuple(v.shape)) for v in inputs)


OutputFn = Callable[[Any], torch.Tensor]

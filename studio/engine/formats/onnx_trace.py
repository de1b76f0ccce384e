"""Trace a model to a float ONNX graph, whatever form its inputs take.

``torch.onnx.export`` passes positional tensors. A model that takes keyword tensors
(Hugging Face's ``model(input_ids=..., attention_mask=...)``) or one dict argument
(the sentence-transformers style, ``model({"input_ids": ...})``) is wrapped in a
:class:`CallAdapter`: it takes the named tensors positionally and calls the model by
the given convention, so the exporter never sees keyword arguments (which clash with
parameters such as ``use_cache`` that the exporter would otherwise fill in).

The adapter also applies the session's ``output_fn``, so the graph has exactly one
output: the tensor the studio scores. Parameter names are kept: the adapter's prefix
is stripped again, so initializers are named by the model's own state-dict keys.
"""

from __future__ import annotations

import gc
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

INPUT_MODES = ("kwargs", "dict")
PREFIX = "model."


class CallAdapter(nn.Module):
    """Named input tensors in, positionally; the model called by ``input_mode``; one tensor out.

    input_mode: "kwargs" passes the tensors as keyword arguments (``model(**named)``),
                "dict" passes them as one dict argument (``model(named)``),
                "positional" passes them in order (``model(*tensors)``).
    """

    def __init__(
        self,
        model: nn.Module,
        names: list[str],
        input_mode: str = "kwargs",
        output_fn: Callable[[Any], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if input_mode not in INPUT_MODES + ("positional",):
            raise ValueError(f"input_mode must be one of {INPUT_MODES}; got {input_mode!r}")
        self.model = model
        self.names = list(names)
        self.input_mode = input_mode
        self.output_fn = output_fn

    def forward(self, *tensors: torch.Tensor) -> Any:
        if self.input_mode == "positional":
            out = self.model(*tensors)
        else:
            named = dict(zip(self.names, tensors))
            out = self.model(**named) if self.input_mode == "kwargs" else self.model(named)
        return self.output_fn(out) if self.output_fn is not None else out


def input_names(inputs: Any) -> tuple[tuple[torch.Tensor, ...], list[str]]:
    """The example inputs as a positional tuple, and the ONNX input names."""
    if isinstance(inputs, torch.Tensor):
        return (inputs,), ["input"]
    if isinstance(inputs, Mapping):
        return tuple(inputs.values()), [str(k) for k in inputs]
    return tuple(inputs), [f"input_{i}" for i in range(len(inputs))]


def _strip_prefix(model_proto: Any) -> None:
    """Rename ``model.<key>`` initializers (and their uses) to ``<key>``."""
    graph = model_proto.graph
    taken = {init.name for init in graph.initializer}
    renames = {}
    for init in graph.initializer:
        if init.name.startswith(PREFIX) and init.name[len(PREFIX) :] not in taken:
            renames[init.name] = init.name[len(PREFIX) :]
    for init in graph.initializer:
        init.name = renames.get(init.name, init.name)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]


def export_float_onnx(
    model: nn.Module,
    inputs: Any,
    *,
    input_mode: str = "kwargs",
    output_fn: Callable[[Any], torch.Tensor] | None = None,
    opset: int = 21,
) -> Any:
    """The float ``model`` as an ONNX ModelProto (TorchScript exporter, no constant folding).

    ``inputs`` are example inputs (a tensor, a tuple, or a dict whose keys become the
    input names); ``input_mode`` says how a dict is passed ("kwargs" or "dict").
    The batch axis of every input and of the output is dynamic.
    """
    import onnx

    args, names = input_names(inputs)
    mode = input_mode if isinstance(inputs, Mapping) else "positional"
    adapter = CallAdapter(model, names, mode, output_fn).eval()
    axes = {n: {0: "batch"} for n in names}
    # through a temporary file: an in-memory buffer and its bytes would be two more copies
    # of every weight while the proto is parsed (about 0.9 GB more for BERT-base)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = os.path.join(tmp, "float.onnx")
        torch.onnx.export(
            adapter, args, path, dynamo=False, opset_version=opset, do_constant_folding=False,
            input_names=names, output_names=["output"], dynamic_axes={**axes, "output": {0: "batch"}},
        )
        del adapter, model  # the caller's copy, when it passed one, goes before the proto is parsed
        gc.collect()
        proto = onnx.load(path)
    _strip_prefix(proto)
    return proto

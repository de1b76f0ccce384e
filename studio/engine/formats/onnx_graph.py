"""A small editable view of an ONNX graph, for the studio's exporters.

Nodes are held in a Python list (in topological order) and initializers in a dict;
``commit()`` writes both back into the ModelProto. Producer and consumer maps are
rebuilt on demand after edits, which is cheap next to the graphs' sizes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

MS_DOMAIN = "com.microsoft"


def pack_int4(values: np.ndarray, signed: bool) -> bytes:
    """Two 4-bit values a byte, the first in the low nibble (ONNX's INT4/UINT4 raw_data layout)."""
    flat = values.astype(np.int64).ravel()
    lo, hi = (-8, 7) if signed else (0, 15)
    if flat.size and (flat.min() < lo or flat.max() > hi):
        raise ValueError(f"4-bit values must lie in [{lo}, {hi}]")
    nibbles = (flat & 0xF).astype(np.uint8)
    if nibbles.size % 2:
        nibbles = np.append(nibbles, np.uint8(0))
    return (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8).tobytes()


def make_initializer(name: str, array: np.ndarray, int4: bool = False) -> Any:
    """A TensorProto; with ``int4`` the integer array is stored packed as INT4 (signed) or UINT4."""
    from onnx import TensorProto, numpy_helper

    if not int4:
        return numpy_helper.from_array(np.ascontiguousarray(array), name)
    signed = array.dtype.kind == "i"
    tensor = TensorProto()
    tensor.name = name
    tensor.data_type = TensorProto.INT4 if signed else TensorProto.UINT4
    tensor.dims.extend(array.shape)
    tensor.raw_data = pack_int4(array, signed)
    return tensor


class Graph:
    """Nodes, initializers and the maps between tensors and nodes."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.g = model.graph
        self.nodes: list[Any] = list(self.g.node)
        self.inits: dict[str, Any] = {init.name: init for init in self.g.initializer}
        self.outputs = {o.name for o in self.g.output}
        self.inputs = {i.name for i in self.g.input}
        self._counter = 0
        self._maps: tuple[dict[str, Any], dict[str, list[Any]]] | None = None

    # -- names and maps -----------------------------------------------------------------
    def fresh(self, base: str) -> str:
        self._counter += 1
        return f"{base}__s{self._counter}"

    def dirty(self) -> None:
        self._maps = None

    def _build(self) -> tuple[dict[str, Any], dict[str, list[Any]]]:
        if self._maps is None:
            producer: dict[str, Any] = {}
            consumers: dict[str, list[Any]] = {}
            for node in self.nodes:
                for out in node.output:
                    producer[out] = node
                for inp in node.input:
                    if inp:
                        consumers.setdefault(inp, []).append(node)
            self._maps = (producer, consumers)
        return self._maps

    def producer(self, tensor: str) -> Any:
        return self._build()[0].get(tensor)

    def consumers(self, tensor: str) -> list[Any]:
        seen: list[Any] = []
        for node in self._build()[1].get(tensor, []):
            if not any(node is s for s in seen):
                seen.append(node)
        return seen

    def index(self, node: Any) -> int:
        for i, n in enumerate(self.nodes):
            if n is node:
                return i
        raise KeyError(node.name)

    # -- initializers ---------------------------------------------------------------------
    def constant(self, name: str) -> np.ndarray | None:
        """An initializer's value (or a Constant node's), else None."""
        from onnx import numpy_helper

        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer(name)
        if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def need_constant(self, name: str) -> np.ndarray:
        """``constant(name)``, where the graph must hold one."""
        value = self.constant(name)
        if value is None:
            raise ValueError(f"{name!r} is not a constant of the graph")
        return value

    def add_init(self, base: str, array: np.ndarray, int4: bool = False, exact_name: bool = False) -> str:
        name = base if exact_name else self.fresh(base)
        self.inits[name] = make_initializer(name, array, int4)
        return name

    def drop_init(self, name: str) -> None:
        self.inits.pop(name, None)

    # -- nodes ----------------------------------------------------------------------------
    def node(self, op: str, inputs: Iterable[str], outputs: Iterable[str], domain: str = "", **attrs: Any) -> Any:
        from onnx import helper

        return helper.make_node(op, list(inputs), list(outputs), name=self.fresh(op), domain=domain or None, **attrs)

    def insert_before(self, anchor: Any, *new: Any) -> None:
        idx = self.index(anchor)
        self.nodes[idx:idx] = list(new)
        self.dirty()

    def insert_after(self, anchor: Any, *new: Any) -> None:
        idx = self.index(anchor) + 1
        self.nodes[idx:idx] = list(new)
        self.dirty()

    def remove(self, *nodes: Any) -> None:
        ids = {id(n) for n in nodes}
        self.nodes = [n for n in self.nodes if id(n) not in ids]
        self.dirty()

    def rename_uses(self, old: str, new: str) -> None:
        """Every node input ``old`` reads ``new`` instead."""
        for node in self.nodes:
            for i, name in enumerate(node.input):
                if name == old:
                    node.input[i] = new
        self.dirty()

    def prune_dead(self) -> None:
        """Drop nodes whose outputs nobody reads, and unused initializers."""
        while True:
            _, consumers = self._build()
            keep = [
                n for n in self.nodes
                if any(o in self.outputs or consumers.get(o) for o in n.output if o)
            ]
            if len(keep) == len(self.nodes):
                break
            self.nodes = keep
            self.dirty()
        used = {i for n in self.nodes for i in n.input} | self.outputs | self.inputs
        for name in [k for k in self.inits if k not in used]:
            del self.inits[name]

    def toposort(self) -> None:
        """Order nodes so that every tensor is produced before it is read (stable otherwise)."""
        available = set(self.inits) | self.inputs | {""}
        pending = list(self.nodes)
        ordered: list[Any] = []
        while pending:
            rest = []
            for node in pending:
                if all(i in available for i in node.input):
                    ordered.append(node)
                    available.update(node.output)
                else:
                    rest.append(node)
            if len(rest) == len(pending):
                missing = sorted({i for n in rest for i in n.input if i not in available})[:5]
                raise ValueError(f"the ONNX graph reads tensors nothing produces: {missing}")
            pending = rest
        self.nodes = ordered
        self.dirty()

    def commit(self) -> Any:
        """Write nodes and initializers back; drop stale value_info (types may have changed)."""
        from onnx import helper

        self.prune_dead()
        self.toposort()
        del self.g.node[:]
        self.g.node.extend(self.nodes)
        del self.g.initializer[:]
        self.g.initializer.extend(self.inits.values())
        del self.g.value_info[:]
        if any(n.domain == MS_DOMAIN for n in self.nodes) and not any(o.domain == MS_DOMAIN for o in self.model.opset_import):
            self.model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
        return self.model

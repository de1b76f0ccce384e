"""Grouping layers by block, so that a model with hundreds of layers stays navigable.

A layer's block is its path up to the last numbered container item that has more
path after it (``bert.encoder.layer.3`` for ``bert.encoder.layer.3.attention.self.query``,
``layer1.0`` for ``layer1.0.conv1``), else its parent module (``bert.embeddings``),
else the model itself. A block bigger than ``chunk`` layers is cut into runs of ``chunk``.
"""

from __future__ import annotations

MODEL = "(model)"


def block_of(name: str) -> str:
    parts = name.split(".")
    for i in range(len(parts) - 2, -1, -1):
        if parts[i].isdigit():
            return ".".join(parts[: i + 1])
    return ".".join(parts[:-1]) or MODEL


def group_layers(names: list[str], chunk: int = 16) -> dict[str, list[str]]:
    """Blocks in model order, each with its layers; oversized blocks cut into numbered runs."""
    blocks: dict[str, list[str]] = {}
    for name in names:
        blocks.setdefault(block_of(name), []).append(name)
    groups: dict[str, list[str]] = {}
    for block, members in blocks.items():
        if len(members) <= chunk:
            groups[block] = members
            continue
        for start in range(0, len(members), chunk):
            part = members[start : start + chunk]
            groups[f"{block} [{part[0]} … {part[-1]}]"] = part
    return groups

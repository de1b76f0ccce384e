"""Search budgets: a target size (bytes, or a compression ratio) and a maximum metric drop.

Conventions, checked here before any work starts:

- ``target_size``: an ``int`` is bytes (``20_000``); a ``float`` is a compression ratio
  against the float model (``15.0``); a string is either (``"15x"`` is a ratio,
  ``"20000"``, ``"20kB"``, ``"20KiB"`` or ``"1.5MB"`` are bytes).
- ``max_drop``: how far the metric may fall below the float model's, in the metric's
  own units: for accuracy 0.01 is one point.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import StudioError
from .report import Z95

_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Budget:
    """A resolved budget: the size limit in bytes and/or the largest metric drop."""

    target_bytes: int | None
    max_drop: float | None
    float_size_bytes: int
    strict: bool = False  # the drop must be within max_drop with its 95% interval

    def status(self, drop: float, stderr: float | None, size_bytes: int) -> str:
        """"meets", "within noise" (the drop's 95% interval straddles max_drop) or "exceeds"."""
        if self.target_bytes is not None and size_bytes > self.target_bytes:
            return "exceeds"
        if self.max_drop is None:
            return "meets"
        noise = Z95 * (stderr or 0.0)
        if drop + noise <= self.max_drop:
            return "meets"
        if drop - noise > self.max_drop:
            return "exceeds"
        return "within noise"

    def accepts(self, drop: float, stderr: float | None, size_bytes: int) -> bool:
        """Within the budget: the measured drop (strict: its 95% interval too) and the size."""
        status = self.status(drop, stderr, size_bytes)
        if status == "exceeds":
            return False
        return status == "meets" or (not self.strict and (self.max_drop is None or drop <= self.max_drop))

    @property
    def target_ratio(self) -> float | None:
        return None if self.target_bytes is None else self.float_size_bytes / self.target_bytes

    def describe(self) -> str:
        parts = []
        if self.target_bytes is not None:
            parts.append(f"size <= {self.target_bytes} B ({self.target_ratio:.2f}x)")
        if self.max_drop is not None:
            parts.append(f"drop <= {self.max_drop:g}")
        return " and ".join(parts)


def parse_target_size(value: Any, float_size_bytes: int) -> int:
    """``value`` as bytes; see the module's conventions."""
    what = f"target_size={value!r}"
    if isinstance(value, bool):
        raise StudioError(f"{what}: give bytes as an int (20000) or a compression ratio as a float or 'Nx' (15.0, '15x')")
    if isinstance(value, str):
        text = value.strip().lower()
        if text.endswith("x"):
            try:
                ratio = float(text[:-1])
            except ValueError as exc:
                raise StudioError(f"{what}: a ratio is written like '15x'") from exc
            return _ratio_bytes(ratio, float_size_bytes, what)
        match = _SIZE.match(text)
        if not match or match.group(2) not in _UNITS:
            raise StudioError(f"{what}: write a ratio like '15x' or a size like '20000', '20kB' or '1.5MB'")
        size = float(match.group(1)) * _UNITS[match.group(2)]
        return _bytes(size, what)
    if isinstance(value, int):
        return _bytes(value, what)
    if isinstance(value, float):
        return _ratio_bytes(value, float_size_bytes, what)
    raise StudioError(f"{what}: give bytes as an int or a ratio as a float or 'Nx'")


def _bytes(size: float, what: str) -> int:
    if not math.isfinite(size) or size < 1:
        raise StudioError(f"{what}: a size must be a positive number of bytes")
    return int(size)


def _ratio_bytes(ratio: float, float_size_bytes: int, what: str) -> int:
    if not math.isfinite(ratio) or ratio < 1:
        raise StudioError(f"{what}: a compression ratio must be at least 1 (1.0 is the float model's size)")
    return int(float_size_bytes / ratio)


def parse_max_drop(value: Any, baseline_metric: float) -> float:
    what = f"max_drop={value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StudioError(f"{what}: give the largest metric drop as a number, e.g. 0.01 for one point")
    drop = float(value)
    if not math.isfinite(drop) or drop < 0:
        raise StudioError(f"{what}: the drop must be zero or positive (0.01 is one point of accuracy)")
    if 0 <= baseline_metric <= 1 and drop >= 1:
        raise StudioError(
            f"{what} is the metric's whole range or more; max_drop is a fraction of the metric "
            f"(0.01 = one point), so perhaps you meant {drop / 100:g}"
        )
    return drop


def resolve_budget(target_size: Any, max_drop: Any, float_size_bytes: int, baseline_metric: float, strict: bool = False) -> Budget:
    if target_size is None and max_drop is None:
        raise StudioError("give a budget: target_size (bytes, or a ratio such as '15x') and/or max_drop (0.01 = one point)")
    target = None if target_size is None else parse_target_size(target_size, float_size_bytes)
    drop = None if max_drop is None else parse_max_drop(max_drop, baseline_metric)
    return Budget(target, drop, float_size_bytes, bool(strict))

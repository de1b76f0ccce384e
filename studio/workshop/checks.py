"""Checking a workshop answer: pure functions from an answer to a Verdict, no widgets.

An answer comes from a widget that the page's user controls (in Voilà any value that
the widget's validation accepts), so every checker takes any value and never raises
on a bad one: an answer that is not a number, or not one of the options, gets a hint.
The expected answers are computed by the notebooks from the engine, not typed in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

RIGHT = "✓"
WRONG = "✗"
MAX_TEXT = 40  # longer text is not a number anyone typed
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_UNITS = ("×", "x", "%", "db", "bits", "bit", "bytes", "byte", "b", "pts", "pt")


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check: right or not, and what to show (a ✓ or a hint)."""

    ok: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        return cls(ok=bool(data["ok"]), message=str(data["message"]))


def right(explain: str = "") -> Verdict:
    return Verdict(True, f"{RIGHT} Right." + (f" {explain}" if explain else ""))


def wrong(hint: str) -> Verdict:
    return Verdict(False, f"{WRONG} Not yet. {hint}".rstrip())


def parse_number(value: Any) -> float | None:
    """A finite number from a widget value or typed text, else None.

    Accepts ``4``, ``" 4.0 "``, ``"4x"``, ``"4×"``, ``"25 %"`` (25, not 0.25),
    ``"6 dB"``, ``"1,234"`` and ``"1 234"``. Never evaluates anything.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
        return number if math.isfinite(number) else None
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        return None
    text = value.strip().lower().replace("\u2212", "-")  # a typographic minus
    for unit in _UNITS:
        if text.endswith(unit):
            text = text[: -len(unit)].strip()
            break
    text = text.replace(",", "").replace(" ", "").replace("_", "")
    if not _NUMBER.match(text):
        return None
    number = float(text)
    return number if math.isfinite(number) else None


def check_number(
    answer: Any,
    expected: float,
    *,
    tolerance: float = 0.0,
    relative: bool = False,
    explain: str = "",
    too_low: str = "",
    too_high: str = "",
    unit: str = "",
) -> Verdict:
    """Right when ``answer`` is within ``tolerance`` of ``expected`` (a fraction of it
    when ``relative``). ``too_low``/``too_high`` are the hints for each side."""
    value = parse_number(answer)
    if value is None:
        return wrong("Give a number" + (f" (in {unit})" if unit else "") + ", e.g. 4 or 3.5.")
    allowed = abs(expected) * tolerance if relative else tolerance
    if abs(value - expected) <= allowed + 1e-9 * max(1.0, abs(expected)):
        return right(explain)
    hint = too_low if value < expected else too_high
    return wrong(hint or ("Too low." if value < expected else "Too high."))


def check_choice(
    answer: Any,
    expected: Any,
    *,
    explain: str = "",
    hints: Mapping[Any, str] | None = None,
    default_hint: str = "",
) -> Verdict:
    """Right when ``answer == expected``; else the hint for that answer, or ``default_hint``."""
    if answer is None or answer == "":
        return wrong("Pick an answer first.")
    if answer == expected:
        return right(explain)
    try:
        hint = (hints or {}).get(answer)
    except TypeError:  # an unhashable value from a widget
        hint = None
    return wrong(hint or default_hint or "Look again at the figures above.")

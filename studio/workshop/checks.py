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


def check_budget(
    size_bytes: Any,
    delta: Any,
    delta_stderr: Any,
    *,
    target_bytes: int,
    max_drop: float,
    float_size_bytes: int,
    explain: str = "",
    too_big: str = "",
    too_lossy: str = "",
    is_float: bool = False,
) -> Verdict:
    """A plan's measured size and metric change (``delta``, a fraction: -0.01 is one point
    lost) against a budget: at most ``target_bytes`` and a drop of at most ``max_drop``.

    The engine's ``Budget`` decides, as ``session.search`` does (the measured drop must be
    within ``max_drop``; "within noise" is said, not refused). The float model itself
    (``is_float``, or a size no smaller than the float model's) is no answer yet. ``too_big``/``too_lossy`` are the hints for each way to miss."""
    from ..engine.budget import Budget  # the search's own rule, not a copy of it

    size, change = parse_number(size_bytes), parse_number(delta)
    stderr = parse_number(delta_stderr)
    if size is None or change is None:
        return wrong("Measure a plan first: pick bits for the layers, then press Check.")
    if is_float or size >= float_size_bytes:
        return wrong("That is the float model: every layer still at 32 bits. Pick fewer bits for the layers, then press Check.")
    budget = Budget(int(target_bytes), float(max_drop), int(float_size_bytes))
    drop = -change
    if not budget.accepts(drop, stderr, int(size)):
        over, lossy = size > target_bytes, drop > max_drop
        said = f"{size / 1000:.2f} KB at {-100 * drop:+.1f} pts."
        if over and lossy:
            hints = " ".join(h.strip() for h in (too_lossy, too_big) if h)
            return wrong(f"{said} Too big and too inaccurate. " + (hints or "Look at the heatmap again."))
        if over:
            return wrong(f"{said} Over {target_bytes / 1000:g} KB. " + (too_big or "Lower the bits of the biggest layer."))
        return wrong(f"{said} More than {100 * max_drop:g} point lost. " + (too_lossy or "Give the most sensitive layer more bits."))
    noise = ""
    if stderr is not None:
        half = 1.96 * stderr
        noise = f" (±{100 * half:.1f} at 95%)"
        if budget.status(drop, stderr, int(size)) == "within noise":
            noise += ": within the budget as measured, but the interval reaches past it, so the true drop may be a little over"
    return right(f"{size / 1000:.2f} KB, {float_size_bytes / size:.1f}× smaller, at {-100 * drop:+.1f} pts{noise}. " + explain)

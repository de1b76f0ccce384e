"""Exercise widgets: a question, an answer widget, a Check button and the feedback.

They work the same in Jupyter and in Voilà (where code cannot be edited): the answer
is a slider, a dropdown or a text box, and the Check button shows the checker's
Verdict. Changing the answer clears the old feedback, so a ✓ always belongs to the
answer on screen. CSS hooks: ``workshop-exercise``, ``workshop-exercise-<name>``,
``workshop-check`` (the button) and ``.workshop-verdict[data-ok=true|false]``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as W

from .checks import Verdict, check_choice, check_number

Checker = Callable[[Any], Verdict]
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class Exercise(W.VBox):
    """One exercise. ``check(answer) -> Verdict`` decides; ``name`` is its CSS hook."""

    def __init__(self, name: str, question: str, answer: W.ValueWidget, check: Checker) -> None:
        if not _NAME.match(name):
            raise ValueError(f"exercise name {name!r} must be lower-case letters, digits and dashes (it is a CSS class)")
        super().__init__()
        self.name = name
        self.answer = answer
        self._check = check
        self.verdict: Verdict | None = None
        self.question = W.HTML(f"<div class='workshop-question'>{question}</div>")
        self.button = W.Button(description="Check", tooltip="check your answer", button_style="primary")
        self.button.add_class("workshop-check")
        self.feedback = W.HTML("")
        self.feedback.add_class("workshop-feedback")
        answer.add_class("workshop-answer")
        self.button.on_click(lambda _: self.check())
        answer.observe(lambda _: self._clear(), names="value")
        self.children = [self.question, W.HBox([answer, self.button], layout=W.Layout(align_items="center")), self.feedback]
        self.add_class("workshop-exercise")
        self.add_class(f"workshop-exercise-{name}")

    def check(self) -> Verdict:
        """Check the answer on screen (what the Check button does)."""
        verdict = self._check(self.answer.value)
        self.verdict = verdict
        state = "true" if verdict.ok else "false"
        self.feedback.value = f"<div class='workshop-verdict' data-ok='{state}'>{html.escape(verdict.message)}</div>"
        return verdict

    def _clear(self) -> None:
        self.verdict = None
        self.feedback.value = ""


def number_exercise(
    name: str,
    question: str,
    expected: float,
    *,
    min: float,
    max: float,
    step: float = 1,
    start: float | None = None,
    tolerance: float = 0.0,
    relative: bool = False,
    explain: str = "",
    too_low: str = "",
    too_high: str = "",
    unit: str = "",
) -> Exercise:
    """A slider answer (integer when ``step`` and the bounds are whole numbers)."""
    whole = all(float(v).is_integer() for v in (min, max, step))
    kind = W.IntSlider if whole else W.FloatSlider
    value = min if start is None else start
    slider = kind(value=value, min=min, max=max, step=step, description=unit, continuous_update=False, readout=True)
    slider.style.description_width = "initial"
    return Exercise(
        name, question, slider,
        lambda a: check_number(a, expected, tolerance=tolerance, relative=relative, explain=explain, too_low=too_low, too_high=too_high, unit=unit),
    )


def text_exercise(
    name: str,
    question: str,
    expected: float,
    *,
    tolerance: float = 0.0,
    relative: bool = False,
    explain: str = "",
    too_low: str = "",
    too_high: str = "",
    unit: str = "",
    placeholder: str = "type a number",
) -> Exercise:
    """A text-box answer for a number (``"4"``, ``"4x"``, ``"25 %"`` all parse)."""
    box = W.Text(value="", placeholder=placeholder, continuous_update=True)
    return Exercise(
        name, question, box,
        lambda a: check_number(a, expected, tolerance=tolerance, relative=relative, explain=explain, too_low=too_low, too_high=too_high, unit=unit),
    )


def choice_exercise(
    name: str,
    question: str,
    options: Sequence[str],
    expected: str,
    *,
    explain: str = "",
    hints: dict[str, str] | None = None,
    default_hint: str = "",
) -> Exercise:
    """A dropdown answer; it starts on "choose…", which is no answer."""
    if expected not in options:
        raise ValueError(f"the expected answer {expected!r} is not one of the options {list(options)}")
    if "" in options:
        raise ValueError("an option may not be the empty string: it stands for 'choose…' (no answer yet)")
    dropdown = W.Dropdown(options=[("choose…", "")] + [(o, o) for o in options], value="")
    dropdown.layout = W.Layout(width="max-content", min_width="14em")
    return Exercise(name, question, dropdown, lambda a: check_choice(a, expected, explain=explain, hints=hints, default_hint=default_hint))

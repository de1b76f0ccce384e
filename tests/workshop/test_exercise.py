"""Exercise widgets, driven headless: set the answer widget, press Check, read the feedback."""

import ipywidgets as W
import pytest

from studio.workshop import Exercise, choice_exercise, number_exercise, text_exercise
from studio.workshop.checks import check_choice


def shown(ex: Exercise) -> str:
    return ex.feedback.value


def test_number_exercise_shows_a_tick_for_the_right_answer_and_a_hint_otherwise():
    ex = number_exercise("levels", "How many levels?", 7, min=2, max=16, too_high="One code is left out.", explain="−3 … +3.")
    assert isinstance(ex.answer, W.IntSlider) and ex.answer.value == 2
    assert "workshop-exercise-levels" in ex._dom_classes and "workshop-check" in ex.button._dom_classes
    ex.answer.value = 8
    ex.button.click()
    assert "data-ok='false'" in shown(ex) and "One code is left out." in shown(ex) and not ex.verdict.ok
    ex.answer.value = 7
    assert shown(ex) == "" and ex.verdict is None  # a new answer clears the old feedback
    ex.button.click()
    assert "data-ok='true'" in shown(ex) and "✓ Right. −3 … +3." in shown(ex)


def test_float_slider_when_steps_are_fractions():
    ex = number_exercise("db", "dB per bit?", 6.3, min=0, max=20, step=0.5, tolerance=1.0, unit="dB")
    assert isinstance(ex.answer, W.FloatSlider) and ex.answer.description == "dB"
    ex.answer.value = 6.5
    assert ex.check().ok


def test_text_exercise_parses_what_is_typed():
    ex = text_exercise("table", "Table bytes?", 15, unit="bytes")
    ex.answer.value = "fifteen"
    assert "Give a number (in bytes)" in ex.check().message
    ex.answer.value = "15 bytes"
    assert ex.check().ok


def test_choice_exercise_starts_unanswered():
    ex = choice_exercise("layer", "Which layer?", ["features.0", "features.3"], "features.3", hints={"features.0": "That one is small."})
    assert ex.answer.value == ""
    assert ex.check().message == "✗ Not yet. Pick an answer first."
    ex.answer.value = "features.0"
    assert "That one is small." in ex.check().message
    ex.answer.value = "features.3"
    assert ex.check().ok


def test_feedback_is_escaped():
    ex = Exercise("x", "Q?", W.Text(), lambda a: check_choice(a, "a", default_hint="<script>alert(1)</script>"))
    ex.answer.value = "b"
    ex.check()
    assert "<script>" not in shown(ex) and "&lt;script&gt;" in shown(ex)


def test_bad_definitions_are_refused():
    with pytest.raises(ValueError, match="not one of the options"):
        choice_exercise("q", "Q?", ["a", "b"], "c")
    with pytest.raises(ValueError, match="empty string"):
        choice_exercise("q", "Q?", ["", "b"], "b")
    with pytest.raises(ValueError, match="CSS class"):
        number_exercise("Bad Name", "Q?", 1, min=0, max=2)

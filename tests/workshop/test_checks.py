"""The answer checkers: any widget value in, a Verdict out, never an exception."""

import math

import pytest

from studio.workshop.checks import Verdict, check_choice, check_number, parse_number


@pytest.mark.parametrize(
    "text, number",
    [
        ("4", 4.0), (" 4.0 ", 4.0), ("4x", 4.0), ("4 ×", 4.0), ("25 %", 25.0), ("6 dB", 6.0), ("6db", 6.0),
        ("1,234", 1234.0), ("1 234", 1234.0), ("\u22123", -3.0), ("-0.5", -0.5), (".5", 0.5), ("1e3", 1000.0),
        ("15 bytes", 15.0), ("3.4 bits", 3.4), (7, 7.0), (2.5, 2.5),
    ],
)
def test_parse_number_reads_what_people_type(text, number):
    assert parse_number(text) == pytest.approx(number)


@pytest.mark.parametrize(
    "value",
    ["", "four", "nan", "inf", "1e999", "4 apples", "__import__('os').system('true')", "1" * 41, "1..2",
     None, True, [], {}, math.nan, math.inf],
)
def test_parse_number_refuses_anything_else(value):
    assert parse_number(value) is None


def test_check_number_accepts_within_tolerance_and_hints_by_side():
    ok = check_number("6.5", 6.0, tolerance=1.0, explain="About 6 dB.")
    assert ok.ok and ok.message.startswith("✓") and "About 6 dB." in ok.message
    low = check_number(2, 6.0, tolerance=1.0, too_low="Go higher.", too_high="Go lower.")
    high = check_number(9, 6.0, tolerance=1.0, too_low="Go higher.", too_high="Go lower.")
    assert not low.ok and low.message.startswith("✗") and "Go higher." in low.message
    assert not high.ok and "Go lower." in high.message
    assert check_number(7, 6.0, tolerance=1.0).ok  # the edge counts
    assert not check_number(7.01, 6.0, tolerance=1.0).ok


def test_check_number_relative_and_exact():
    assert check_number(105, 100, tolerance=0.05, relative=True).ok
    assert not check_number(106, 100, tolerance=0.05, relative=True).ok
    assert check_number("15", 15).ok
    assert not check_number(16, 15).ok


def test_check_number_asks_for_a_number():
    verdict = check_number("seven", 7, unit="bits")
    assert not verdict.ok and "Give a number (in bits)" in verdict.message


def test_check_choice():
    assert check_choice("features.0", "features.0", explain="Because.").message == "✓ Right. Because."
    assert check_choice("", "features.0").message == "✗ Not yet. Pick an answer first."
    assert check_choice(None, "features.0").message == "✗ Not yet. Pick an answer first."
    hinted = check_choice("b", "a", hints={"b": "b is the bias."}, default_hint="Look again.")
    assert not hinted.ok and "b is the bias." in hinted.message
    assert "Look again." in check_choice("c", "a", hints={"b": "b is the bias."}, default_hint="Look again.").message
    assert not check_choice(["a"], "a").ok  # an unhashable value is just wrong


def test_verdict_round_trips():
    verdict = check_number(4, 4)
    assert Verdict.from_dict(verdict.to_dict()) == verdict

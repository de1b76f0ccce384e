"""Notebook 4's checks and widgets: a plan against a budget (wrong plans get a hint that
says what to change, a plan within budget gets the ✓), the plan picker, and the figure
that puts the picked plan beside the search's front."""

import math

import pytest

from studio import Plan
from studio.engine.search_space import SearchSpace
from studio.workshop import FrontFigure, PlanPicker, check_budget, plan_exercise
from studio.workshop.budget import plan_of
from studio.workshop.measure import one_layer_back
from studio.workshop.tables import front_table_html, layer_bytes_html, ranking_html

BUDGET = dict(target_bytes=10_000, max_drop=0.01, float_size_bytes=97_152)
GOOD = (8, 4, 3, 3)  # features.0, features.3, features.7, classifier.1: about 8.9 KB, under a point lost


# -- the pure check -------------------------------------------------------------------------
def test_a_plan_within_the_budget_passes_with_its_numbers():
    verdict = check_budget(8_912, -0.002, 0.003, **BUDGET, explain="Compare it with the search.")
    assert verdict.ok and verdict.message.startswith("✓ Right.")
    assert "8.91 KB" in verdict.message and "10.9× smaller" in verdict.message and "-0.2 pts" in verdict.message
    assert "±0.6 at 95%" in verdict.message and "Compare it with the search." in verdict.message
    assert "within the budget as measured" not in verdict.message  # the whole interval is inside


def test_within_noise_passes_as_the_search_does_but_says_so():
    verdict = check_budget(9_000, -0.008, 0.005, **BUDGET)  # -0.8 ± 1.0: the interval reaches past -1
    assert verdict.ok and "the true drop may be a little over" in verdict.message
    assert check_budget(9_000, -0.01, 0.005, **BUDGET).ok  # the edge counts


def test_too_big_gets_the_size_hint():
    verdict = check_budget(11_527, -0.002, 0.004, **BUDGET, too_big="Lower features.7 first.", too_lossy="More bits for features.3.")
    assert not verdict.ok and verdict.message.startswith("✗ Not yet.")
    assert "11.53 KB" in verdict.message and "Over 10 KB" in verdict.message and "Lower features.7 first." in verdict.message
    assert "features.3" not in verdict.message


def test_too_lossy_gets_the_accuracy_hint():
    verdict = check_budget(8_114, -0.092, 0.0135, **BUDGET, too_big="Lower features.7 first.", too_lossy="More bits for features.3.")
    assert not verdict.ok and "-9.2 pts" in verdict.message and "More than 1 point lost" in verdict.message
    assert "More bits for features.3." in verdict.message and "features.7" not in verdict.message
    assert not check_budget(9_000, -0.0101, 0.0, **BUDGET).ok  # just over, with no noise


def test_both_wrong_says_both():
    verdict = check_budget(12_000, -0.05, 0.01, **BUDGET, too_big="Lower features.7 first.", too_lossy="More bits for features.3.")
    assert not verdict.ok and "Too big and too inaccurate" in verdict.message
    assert "More bits for features.3. Lower features.7 first." in verdict.message


def test_default_hints_are_actionable():
    assert "biggest layer" in check_budget(12_000, 0.0, 0.0, **BUDGET).message
    assert "most sensitive layer" in check_budget(9_000, -0.05, 0.01, **BUDGET).message


@pytest.mark.parametrize("size, delta", [(None, None), ("abc", 0.0), (9_000, "x"), (math.nan, 0.0), (True, 0.0), ([], {})])
def test_no_plan_measured_yet_is_a_hint_not_an_error(size, delta):
    verdict = check_budget(size, delta, None, **BUDGET)
    assert not verdict.ok and "Measure a plan first" in verdict.message


def test_the_float_model_is_no_answer():
    assert "That is the float model" in check_budget(97_152, 0.0, 0.0, **BUDGET).message
    verdict = check_budget(96_103, 0.0, 0.0, **BUDGET, is_float=True)  # the float plan's file, a little smaller
    assert not verdict.ok and "That is the float model" in verdict.message


# -- the picker and the exercise -------------------------------------------------------------
@pytest.fixture(scope="module")
def table(cnn_session):
    return cnn_session.sensitivity(bits=(2, 3, 4), prune=())


def test_picker_measures_the_picked_plan(cnn_session):
    picker = PlanPicker(cnn_session)
    assert picker.value == (32, 32, 32, 32) and picker.plan == Plan()
    assert picker.report.plan == Plan() and "workshop-plan-picker" in picker._dom_classes
    for dropdown, bits in zip(picker.dropdowns, GOOD):
        dropdown.value = bits
    assert picker.value == GOOD and picker.plan == plan_of(cnn_session, GOOD)
    expected = cnn_session.evaluate(plan_of(cnn_session, GOOD))
    assert picker.report.size_bytes == expected.size_bytes and picker.report.metric == expected.metric
    assert f"{expected.size_bytes / 1000:.2f}" in picker.readout.value and f"{100 * expected.metric:.1f}%" in picker.readout.value


def test_plan_exercise_hints_until_the_plan_fits(cnn_session, table):
    picker = PlanPicker(cnn_session)
    ex = plan_exercise("hand-plan", "Under 10 KB?", cnn_session, 10_000, 0.01, table=table, picker=picker)
    assert ex.answer is picker and "workshop-exercise-hand-plan" in ex._dom_classes
    assert "That is the float model" in ex.check().message  # nothing picked yet: a hint, no error

    for dropdown in picker.dropdowns:  # every layer at 2 bits: small, and far too lossy
        dropdown.value = 2
    assert ex.feedback.value == ""
    verdict = ex.check()
    assert not verdict.ok and "alone, features.3 at 2 bits 84" in verdict.message and "and features.0 at 2 bits 5" in verdict.message
    assert "Give the costly layers more bits" in verdict.message

    picker.dropdowns[2].value = 8  # features.7 back to 8 bits: too big, and the rest still too lossy
    verdict = ex.check()
    assert not verdict.ok and "Too big and too inaccurate" in verdict.message
    assert "alone, features.3 at 2 bits" in verdict.message and "features.7 is" in verdict.message

    for dropdown, bits in zip(picker.dropdowns, (8, 4, 8, 3)):  # accurate, but features.7 at 8 bits is too big
        dropdown.value = bits
    verdict = ex.check()
    assert not verdict.ok and "Over 10 KB" in verdict.message
    assert "features.7 is" in verdict.message and "lower its bits first" in verdict.message and "heatmap" not in verdict.message

    for dropdown, bits in zip(picker.dropdowns, GOOD):
        dropdown.value = bits
    verdict = ex.check()
    assert verdict.ok and "data-ok='true'" in ex.feedback.value
    report = cnn_session.evaluate(plan_of(cnn_session, GOOD))
    assert report.size_bytes <= 10_000 and -report.delta <= 0.01  # the ✓ agrees with the engine


def test_plan_exercise_without_a_table_still_hints(cnn_session):
    picker = PlanPicker(cnn_session)
    ex = plan_exercise("hand-plan", "Under 10 KB?", cnn_session, 10_000, 0.01, picker=picker)
    for dropdown in picker.dropdowns:
        dropdown.value = 2
    assert "the heatmap's red rows" in ex.check().message


# -- the figure and the tables ----------------------------------------------------------------
@pytest.fixture(scope="module")
def result(cnn_session):
    space = SearchSpace(bits=(2, 3, 4, 8), prune=(0.0,), granularity=("channel",), clip=("minmax",), cluster=(False,))
    return cnn_session.search(target_size=10_000, max_drop=0.01, space=space, evaluations=4)


def test_front_figure_follows_the_picker(cnn_session, result):
    uniform = {b: cnn_session.evaluate(Plan.uniform(bits=b)) for b in (3, 4, 8)}
    front = FrontFigure(cnn_session, result, uniform)
    names = [t.name for t in front.figure.data]
    assert names == ["every layer at b bits", "search candidates", "Pareto front", "search's choice", "your plan"]
    assert len(front.figure.data[1].x) == len(result.candidates) and len(front.figure.data[2].x) == len(result.pareto())
    assert front.figure.layout.shapes[0].x1 == 10.0  # the budget box ends at 10 KB
    picker = PlanPicker(cnn_session)
    front.follow(picker)
    assert front.figure.data[-1].x == () and "Pick a plan" in front.readout.value  # float: no star yet
    for dropdown, bits in zip(picker.dropdowns, GOOD):
        dropdown.value = bits
    assert front.figure.data[-1].x == (picker.report.size_bytes / 1000,)
    assert "your plan is" in front.readout.value and f"{picker.report.size_bytes / 1000:.2f}" in front.readout.value
    front.set_projector(True)
    assert front.figure.layout.font.size == 20


def test_tables(cnn_session, table, result):
    sizes = layer_bytes_html(cnn_session, table)
    assert all(name in sizes for name in cnn_session.layer_names) and "<th>3 bits</th>" in sizes and "77%" in sizes
    proxy = cnn_session.sensitivity(bits=(2, 3, 4), prune=(), mode="proxy")
    ranking = ranking_html(table, proxy)
    assert ranking.count("<tr>") == 1 + len(cnn_session.layer_names) and "Spearman" in ranking
    front = front_table_html(result, cnn_session.layer_names)
    assert front.count("<tr") == 1 + len(result.pareto()) and "font-weight:700" in front  # the choice is marked


def test_one_layer_back(cnn_session):
    back = one_layer_back(cnn_session, bits=3, back_to=8)
    assert list(back) == cnn_session.layer_names
    assert back["features.3"] == cnn_session.evaluate(Plan.uniform(bits=3).with_layer("features.3", bits=8)).metric

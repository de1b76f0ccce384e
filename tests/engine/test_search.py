"""Automatic mixed precision: budgets met and measured, deterministic, bad budgets refused
with nothing changed, results round-trip through JSON, exports verify, and the CLI."""

import itertools
import json
import random
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from studio.cli import main
from studio.engine import Cancelled, LayerSpec, Plan, Session, StudioError
from studio.engine.budget import parse_target_size, resolve_budget
from studio.engine.damage import lower_hull
from studio.engine.knapsack import frontier
from studio.engine.search import SearchCandidate, SearchResult, search
from studio.engine.search_space import SearchSpace

SMALL = SearchSpace(bits=(2, 3, 4, 8), prune=(0.0, 0.5), granularity=("channel", "tensor"), clip=("minmax",))


pytestmark = pytest.mark.usefixtures("one_thread")  # many small passes: one intra-op thread is faster


def timeless(result: SearchResult) -> dict:
    data = result.to_dict()
    data.pop("seconds"), data.pop("stage_seconds")
    data["sensitivity"].pop("seconds"), data["sensitivity"].pop("forward_seconds")
    return data


@pytest.fixture(scope="module")
def mlp_drop(mlp_session):
    return search(mlp_session, max_drop=0.01, space=SMALL, evaluations=10)


def test_the_drop_budget_is_met_by_what_evaluate_measures(mlp_session, mlp_drop):
    result = mlp_drop
    best = result.best
    assert result.plan == best.plan
    assert best.drop <= 0.01
    assert best.budget in ("meets", "within noise")
    assert best.compression_ratio > 8  # far from float: the search really compressed
    report = mlp_session.evaluate(result.plan)
    assert report.metric == best.metric and report.size_bytes == best.size_bytes
    assert report.delta_stderr == best.delta_stderr and report.fidelity.kl == best.kl
    assert 1 < len(result.candidates) <= 10
    # the chosen plan is the smallest evaluated candidate within the budget, measured and smoothed
    within = [c for c in result.candidates if c.drop <= 0.01 and c.smoothed_drop <= 0.01 + 1e-12]
    assert best.size_bytes == min(c.size_bytes for c in within)
    for c in result.candidates:
        noise = 1.96 * c.delta_stderr
        expected = "meets" if c.drop + noise <= 0.01 else "exceeds" if c.drop - noise > 0.01 else "within noise"
        assert c.budget == expected


def test_pareto_marks_the_candidates_nothing_beats(mlp_drop):
    cands = mlp_drop.candidates
    for c in cands:
        beaten = any(o.size_bytes <= c.size_bytes and o.metric >= c.metric and (o.size_bytes < c.size_bytes or o.metric > c.metric) for o in cands)
        assert c.pareto == (not beaten)
    front = mlp_drop.pareto()
    assert [c.size_bytes for c in front] == sorted(c.size_bytes for c in front)
    assert mlp_drop.best in front


def test_a_size_budget_gives_the_best_measured_plan_that_fits(cnn_session):
    result = search(cnn_session, target_size="10x", space=SMALL, evaluations=8)
    target = int(cnn_session.float_size_bytes / 10)
    assert result.target_size_bytes == target
    assert result.best.size_bytes <= target
    assert result.best.metric == max(c.metric for c in result.candidates if c.size_bytes <= target)
    assert all(c.size_bytes <= target for c in result.candidates if c.budget == "meets")
    as_bytes = search(cnn_session, target_size=target, space=SMALL, evaluations=8)
    assert as_bytes.plan == result.plan


def test_both_budgets_give_the_smallest_plan_meeting_both(cnn_session):
    result = search(cnn_session, target_size=6.0, max_drop=0.02, space=SMALL, evaluations=10)
    assert result.best.size_bytes <= cnn_session.float_size_bytes / 6
    assert result.best.drop <= 0.02


def test_strict_needs_the_whole_interval_within_the_budget(mlp_session):
    result = search(mlp_session, max_drop=0.01, space=SMALL, evaluations=10, strict=True)
    assert result.strict and result.best.budget == "meets"
    assert result.best.drop + 1.96 * result.best.delta_stderr <= 0.01


def test_the_search_is_deterministic_for_a_seed(samples):
    sample = samples["digits-mlp"]
    runs = [search(Session(sample.model, sample.eval_data), max_drop=0.01, space=SMALL, evaluations=8, seed=3) for _ in range(2)]
    assert timeless(runs[0]) == timeless(runs[1])


def test_the_chosen_plan_exports_and_verifies(mlp_session, mlp_drop, tmp_path):
    path = mlp_session.export(mlp_drop.plan, tmp_path / "chosen.studio", format="studio")
    check = mlp_session.verify(path)
    assert check.file_bytes == mlp_drop.best.size_bytes == path.stat().st_size
    assert check.metric == pytest.approx(mlp_drop.best.metric, abs=1e-9)


def test_progress_reaches_the_end_and_cancel_stops(mlp_session):
    calls = []
    search(mlp_session, max_drop=0.01, space=SMALL, evaluations=4, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (1000, 1000)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    asked = []
    with pytest.raises(Cancelled):
        search(mlp_session, max_drop=0.01, space=SMALL, cancel=lambda: asked.append(1) or len(asked) > 30)


def test_an_executor_runs_the_sensitivity_step(tiny):
    model, data = tiny
    local = search(Session(model, data), max_drop=0.05, space=SMALL, evaluations=6)
    with ThreadPoolExecutor(max_workers=2) as executor:
        fanned = search(Session(model, data), max_drop=0.05, space=SMALL, evaluations=6, executor=executor)
    assert timeless(fanned) == timeless(local)


def test_a_torchscript_model_is_searched_with_the_weight_error_proxy(tiny):
    model, data = tiny
    session = Session(torch.jit.script(model), data)
    result = search(session, max_drop=0.05, space=SMALL, evaluations=4)
    assert result.best.drop <= 0.05
    assert session.evaluate(result.plan).size_bytes == result.best.size_bytes


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "give a budget"),
        ({"max_drop": -0.01}, "must be zero or positive"),
        ({"max_drop": float("nan")}, "must be zero or positive"),
        ({"max_drop": 1.0}, "perhaps you meant 0.01"),
        ({"max_drop": "1%"}, "as a number"),
        ({"target_size": True}, "give bytes as an int"),
        ({"target_size": 0}, "positive number of bytes"),
        ({"target_size": 0.5}, "at least 1"),
        ({"target_size": "fifteen"}, "write a ratio like '15x'"),
        ({"target_size": "15y"}, "write a ratio like '15x'"),
        ({"target_size": "1000x"}, "cannot be reached: the smallest plan"),
        ({"target_size": 100}, "cannot be reached"),
        ({"max_drop": 0.01, "space": {"bits": [1]}}, "bits must be integers in 2..8"),
        ({"max_drop": 0.01, "space": {"granularity": ["row"]}}, "granularity must hold some of"),
        ({"max_drop": 0.01, "space": {"speed": 1}}, "unknown search space key"),
        ({"max_drop": 0.01, "space": "small"}, "space must be a SearchSpace"),
        ({"max_drop": 0.01, "evaluations": 0}, "evaluations must be a positive integer"),
    ],
)
def test_bad_budgets_are_refused_before_any_evaluation(mlp_session, monkeypatch, kwargs, message):
    evaluated = []
    monkeypatch.setattr(mlp_session, "evaluate", lambda *a, **k: evaluated.append(1))
    with pytest.raises(StudioError, match=message):
        search(mlp_session, **({"space": SMALL} | kwargs))
    assert not evaluated


def test_contradicting_budgets_are_refused_and_change_nothing(samples):
    sample = samples["digits-cnn"]
    before = {k: v.clone() for k, v in sample.model.state_dict().items()}
    session = Session(sample.model, sample.eval_data)
    plan = Plan.uniform(4)
    reference = session.evaluate(plan)
    with pytest.raises(StudioError, match="the budgets contradict each other"):
        search(session, target_size="18x", max_drop=0.0, space=SMALL, evaluations=6)
    after = session.evaluate(plan)
    assert (after.metric, after.size_bytes, after.delta_stderr) == (reference.metric, reference.size_bytes, reference.delta_stderr)
    assert all(torch.equal(before[k], v) for k, v in sample.model.state_dict().items())


def test_size_conventions():
    assert parse_target_size(20000, 100_000) == 20000
    assert parse_target_size("20000", 100_000) == 20000
    assert parse_target_size("20kB", 100_000) == 20000
    assert parse_target_size("2KiB", 100_000) == 2048
    assert parse_target_size("0.1MB", 1_000_000) == 100_000
    assert parse_target_size(4.0, 100_000) == 25000
    assert parse_target_size("4x", 100_000) == parse_target_size("4X", 100_000) == 25000
    budget = resolve_budget("4x", 0.01, 100_000, 0.9)
    assert budget.target_ratio == 4.0 and budget.max_drop == 0.01
    assert budget.status(0.005, 0.001, 25000) == "meets"
    assert budget.status(0.009, 0.002, 25000) == "within noise"
    assert budget.status(0.02, 0.001, 25000) == "exceeds"
    assert budget.status(0.0, 0.0, 25001) == "exceeds"


def test_every_result_round_trips_through_json(mlp_drop):
    again = SearchResult.from_dict(json.loads(json.dumps(mlp_drop.to_dict())))
    assert again == mlp_drop
    assert again.best == mlp_drop.best and again.pareto() == mlp_drop.pareto()
    cand = mlp_drop.candidates[0]
    assert SearchCandidate.from_dict(json.loads(json.dumps(cand.to_dict()))) == cand
    assert SearchSpace.from_dict(json.loads(json.dumps(SMALL.to_dict()))) == SMALL
    saved = mlp_drop.to_dict()  # a result saved before param_dtype existed searched float32 parameters
    del saved["space"]["param_dtype"]
    assert SearchResult.from_dict(saved).space.param_dtype == ("float32",)
    assert SearchSpace.from_dict({"bits": [2, 4]}).param_dtype == SearchSpace().param_dtype  # a new partial space: the default


def test_the_space_lists_its_options():
    space = SearchSpace(bits=(2, 8), prune=(0.0,), granularity=("channel",), clip=("minmax", "mse"), fine_max_bits=4, param_dtype=("float32",))
    assert space.options() == [
        LayerSpec(),
        LayerSpec(bits=2, cluster=True),
        LayerSpec(bits=2),
        LayerSpec(bits=2, clip="mse"),
        LayerSpec(bits=8),  # no k-means and no mse above fine_max_bits
    ]
    half = LayerSpec(bits=8, cluster=True, param_dtype="float16")  # float16 scales and biases by default
    assert SearchSpace(cluster=(True,), bits=(8,), prune=(0.0,), keep_float=False).options() == [half]


def test_the_knapsack_front_is_the_least_damage_for_every_budget():
    rng = random.Random(0)
    sizes = [[rng.randint(1, 60) for _ in range(4)] for _ in range(4)]
    damages = [[rng.random() for _ in range(4)] for _ in range(4)]
    points = frontier(sizes, damages, buckets=10_000)  # buckets of one byte: exact
    brute = {}
    for choice in itertools.product(range(4), repeat=4):
        b = sum(s[o] for s, o in zip(sizes, choice))
        d = sum(x[o] for x, o in zip(damages, choice))
        brute[choice] = (b, d)
    for point in points:
        assert point.bytes == brute[point.choice][0] and point.damage == pytest.approx(brute[point.choice][1])
        best = min(d for b, d in brute.values() if b <= point.bytes)
        assert point.damage == pytest.approx(best)
    assert [p.bytes for p in points] == sorted(p.bytes for p in points)
    assert [p.damage for p in points] == sorted((p.damage for p in points), reverse=True)


def test_the_lower_hull():
    sizes = [10, 20, 30, 40, 50]
    damages = [9.0, 5.0, 4.5, 1.0, 0.0]
    assert lower_hull(sizes, damages) == [0, 1, 3, 4]
    assert lower_hull([10, 10, 20], [3.0, 1.0, 2.0]) == [1]


def test_cli_search_prints_the_front_and_writes_the_plan(tmp_path, capsys):
    out_file = tmp_path / "plan.json"
    space = json.dumps(SMALL.to_dict())
    assert main(["search", "--model", "digits-mlp", "--max-drop", "1.0", "--space", space, "--evaluations", "8", "--export", str(out_file)]) == 0
    out = capsys.readouterr()
    assert "ratio" in out.out and "chosen (*)" in out.out and "drop <= 1 points" in out.out and "wrote" in out.out
    assert "searching" in out.err
    plan = Plan.from_json(out_file.read_text())
    assert main(["evaluate", "--model", "digits-mlp", "--plan", str(out_file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metric"] >= report["baseline_metric"] - 0.01
    assert Plan.from_dict(report["plan"]) == plan
    assert main(["search", "--model", "digits-mlp", "--target-size", "8x", "--space", space, "--evaluations", "4", "--json"]) == 0
    result = SearchResult.from_dict({k: v for k, v in json.loads(capsys.readouterr().out).items() if k != "path"})
    assert result.best.compression_ratio >= 8


@pytest.mark.parametrize(
    "argv, message",
    [
        (["search", "--model", "digits-mlp"], "give a budget"),
        (["search", "--model", "digits-mlp", "--max-drop", "-1"], "--max-drop -1"),
        (["search", "--model", "digits-mlp", "--target-size", "1000x", "--space", '{"bits": [2, 8], "prune": [0]}'], "cannot be reached"),
        (["search", "--model", "digits-mlp", "--max-drop", "1", "--space", "{bits"], "--space is not valid JSON"),
    ],
)
def test_cli_bad_budgets_exit_2_with_a_message(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_the_session_facade(mlp_session, mlp_drop):
    again = mlp_session.search(max_drop=0.01, space=SMALL, evaluations=10)
    assert timeless(again) == timeless(mlp_drop)



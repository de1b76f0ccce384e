"""Registries are the only lists of names: a new pruner, calibration method and export format,
registered at run time, work from a Plan, the CLI and the GUI alike."""

import json

import pytest
import torch

import studio
from studio.cli import main
from studio.engine import Plan
from studio.engine.activations import RANGE_METHODS
from studio.engine.formats import FORMATS, Format, register_format
from studio.engine.prune import PRUNERS


@pytest.fixture
def extras():
    """A pruner that keeps every other weight, a range method at 90% of min-max, and a format
    that writes the plan's bit widths as text."""

    def every_other(view: torch.Tensor, ratio: float) -> torch.Tensor:
        keep = torch.ones(view.numel(), dtype=torch.bool)
        keep[::2] = False
        return keep.reshape(view.shape)

    PRUNERS["every-other"] = every_other
    RANGE_METHODS["ninety"] = lambda stats, bits: (0.9 * stats.lo, 0.9 * stats.hi)
    register_format(Format("bits-txt", ".txt", "bit widths (text)", lambda c: json.dumps({n: c.plan.spec_for(n).bits for n in c.weights}).encode(), lambda data: Plan()))
    yield
    del PRUNERS["every-other"], RANGE_METHODS["ninety"], FORMATS["bits-txt"]


def test_registered_names_work_from_a_plan(extras, mlp_session):
    plan = Plan.uniform(8, prune=0.5, prune_method="every-other", act_bits=8, calibration="ninety")
    report = mlp_session.evaluate(plan)
    assert report.layers["fc1"].sparsity == 0.5
    assert Plan.from_json(plan.to_json()) == plan
    data = FORMATS["bits-txt"].write(mlp_session.compile(plan))
    assert json.loads(data) == {"fc1": 8, "fc2": 8, "fc3": 8}
    with pytest.raises(ValueError, match="every-other"):  # the error lists what is registered
        Plan.uniform(8, prune=0.5, prune_method="no-such")


def test_registered_names_work_from_the_cli(extras, tmp_path, capsys):
    args = ["--model", "digits-mlp", "--bits", "8", "--prune", "0.5", "--prune-method", "every-other", "--act-bits", "8", "--calibration", "ninety"]
    assert main(["compress", *args, "--export", str(tmp_path), "--format", "bits-txt", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["report"]["layers"]["fc1"]["sparsity"] == 0.5 and out["verification"] is None
    assert json.loads((tmp_path / "model.txt").read_text()) == {"fc1": 8, "fc2": 8, "fc3": 8}


def test_registered_names_work_from_the_gui(extras):
    app = studio.Studio()
    assert app.wait(30)
    panel = app.layers_panel
    assert "every-other" in panel.prune_method.options and "ninety" in panel.calibration.options
    panel.all_prune.value = 50
    panel.prune_method.value = "every-other"
    panel.acts.value = 8
    panel.calibration.value = "ninety"
    plan = app.state.plan
    assert plan.default.prune_method == "every-other" and plan.calibration == "ninety"
    assert app.wait(30) and app.state.eval_report.plan == plan
    # the Export panel lists the new format
    app2 = studio.Studio()
    assert ("bit widths (text)", "bits-txt") in app2.export_panel.format.options
    app2.export_panel.format.value = "bits-txt"
    app2.export_panel.export()
    assert "bits-txt" in app2.export_panel.links.value
    app.close(), app2.close()

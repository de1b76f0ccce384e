"""StudioState without any widget: plans, undo, evaluation and progress, driven directly."""

import pytest
import torch
from torch import nn

import studio
from studio.engine import LayerSpec, Plan
from studio.ui.state import StudioState


def test_state_alone_evaluates_the_newest_plan(mlp_session):
    state = StudioState()
    seen = []
    state.observe(lambda ch: seen.append((ch["name"], state.plan, state.size_report.plan)), names=["plan", "size_report"])
    state.load(mlp_session, "digits-mlp")
    seen.clear()
    state.set_layer("fc1", bits=4)
    # one atomic step: every observer sees the new plan and its sizes together
    assert all(plan == sized for _, plan, sized in seen) and {name for name, _, _ in seen} == {"plan", "size_report"}
    for bits in (3, 2):
        state.set_layer("fc2", bits=bits)  # one drag: the newest position wins
    assert state.wait(30)
    expected = mlp_session.evaluate(state.plan)
    assert state.eval_report is not None and state.eval_report.plan == state.plan
    assert state.eval_report.metric == expected.metric
    assert state.history[-1].plan == state.plan
    state.undo()
    assert state.plan.spec_for("fc2") == LayerSpec() and state.plan.spec_for("fc1") == LayerSpec(bits=4)
    state.close()


def test_bad_plans_leave_the_state_as_it_was(mlp_session):
    state = StudioState(evaluate=False)
    state.load(mlp_session, "digits-mlp")
    state.set_layer("fc1", bits=4)
    before = (state.plan, state.size_report)
    with pytest.raises(ValueError):
        state.set_plan(Plan().with_layer("no-such-layer", bits=4))
    with pytest.raises(ValueError):
        state.set_layer("fc1", bits=11)
    assert (state.plan, state.size_report) == before


def test_progress_and_time_left_are_published(samples):
    sample = samples["digits-resnet"]
    session = studio.Session(sample.model, sample.eval_data, batch_size=50)
    state = StudioState()
    fractions = []
    state.observe(lambda ch: fractions.append(ch["new"]), names="progress")
    state.load(session, "digits-resnet")
    state.set_layer(session.layer_names[0], bits=3)  # a first-layer change: everything re-runs
    assert state.wait(30)
    assert fractions and max(fractions) <= 1.0 and len(set(fractions)) > 3
    assert state.evaluating is False
    state.close()


def test_a_hundred_layer_model_is_grouped_and_one_tick_touches_one_row(monkeypatch):
    from studio.ui import layers_panel as lp

    torch.manual_seed(0)
    model = nn.Sequential(*[m for _ in range(64) for m in (nn.Linear(8, 8), nn.ReLU())], nn.Linear(8, 3)).eval()
    x = torch.randn(16, 8)
    app = studio.Studio(model, (x, model(x).argmax(1)))
    assert app.wait(60)
    panel = app.layers_panel
    assert len(app.state.session.layers) == 65 and len(panel.groups) == 5  # runs of 16 layers
    assert not panel.rows  # collapsed: no row built yet
    group = panel.groups[1]
    group.toggle.click()
    assert len(group.body.children) == 16
    shown = []
    monkeypatch.setattr(lp.LayerRow, "show", lambda self, *a: shown.append(self.name))
    name = group.names[3]
    panel.rows[name].bits.value = 4
    assert shown == [name]  # one slider tick: one row updated
    group.bits.value = 6  # the group header sets all of its layers at once
    assert all(app.state.plan.spec_for(n).bits == 6 for n in group.names)
    assert "16 layers" in group.summary.value and "int6" in group.summary.value
    assert app.wait(60)
    assert app.state.eval_report.plan == app.state.plan
    app.close()

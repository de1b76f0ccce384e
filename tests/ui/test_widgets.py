"""Headless widget tests: build the Studio, set widget values in Python, assert on state and figures."""

import base64
import datetime
import json
import re

import pytest
import torch
from safetensors.torch import save

import studio
from studio.engine import LayerSpec, Plan
from studio.ui.model_panel import CUSTOM


def upload(name: str, content: bytes) -> tuple[dict, ...]:
    """A FileUpload value as the browser sends it."""
    when = datetime.datetime.now(datetime.timezone.utc)
    return ({"name": name, "type": "", "size": len(content), "content": memoryview(content), "last_modified": when},)


@pytest.fixture
def app():
    app = studio.Studio()
    assert app.wait(30)
    return app


@pytest.mark.parametrize("name", studio.list_samples())
def test_each_sample_loads_and_sliders_drive_the_engine(app, name):
    if name != app.state.source:
        app.model_panel.picker.value = name
        assert app.wait(30)
    state = app.state
    assert state.source == name and state.eval_report is not None
    first = state.session.layer_names[0]
    row = app.layers_panel.rows[first]
    info = state.session.layer(first)
    assert row.caption.value.startswith(info.kind + ("+BN · " if info.folded_bn else " · "))
    assert f"{info.params:,} params" in row.caption.value
    row.bits.value = 4
    row.prune.value = 30
    assert state.plan.spec_for(first) == LayerSpec(bits=4, prune=0.3)
    assert state.size_report.size_bytes == state.session.size(state.plan).size_bytes  # sizes follow at once
    assert app.wait(30)
    expected = state.session.evaluate(state.plan)
    assert state.eval_report.plan == state.plan
    assert state.eval_report.metric == pytest.approx(expected.metric)
    assert f"data-bytes='{expected.size_bytes}'" in app.metrics.value
    assert f"data-value='{expected.metric:.6f}'" in app.metrics.value
    # the histogram shows the selected layer's float weights and its quantized levels
    hist = app.histogram
    assert first in hist.layout.title.text and "int4" in hist.layout.title.text
    numel = torch.Size(state.session.layer(first).weight_shape).numel()
    assert sum(hist.data[0].y) + sum(hist.data[1].y) == numel
    levels = hist.data[3]
    assert len(levels.x) <= 7 * state.session.layer(first).channels  # at most 2*7+1 levels per channel, pruned zeros apart
    assert hist.layout.shapes  # the pruning threshold is shaded


def test_histogram_counts_every_weight(app):
    state = app.state
    app.layers_panel.rows["fc2"].select.click()
    assert state.selected == "fc2"
    app.layers_panel.rows["fc2"].prune.value = 40
    hist = app.histogram
    assert sum(hist.data[0].y) + sum(hist.data[1].y) == 300 * 100
    assert sum(hist.data[1].y) == 12000  # 40% pruned
    assert app.layers_panel.rows["fc2"].select.button_style == "info"


def test_histogram_of_a_float_layer_shows_no_levels(app):
    app.model_panel.picker.value = "digits-cnn"  # features.0 has few enough weights to draw every distinct value
    assert app.wait(30)
    app.layers_panel.rows["features.0"].select.click()
    hist = app.histogram
    assert "float32" in hist.layout.title.text
    assert not any(hist.data[3].y) and hist.layout.yaxis2.visible is False
    app.layers_panel.rows["features.0"].bits.value = 3
    assert hist.data[3].name == "quantized levels" and sum(hist.data[3].y) == 16 * 9 and hist.layout.yaxis2.visible is True


def test_undo_redo_reset(app):
    state, rows = app.state, app.layers_panel.rows
    rows["fc1"].bits.value = 4
    rows["fc1"].bits.value = 3  # one drag: coalesced into one undo step
    rows["fc1"].prune.value = 50
    rows["fc2"].bits.value = 2
    panel = app.layers_panel
    panel.undo.click()
    assert state.plan.spec_for("fc2").bits is None and rows["fc2"].bits.value == 32
    panel.undo.click()
    assert state.plan.spec_for("fc1") == LayerSpec(bits=3)
    assert rows["fc1"].prune.value == 0
    panel.undo.click()
    assert state.plan == Plan() and panel.undo.disabled
    panel.redo.click()
    panel.redo.click()
    assert state.plan.spec_for("fc1") == LayerSpec(bits=3, prune=0.5)
    panel.reset.click()
    assert state.plan == Plan()
    panel.undo.click()
    assert state.plan.spec_for("fc1") == LayerSpec(bits=3, prune=0.5)


def test_all_layers_controls(app):
    panel, state = app.layers_panel, app.state
    panel.all_bits.value = 6
    panel.all_prune.value = 20
    assert state.plan == Plan.uniform(6, prune=0.2)
    assert all(row.bits.value == 6 and row.prune.value == 20 for row in panel.rows.values())
    panel.all_mode.value = "k-means"
    assert state.plan == Plan.uniform(6, prune=0.2, cluster=True)


def test_history_restore_and_newest_wins(app):
    state = app.state
    rows = app.layers_panel.rows
    rows["fc1"].bits.value = 2
    assert app.wait(30)
    rows["fc1"].bits.value = 8
    assert app.wait(30)
    for bits in (2, 3, 4, 5, 6, 7):  # rapid moves: only the newest may end up current
        rows["fc2"].bits.value = bits
    assert app.wait(30)
    assert state.eval_report.plan == state.plan and state.plan.spec_for("fc2").bits == 7
    plans = [p.plan for p in state.history]
    assert Plan() in plans and Plan().with_layer("fc1", bits=2) in plans
    target = plans.index(Plan().with_layer("fc1", bits=2))
    # a click on a history point restores that plan
    trace = app.history.data[0]

    class Points:
        point_inds = [target]

    app._history_clicked(trace, Points(), None)
    assert state.plan == Plan().with_layer("fc1", bits=2)
    assert rows["fc1"].bits.value == 2
    current = app.history.data[-1]
    assert list(current.x) == [state.history[target].size_bytes / 1000]
    front = app.history.data[-2].customdata
    assert len(front) >= 1 and all(state.history[i].kind == "measured" for i in app.history.data[0].customdata)


def test_bad_upload_shows_a_message_and_the_app_keeps_working(app):
    panel = app.model_panel
    panel.model_upload.value = upload("evil.pt", b"garbage!!")
    panel.load_button.click()
    assert "could not load the upload" in panel.message.value
    assert "could not load" in app.error.value
    assert app.state.source == "digits-mlp"  # the old model and plan are still there
    app.layers_panel.rows["fc1"].bits.value = 5
    assert app.wait(30) and app.state.eval_report.plan.spec_for("fc1").bits == 5
    panel.model_upload.value = upload("notes.txt", b"hi")
    panel.load_button.click()
    assert "not a supported file" in panel.message.value


def test_good_upload_of_sample_weights(app, samples):
    data = save(samples["digits-cnn"].model.state_dict())
    app.model_panel.model_upload.value = upload("mine.safetensors", data)
    app.model_panel.load_button.click()
    assert app.wait(30)
    assert app.state.source == "mine.safetensors"
    assert app.state.session.layer_names[0] == "features.0"
    assert app.state.eval_report.metric == pytest.approx(samples["digits-cnn"].float_accuracy)
    assert app.model_panel.model_upload.value == ()


def test_export_links_hold_the_plan_and_keep_it(app):
    app.layers_panel.rows["fc1"].bits.value = 3
    plan = app.state.plan
    app.export_panel.button.click()
    href = re.search(r"href='data:application/json;base64,([^']+)'", app.export_panel.links.value).group(1)
    assert Plan.from_dict(json.loads(base64.b64decode(href))) == plan
    app.export_panel.format.value = "torch"
    app.export_panel.button.click()
    assert "digits-mlp-compressed.safetensors" in app.export_panel.links.value
    assert app.state.plan == plan


def test_studio_on_your_own_model_and_session(tiny):
    model, data = tiny
    app = studio.Studio(model, data)
    assert app.wait(30)
    assert app.model_panel.picker.value == CUSTOM
    assert app.state.session.layer_names == ["0", "2"]
    session = studio.Session(model, data)
    app2 = studio.Studio(session)
    assert app2.state.session is session
    broken = studio.Studio(model, (torch.randn(4, 3), None))
    assert "does not fit the model" in broken.error.value


def test_projector_mode_enlarges_text(app):
    app.projector.value = True
    assert "studio-projector" in app._dom_classes
    assert app.histogram.layout.font.size == 20 and app.history.layout.font.size == 20
    app.projector.value = False
    assert "studio-projector" not in app._dom_classes and app.histogram.layout.font.size == 15


def test_presets_and_activation_controls(app):
    panel, state = app.layers_panel, app.state
    panel.preset.value = "full-integer"
    assert state.plan == Plan.preset("full-integer", state.session)
    assert panel.preset.value == "(choose)" and panel.acts.value == 8
    panel.calibration.value = "kl"
    assert state.plan.calibration == "kl"
    assert app.wait(30) and state.eval_report.plan == state.plan
    panel.acts.value = 16
    assert state.plan.default.act_bits == 16
    panel.undo.click()
    assert state.plan.default.act_bits == 8 and panel.acts.value == 8
    before = state.size_report.size_bytes
    panel.half_params.value = True  # float16 scales and biases for every layer: two bytes a value fewer
    assert all(spec.param_dtype == "float16" for spec in [state.plan.default, *state.plan.layers.values()])
    assert state.size_report.size_bytes < before
    panel.undo.click()
    assert state.plan.default.param_dtype == "float32" and not panel.half_params.value


@pytest.mark.parametrize("fmt", ["studio", "onnx", "torch"])
def test_export_verifies_side_by_side(app, fmt):
    app.layers_panel.preset.value = "full-integer"
    plan = app.state.plan
    app.export_panel.format.value = fmt
    app.export_panel.button.click()
    html = app.export_panel.verified.value
    report = app.state.session.size(plan)
    metric = float(re.search(r"data-metric='([0-9.]+)'", html).group(1))
    assert metric == pytest.approx(app.state.session.evaluate(plan).metric, abs=0.003)
    file_bytes = int(re.search(r"data-bytes='([0-9]+)'", html).group(1))
    if fmt == "studio":
        assert file_bytes == report.size_bytes
    assert "latency" in html and app.state.plan == plan


def test_onnx_runtime_notes(app):
    app.layers_panel.rows["fc1"].bits.value = 3
    app.export_panel.format.value = "onnx"
    assert "fc1" in app.export_panel.notes.value and "int4" in app.export_panel.notes.value


def test_a_new_plan_or_model_clears_the_last_export_and_its_verification(app):
    app.export_panel.format.value = "studio"
    app.export_panel.button.click()
    assert "data-metric" in app.export_panel.verified.value and app.export_panel.links.value
    app.layers_panel.rows["fc1"].bits.value = 3  # the file shown no longer matches the plan
    assert app.export_panel.verified.value == "" and app.export_panel.links.value == ""
    app.export_panel.button.click()
    assert "data-metric" in app.export_panel.verified.value
    app.model_panel.picker.value = "digits-cnn"
    assert app.wait(30)
    assert app.export_panel.verified.value == "" and app.export_panel.links.value == ""

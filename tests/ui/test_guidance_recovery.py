"""The Guidance and Recovery panels, headless: heatmap, Fit to budget, fine-tuning."""

import time

import pytest

import studio
from studio.engine import Plan


@pytest.fixture
def cnn_app():
    app = studio.Studio()
    app.model_panel.picker.value = "digits-cnn"
    assert app.wait(30)
    yield app
    app.close()


def wait_job(state, timeout=120):
    assert state.wait_job(timeout)
    deadline = time.time() + 10
    while state.job and time.time() < deadline:  # the busy flag clears just after the thread ends
        time.sleep(0.01)


def test_heatmap_estimate_then_measure(cnn_app):
    app, state = cnn_app, cnn_app.state
    panel = app.guidance_panel
    panel.estimate.click()
    wait_job(state)
    assert state.sensitivity.mode == "proxy" and "data-mode='proxy'" in panel.heatmap.value
    assert "an estimate, not a measurement" in panel.heatmap.value
    panel.measure.click()
    wait_job(state)
    table = state.sensitivity
    assert table.mode == "measured" and len(table.entries) == 4 * 5
    entry = table.entry("features.7", "bits=3")
    expected = state.session.evaluate(Plan().with_layer("features.7", bits=3))
    assert entry.metric == expected.metric
    assert f"data-value='{entry.drop}'" in panel.heatmap.value and "saves" in panel.heatmap.value


def test_fit_to_budget_fills_history_and_restores(cnn_app):
    app, state = cnn_app, cnn_app.state
    panel = app.guidance_panel
    panel.budget_kind.value = "ratio"
    panel.budget.value = 8
    panel.fit_button.click()
    assert panel.cancel.disabled is False
    wait_job(state)
    result = state.search_result
    assert result is not None and state.plan == result.plan
    assert result.best.compression_ratio >= 8 and "chose" in panel.result.value
    searched = [i for i, p in enumerate(state.history) if p.kind == "search"]
    assert len(searched) == len(result.candidates)
    assert set(app.history.data[1].customdata) == set(searched)  # the search trace
    assert app.wait(60) and state.eval_report.metric == state.session.evaluate(result.plan).metric
    state.undo()  # the fit is one undo step
    assert state.plan != result.plan
    other = searched[0]

    class Points:
        point_inds = [0]

    app._history_clicked(app.history.data[1], Points(), None)
    assert state.plan == state.history[other].plan


def test_bad_budgets_explain_and_leave_the_plan(cnn_app):
    state = cnn_app.state
    state.set_layer("features.3", bits=4)
    before = state.plan
    state.fit(target_ratio=1000.0)
    wait_job(state)
    assert "search failed" in state.error and state.plan == before
    state.error = ""
    state.fit(max_drop=-0.01)
    wait_job(state)
    assert "search failed" in state.error and state.plan == before
    with pytest.raises(ValueError, match="one budget"):
        state.fit()


def test_recovery_curve_cancel_restart_finish_and_undo():
    app = studio.Studio()  # digits-mlp
    assert app.wait(30)
    state, panel = app.state, app.recovery_panel
    original = state.session
    state.set_plan(Plan.uniform(2))
    assert app.wait(30)
    before = state.eval_report.metric
    panel.epochs.value = 40
    panel.start.click()
    deadline = time.time() + 60
    while not state.epochs and time.time() < deadline:
        time.sleep(0.05)
    assert state.epochs and panel.curve is not None and len(panel.curve.data[0].x) >= 1  # the curve follows
    panel.cancel.click()
    wait_job(state)
    assert state.session is original and state.plan == Plan.uniform(2)  # a cancelled run changes nothing
    panel.epochs.value = 3
    panel.start.click()
    wait_job(state)
    assert state.session is not original and state.recovered.startswith("qat, 3 epochs")
    assert state.plan == Plan.uniform(2) and len(panel.curve.data[1].y) == 1 + 3
    assert app.wait(60)
    recovered = state.eval_report.metric
    assert recovered > before + 0.05  # 2-bit weights: QAT wins a lot back
    assert any(p.kind == "recovered" for p in state.history) and "recovered model" in panel.summary.value
    assert state.eval_report.metric == studio.Session(state.session.recipe().model, studio.load_sample("digits-mlp").eval_data).evaluate(Plan.uniform(2)).metric
    panel.undo.click()
    assert state.session is original and not state.recovered and state.plan == Plan.uniform(2)
    app.close()


@pytest.mark.slow
def test_a_distilled_student_of_digits_cnn_at_width_half_is_within_a_point(cnn_app):
    app, state, panel = cnn_app, cnn_app.state, cnn_app.recovery_panel
    teacher = state.session.baseline_metric
    panel.width.value, panel.epochs.value, panel.lr.value = 0.5, 50, 5e-3
    panel.start.click()
    wait_job(state, timeout=300)
    assert "student width 0.5" in state.recovered and state.plan == Plan()
    assert state.session.float_size_bytes < 0.3 * 4 * sum(p.numel() for p in studio.load_sample("digits-cnn").model.parameters())
    assert app.wait(60)
    assert state.eval_report.metric >= teacher - 0.01  # measured on the 500 eval images


def test_students_are_for_samples_only(mlp_session):
    from studio.ui.state import StudioState

    state = StudioState(evaluate=False)
    state.load(mlp_session, "your model")
    with pytest.raises(ValueError, match="training data"):
        state.recover()
    state.train_data = studio.load_sample("digits-mlp").train_data
    with pytest.raises(ValueError, match="sample architectures"):
        state.recover(width=0.5)


def test_history_points_restore_the_model_they_were_measured_on():
    app = studio.Studio()
    assert app.wait(30)
    state = app.state
    original = state.session
    state.set_plan(Plan.uniform(3))
    assert app.wait(30)
    state.recover(epochs=1)
    wait_job(state)
    assert app.wait(60)
    recovered = state.session
    # the star marks the recovered model's point, not the same plan measured before recovery
    star = app.history.data[-1]
    index = next(i for i, p in enumerate(state.history) if p.plan == Plan.uniform(3) and p.session is recovered)
    assert list(star.y) == [100 * state.history[index].metric]
    assert not any(p.kind == "recovered" and p.plan == Plan() for p in state.history)  # no float point of the trained weights
    before = next(i for i, p in enumerate(state.history) if p.plan == Plan.uniform(3) and p.session is original)
    state.restore(before)
    assert state.session is original and not state.recovered
    state.restore(index)
    assert state.session is recovered and state.recovered
    app.close()


def test_latency_is_measured_shown_and_plotted():
    app = studio.Studio()
    app.model_panel.picker.value = "digits-resnet"
    assert app.wait(30)
    state = app.state
    state.set_plan(Plan.preset("full-integer", state.session))
    assert app.wait(60)
    app.latency_button.click()
    wait_job(state)
    latency = state.eval_report.latency
    assert latency is not None and latency.runtime == "onnxruntime" and latency.file_format == "onnx-fast"
    assert latency.ms > 0 and latency.float_ms > 0 and latency.spread_ms >= 0
    assert f"data-ms='{latency.ms:.4f}'" in app.metrics.value and "against float" in app.metrics.value
    point = next(p for p in state.history if p.plan == state.plan)
    assert point.latency_ms == latency.ms
    app.history_axis.value = "latency"
    assert list(app.history.data[0].x) == [latency.ms]  # only measured points are plotted against latency
    assert app.history.layout.xaxis.title.text.startswith("latency")
    # after every plan: each new evaluation comes with its latency
    app.latency_auto.value = True
    app.latency_runtime.value = "pytorch"
    state.set_plan(Plan.preset("dynamic-range", state.session))
    assert app.wait(60)
    assert state.eval_report.latency is not None and state.eval_report.latency.runtime == "pytorch"
    assert len(app.history.data[0].x) == 2
    app.close()

import dataclasses

import pytest

from studio.engine import Plan, Report
from studio.engine.latency import Latency


@pytest.mark.parametrize("runtime", ["onnxruntime", "pytorch"])
def test_latency_in_each_runtime(cnn_session, runtime):
    plan = Plan.preset("full-integer", cnn_session)
    latency = cnn_session.latency(plan, runtime=runtime, repeats=5)
    assert latency.runtime == runtime and latency.repeats == 5 and latency.batch == 32 and latency.threads == 1
    assert latency.ms > 0 and latency.float_ms > 0 and latency.spread_ms >= 0
    assert latency.speedup == pytest.approx(latency.float_ms / latency.ms)
    assert Latency.from_dict(latency.to_dict()) == latency
    report = dataclasses.replace(cnn_session.evaluate(plan), latency=latency)
    assert Report.from_dict(report.to_dict()) == report


def test_latency_refuses_what_it_cannot_time(cnn_session):
    with pytest.raises(ValueError, match="unknown runtime"):
        cnn_session.latency(Plan(), runtime="tflite")
    with pytest.raises(ValueError, match="at least 3"):
        cnn_session.latency(Plan(), repeats=1)

import threading

import studio
from studio.engine import Plan
from studio.ui.worker import Evaluator


def test_newest_submission_wins_and_close_stops_the_thread(mlp_session):
    results, busy = [], []
    done = threading.Event()
    evaluator = Evaluator(lambda r: (results.append(r.plan), done.set()), lambda e: results.append(e), busy.append)
    plans = [Plan.uniform(b) for b in (2, 3, 4, 5, 6)]
    for plan in plans:
        evaluator.submit(mlp_session, plan)
    assert evaluator.wait(30)
    assert results[-1] == plans[-1]  # older ones were cancelled or superseded
    assert all(p in plans for p in results)
    assert busy[0] is True and busy[-1] is False
    evaluator.close()
    assert not evaluator._thread.is_alive()


def test_errors_are_reported_not_raised(tiny):
    model, data = tiny
    session = studio.Session(model, data)
    errors = []
    evaluator = Evaluator(lambda r: None, errors.append, lambda b: None)
    evaluator.submit(session, Plan().with_layer("nope", bits=4))
    assert evaluator.wait(30)
    assert errors and "does not have" in errors[0]
    evaluator.close()

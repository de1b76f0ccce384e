"""Figures as pure functions, and a view that drew an old state getting the data again."""

import time

from studio import Plan
from studio.ui.figures import history_figure, update_history
from studio.ui.state import HistoryPoint


def sent_updates(fig):
    sent = []
    fig._send_update_msg = lambda **kw: sent.append(kw)
    return sent


def test_a_view_behind_the_last_edit_gets_every_trace_again_and_a_current_one_nothing():
    fig = history_figure()
    points = [HistoryPoint(Plan(), 200_000, 0.98, "float", "measured", None), HistoryPoint(Plan.uniform(8), 50_000, 0.97, "int8", "measured", None)]
    update_history(fig, points, 1)
    sent = sent_updates(fig)
    last = fig._last_trace_edit_id
    fig._js2py_traceDeltas = {"trace_deltas": [], "trace_edit_id": last}  # drew the latest: nothing to send
    assert sent == []
    fig.data[0]._prop_defaults["name"] = fig.data[0]._props.pop("name")  # plotly moves values the view echoes
    fig._js2py_traceDeltas = {"trace_deltas": [], "trace_edit_id": last - 1}
    assert [m["trace_indexes"] for m in sent] == [[i] for i in range(len(fig.data))]
    first = sent[0]["restyle_data"]
    assert first["name"] == ["evaluated plans"] and list(first["x"][0]) == [200.0, 50.0]
    assert sent[0]["relayout_data"]["xaxis.title.text"] == "size (KB)"
    assert all(None not in m["restyle_data"].values() for m in sent)  # a null would reset an attribute
    fig._js2py_traceDeltas = {"trace_deltas": [], "trace_edit_id": last - 1}
    assert len(sent) == len(fig.data)  # at most twice a second
    fig._js2py_traceDeltas = {"trace_deltas": [], "trace_edit_id": last - 1}  # one resend is due already
    time.sleep(0.8)
    assert len(sent) == 2 * len(fig.data)  # a report within the half second is answered after it

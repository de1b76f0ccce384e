"""Per-layer sensitivity: measured probes equal session.evaluate, the proxy ranks alike,
progress and cancel work, the results round-trip through JSON, the CLI prints the table,
and the probes fan out to executors (Ray when installed)."""

import json
import math
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from studio.cli import main
from studio.engine import Cancelled, Plan, Session, StudioError
from studio.engine.executors import chunk_layers
from studio.engine.metrics import paired_delta_stderr, top1_correct
from studio.engine.sensitivity import (
    SensitivityEntry,
    SensitivityTable,
    Setting,
    make_settings,
    rank_agreement,
    sensitivity,
    spearman,
)

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")  # many small passes: one intra-op thread is faster


def probe_plan(table: SensitivityTable, entry: SensitivityEntry) -> Plan:
    return table.base.with_layer(entry.layer, entry.spec)


@pytest.fixture(scope="module")
def mlp_table(mlp_session):
    return sensitivity(mlp_session)


def test_every_entry_is_what_evaluate_reports_for_its_probe(mlp_session, mlp_table):
    table = mlp_table
    assert table.layers == tuple(mlp_session.layer_names)
    assert [s.label for s in table.settings] == ["bits=2", "bits=3", "bits=4", "bits=6", "bits=8", "prune=0.25", "prune=0.5", "prune=0.75"]
    assert len(table.entries) == 3 * 8
    base = mlp_session.evaluate(Plan())
    for entry in table.entries:
        report = mlp_session.evaluate(probe_plan(table, entry))
        assert entry.metric == report.metric
        assert entry.delta == report.metric - base.metric
        assert entry.delta_stderr == report.delta_stderr
        assert entry.size_bytes == report.size_bytes
        assert entry.bytes_saved == base.size_bytes - report.size_bytes
        assert entry.layer_bytes == report.layers[entry.layer].total
        assert entry.sqnr_db == report.layers[entry.layer].sqnr_db
        assert entry.kl == report.fidelity.kl
    # real effects: 2 bits costs more than 8, and saves more
    for layer in table.layers:
        two, eight = table.entry(layer, "bits=2"), table.entry(layer, "bits=8")
        assert two.bytes_saved > eight.bytes_saved > 0
        assert two.kl > eight.kl
    assert table.entry("fc1", "bits=2").delta < -0.01


def test_against_a_quantized_base_the_delta_and_stderr_are_paired_with_the_base(mlp_session):
    base = Plan.uniform(6)
    table = sensitivity(mlp_session, bits=(2,), prune=(0.5,), base=base)
    base_out = mlp_session.outputs(base)
    targets = [t for _, t in mlp_session.batches()]
    base_flags = torch.cat([top1_correct(o, t) for o, t in zip(base_out, targets)])
    base_metric = mlp_session.evaluate(base).metric
    assert table.base_metric == base_metric
    for entry in table.entries:
        assert entry.spec.bits == (2 if entry.setting == "bits=2" else 6)
        plan = probe_plan(table, entry)
        flags = torch.cat([top1_correct(o, t) for o, t in zip(mlp_session.outputs(plan), targets)])
        assert entry.delta == pytest.approx(mlp_session.evaluate(plan).metric - base_metric)
        assert entry.delta_stderr == paired_delta_stderr(base_flags, flags)
        assert entry.within_noise == (abs(entry.delta) <= 1.96 * entry.delta_stderr)


def test_probes_run_downstream_only_from_the_last_layer_to_the_first(cnn_session):
    table = sensitivity(cnn_session, bits=(2, 4), prune=(), stack_bytes=0)  # one probe per pass (test_stacked.py: stacked)
    by_layer = {layer: [e.computed_fraction for e in table.entries if e.layer == layer] for layer in table.layers}
    assert by_layer["features.0"] == [1.0, 1.0]  # the first layer: the whole model
    assert max(by_layer["classifier.1"]) < 0.5  # the last layer: only what follows it
    assert table.forward_passes < len(table.entries)
    assert table.forward_passes == pytest.approx(sum(f for row in by_layer.values() for f in row))


def test_progress_counts_probes_and_cancel_stops_cleanly(samples):
    sample = samples["digits-cnn"]
    session = Session(sample.model, sample.eval_data)
    calls = []
    table = sensitivity(session, bits=(3, 8), prune=(0.5,), progress=lambda d, t: calls.append((d, t)))
    total = len(table.entries) + 1
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)

    asked = []

    def cancel() -> bool:
        asked.append(1)
        return len(asked) > 40

    with pytest.raises(Cancelled):
        sensitivity(session, bits=(2, 3, 4, 6, 8), cancel=cancel)
    again = sensitivity(session, bits=(3, 8), prune=(0.5,))  # the session works on, bit for bit
    assert again.entries == table.entries


def test_proxy_mode_runs_no_probe_and_ranks_like_the_measured_table(cnn_session, monkeypatch):
    measured = sensitivity(cnn_session)
    evaluated = []
    monkeypatch.setattr(cnn_session, "evaluate", lambda *a, **k: evaluated.append(1))
    proxy = sensitivity(cnn_session, mode="proxy")
    assert not evaluated
    assert proxy.proxy_loss == "cross-entropy"
    assert all(e.metric is None and e.delta is None and e.proxy >= 0 for e in proxy.entries)
    for layer in proxy.layers:  # fewer bits or more pruning: more damage
        assert proxy.entry(layer, "bits=2").proxy > proxy.entry(layer, "bits=4").proxy > proxy.entry(layer, "bits=8").proxy
        assert proxy.entry(layer, "prune=0.75").proxy > proxy.entry(layer, "prune=0.25").proxy
    agreement = rank_agreement(measured, proxy)
    assert agreement["layers"] >= 0.8
    assert agreement["entries"] >= 0.6
    assert proxy.ranking()[0] == measured.ranking()[0] == "features.0"


def test_proxy_without_labels_uses_the_kl_to_the_float_model_and_is_seeded(tiny):
    model, (x, _) = tiny
    session = Session(model, (x, None))
    a = sensitivity(session, mode="proxy", seed=1)
    b = sensitivity(session, mode="proxy", seed=1)
    c = sensitivity(session, mode="proxy", seed=2)
    assert a.proxy_loss == "kl-to-float"
    assert [e.proxy for e in a.entries] == [e.proxy for e in b.entries]
    assert [e.proxy for e in a.entries] != [e.proxy for e in c.entries]
    assert all(e.proxy > 0 for e in a.entries)


def test_measured_without_labels_against_a_quantized_base(tiny):
    model, (x, _) = tiny
    session = Session(model, (x, None))
    table = sensitivity(session, bits=(2,), prune=(), base=Plan.uniform(8))
    reference = session.outputs(Plan())
    base_flags = torch.cat([(r.argmax(-1) == o.argmax(-1)) for r, o in zip(reference, session.outputs(Plan.uniform(8)))])
    for entry in table.entries:
        out = session.outputs(probe_plan(table, entry))
        flags = torch.cat([(r.argmax(-1) == o.argmax(-1)) for r, o in zip(reference, out)])
        assert entry.delta_stderr == paired_delta_stderr(base_flags, flags)


def test_every_result_round_trips_through_json(mlp_session, mlp_table):
    proxy = sensitivity(mlp_session, mode="proxy")
    for table in (mlp_table, proxy):
        again = SensitivityTable.from_dict(json.loads(json.dumps(table.to_dict())))
        assert again == table
        assert again.grid("bytes_saved") == table.grid("bytes_saved")
        assert again.ranking() == table.ranking()
    entry = mlp_table.entries[0]
    assert SensitivityEntry.from_dict(json.loads(json.dumps(entry.to_dict()))) == entry
    setting = Setting.of(bits=3, cluster=True)
    assert Setting.from_dict(json.loads(json.dumps(setting.to_dict()))) == setting
    assert setting.label == "bits=3, cluster=True"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bits": (1,)}, "bits must be integers in 2..8 or 16"),
        ({"bits": (4.5,)}, "bits must be integers"),
        ({"prune": (1.5,)}, "prune ratios must be fractions"),
        ({"prune": (0.0,)}, "prune ratios must be fractions"),
        ({"bits": (), "prune": ()}, "at least one bit width or prune ratio"),
        ({"bits": (4, 4)}, "repeat"),
        ({"mode": "guess"}, "mode must be one of"),
        ({"base": "int8"}, "base must be a studio.Plan"),
        ({"base": Plan().with_layer("nope", bits=4)}, "does not have"),
        ({"layers": ["nope"]}, "unknown layer"),
        ({"executor": "spark"}, "executor must be"),
        ({"mode": "proxy", "executor": "ray"}, "use executor=None with mode='proxy'"),
    ],
)
def test_bad_input_says_what_to_do(mlp_session, kwargs, message):
    with pytest.raises(StudioError, match=message):
        sensitivity(mlp_session, **kwargs)


def test_a_torchscript_model_is_probed_here_and_its_proxy_is_the_weight_error(tiny):
    model, data = tiny
    session = Session(torch.jit.script(model), data)
    measured = sensitivity(session, bits=(2, 8), prune=())
    assert all(e.metric is not None for e in measured.entries)
    proxy = sensitivity(session, bits=(2, 8), prune=(), mode="proxy")
    assert proxy.proxy_loss == "squared-weight-error"
    for e in proxy.entries:  # half the squared error of the stored weight
        w = session.compressed(e.layer, e.spec)
        assert e.proxy == pytest.approx(0.5 * float(((w.dequant_view - w.float_view) ** 2).sum()))
    with ThreadPoolExecutor(max_workers=2) as executor, pytest.raises(StudioError, match="TorchScript model cannot be sent"):
        sensitivity(session, bits=(2,), prune=(), executor=executor)


def test_spearman_with_ties_and_constants():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)  # scipy.stats.spearmanr
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(StudioError):
        spearman([1], [1])


def test_make_settings_labels():
    assert [s.label for s in make_settings((2, 16), (0.5,))] == ["bits=2", "bits=16", "prune=0.5"]


def test_layers_split_into_balanced_chunks():
    order = [f"l{i}" for i in range(10)]
    chunks = chunk_layers(order, order, 3)
    assert sorted(sum(chunks, [])) == sorted(order)
    costs = [sum(10 - order.index(n) for n in c) for c in chunks]
    assert max(costs) - min(costs) <= 10
    assert chunk_layers(order[:2], order, 8) == [["l0"], ["l1"]]


@pytest.mark.parametrize("pool", [ThreadPoolExecutor, ProcessPoolExecutor])
def test_an_executor_gives_the_local_table(tiny, pool):
    model, data = tiny
    session = Session(model, data)
    local = sensitivity(session, bits=(2, 4), prune=(0.5,))
    calls = []
    with pool(max_workers=2) as executor:
        fanned = sensitivity(session, bits=(2, 4), prune=(0.5,), executor=executor, progress=lambda d, t: calls.append((d, t)))
    assert fanned.entries == local.entries
    assert fanned.base_metric == local.base_metric and fanned.base_size_bytes == local.base_size_bytes
    assert calls[-1] == (7, 7)


def start_ray(ray, attempts: int = 2) -> None:
    """A local two-CPU Ray node whose workers import the studio under test. Ray's raylet waits a
    fixed 30 s for its metrics agent; on an overloaded machine that start can time out, so try twice."""
    for attempt in range(attempts):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
            return
        except Exception as exc:  # Ray raises a bare Exception when its node does not start
            ray.shutdown()
            if "timed out during startup" not in str(exc) or attempt == attempts - 1:
                if "timed out during startup" in str(exc):
                    pytest.skip(f"Ray's local node did not start on this machine: {exc}")
                raise


@pytest.mark.slow
def test_ray_fans_out_the_probes(tiny):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'compression-studio[ray]')")
    model, data = tiny
    session = Session(model, data)
    local = sensitivity(session, bits=(2, 4), prune=(0.5,))
    start_ray(ray)
    try:
        fanned = sensitivity(session, bits=(2, 4), prune=(0.5,), executor="ray")
    finally:
        ray.shutdown()
    assert fanned.entries == local.entries


def test_cli_prints_the_table_and_json(capsys):
    assert main(["sensitivity", "--model", "digits-mlp", "--bits", "2", "8", "--prune", "0.5"]) == 0
    out = capsys.readouterr()
    assert "bits=2" in out.out and "prune=0.5" in out.out and "most sensitive first: " in out.out
    assert "probing" in out.err
    assert main(["sensitivity", "--model", "digits-mlp", "--bits", "4", "--prune", "0.5", "--json", "--proxy"]) == 0
    table = SensitivityTable.from_dict(json.loads(capsys.readouterr().out))
    assert table.mode == "proxy" and table.layers == ("fc1", "fc2", "fc3")
    assert main(["sensitivity", "--model", "digits-mlp", "--bits", "9"]) == 2
    assert "bits must be integers in 2..8" in capsys.readouterr().err


def test_the_session_facade(mlp_session, mlp_table):
    assert mlp_session.sensitivity().entries == mlp_table.entries

"""The compressed-weight cache: real bytes, pinned plans, shared entries; the working copy parked."""

import math

import torch

from studio.engine import LayerSpec, Plan, Session
from studio.engine.cache import WeightCache
from studio.engine.compress import compress_view
from studio.engine.memory import release_free_memory
from studio.engine.verify import verify


def _int8(n: int = 1000):
    return compress_view(torch.randn(10, n // 10), LayerSpec(bits=8), huffman=False, other_bytes=0)


def test_entries_cost_their_real_bytes_and_the_least_recent_go_first():
    one = _int8().nbytes
    assert one == 1000 + 10 * (4 + 8 + 8)  # a byte a code; per channel a scale, a zero-point and its symbol
    cache = WeightCache(budget_bytes=2 * one)
    for key in "abc":
        cache.get(key, _int8)
    assert "a" not in cache and "b" in cache and "c" in cache
    assert cache.nbytes == 2 * one


def test_pinned_entries_stay_whatever_the_budget():
    cache = WeightCache(budget_bytes=0)
    cache.get("a", _int8)
    assert "a" not in cache  # nothing fits a zero budget
    cache.pin("evaluate", ["a"])
    cache.get("a", _int8)
    cache.get("b", _int8)
    assert "a" in cache and "b" not in cache
    cache.pin("evaluate", ["b"])  # a new plan: the old pins go
    assert "a" not in cache


def test_a_cached_plan_holds_about_a_byte_per_weight(samples):
    sample = samples["digits-cnn"]
    session = Session(sample.model, sample.eval_data)
    weights = sum(math.prod(info.weight_shape) for info in session.layers)
    channels = sum(info.weight_shape[info.channel_axis] for info in session.layers)
    session.evaluate(Plan())
    assert session._m.cache.nbytes == 0  # float layers hold nothing of their own
    session.evaluate(Plan.uniform(8))
    held = session._m.cache.nbytes
    assert held == weights + 20 * channels  # codes, and per channel a scale, zero-point and zero symbol
    first = session.compressed(session.layer_names[0], LayerSpec(bits=8))
    assert torch.equal(first.dequant_view, first.dequant_view)  # derived, and the same each time
    assert first.dequant_view.data_ptr() != first.dequant_view.data_ptr()  # not held


def test_plans_that_differ_in_activations_share_their_weights(samples, monkeypatch):
    sample = samples["digits-cnn"]
    session = Session(sample.model, sample.eval_data)
    calls = []
    import studio.engine.prepared as prepared_module

    real = prepared_module.compress_view
    monkeypatch.setattr(prepared_module, "compress_view", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    weights_only = session.size(Plan.uniform(8))
    n = len(calls)
    with_acts = session.size(Plan.uniform(8, act_bits=8))
    assert len(calls) == n  # nothing compressed again
    for name in session.layer_names:
        kind = session.layer(name).layer_kind
        extra = (4 + 1) * kind.activation_tensors
        assert with_acts.layers[name].scales == weights_only.layers[name].scales + extra
    # and what is measured equals a session that never saw the weights-only plan
    fresh = Session(sample.model, sample.eval_data)
    assert session.evaluate(Plan.uniform(8, act_bits=8)).to_dict() | {"seconds": 0, "timing": None} == (
        fresh.evaluate(Plan.uniform(8, act_bits=8)).to_dict() | {"seconds": 0, "timing": None}
    )


def test_verify_parks_the_working_weights_and_kept_activations_and_the_next_pass_reloads_them(samples, tmp_path, monkeypatch):
    sample = samples["digits-mlp"]
    session = Session(sample.model, sample.eval_data)
    plan = Plan.uniform(4)
    before = session.evaluate(plan)
    path = session.export(plan, tmp_path / "m.studio", format="studio")
    session._m.park()
    for name in session.layer_names:  # the working layers point at the float weights again
        weight = session._prepared.modules[name].weight
        assert weight.untyped_storage().data_ptr() == session._prepared.float_views[name].untyped_storage().data_ptr()
    kept_while_running = []

    def run_file(*args):
        kept_while_running.append(session._runner.kept_bytes)
        return verify(*args)

    monkeypatch.setattr("studio.engine.session.verify", run_file)
    check = session.verify(path)
    assert check.metric == check.studio_metric == before.metric
    assert kept_while_running[0] == 0  # the kept activations were let go while the file ran
    assert session._runner.kept_bytes > 0  # the studio's own pass kept them again
    assert session.evaluate(plan).metric == before.metric
    assert session.evaluate(plan.with_layer(session.layer_names[-1], bits=8)).timing.mode == "incremental"


def test_freed_memory_can_be_given_back():
    assert release_free_memory(collect=True) in (True, False)
    x = [torch.empty(1 << 20) for _ in range(8)]
    del x
    assert release_free_memory() is True  # Linux (glibc) is where the tests run


def test_a_pruning_mask_is_held_as_bits_and_unpacks_row_by_row():
    torch.manual_seed(0)
    w = torch.randn(37, 301)
    r = compress_view(w, LayerSpec(bits=4, prune=0.4), huffman=True, other_bytes=0)
    keep = w.abs() > w.abs().flatten().kthvalue(round(0.4 * w.numel())).values
    assert torch.equal(r.keep, keep)
    assert r.sparsity == 1 - int(keep.sum()) / keep.numel()  # from the count packed beside the bits
    assert r.keep_bits.bits.nbytes == 37 * 38  # a bit a weight, rows padded to whole bytes
    assert torch.equal(r.keep_bits.rows(5, 9), keep[5:9])
    float_pruned = compress_view(w, LayerSpec(bits=None, prune=0.4), huffman=True, other_bytes=0)
    assert torch.equal(float_pruned.dequant_view, w * keep)  # decoded through the packed rows

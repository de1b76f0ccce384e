"""Stacked probes: a layer's settings share one downstream pass along the batch, and give
the table the one-probe-per-pass path gives; where they cannot, the probes run one at a
time and the table says why."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch import nn

import studio
from studio.engine import Cancelled, Plan, Session
from studio.engine.sensitivity import SensitivityTable, sensitivity
from studio.engine.stacked import survey

ALL = {"bits": (2, 3, 4, 6, 8), "prune": (0.25, 0.5, 0.75)}


pytestmark = pytest.mark.usefixtures("one_thread")  # many small passes: one intra-op thread is faster


def assert_same_table(stacked: SensitivityTable, alone: SensitivityTable) -> None:
    """Every field the probes measure, exactly (on these models the stacked arithmetic is bit for bit the same)."""
    assert (stacked.base_metric, stacked.base_size_bytes, stacked.layers) == (alone.base_metric, alone.base_size_bytes, alone.layers)
    assert len(stacked.entries) == len(alone.entries)
    for a, b in zip(stacked.entries, alone.entries):
        assert (a.layer, a.setting, a.spec) == (b.layer, b.setting, b.spec)
        assert (a.size_bytes, a.layer_bytes, a.bytes_saved, a.sqnr_db) == (b.size_bytes, b.layer_bytes, b.bytes_saved, b.sqnr_db)
        assert (a.metric, a.delta, a.delta_stderr, a.within_noise, a.kl) == (b.metric, b.delta, b.delta_stderr, b.within_noise, b.kl)


@pytest.mark.parametrize("name", studio.list_samples())
def test_stacked_probes_give_the_per_probe_table_on_every_sample(samples, name):
    sample = samples[name]
    stacked = sensitivity(Session(sample.model, sample.eval_data), **ALL)
    alone = sensitivity(Session(sample.model, sample.eval_data), **ALL, stack_bytes=0)
    assert_same_table(stacked, alone)
    assert all(e.stacked == 1 and e.unstacked_because == "stacking was turned off (stack_bytes=0)" for e in alone.entries)
    assert alone.unstacked() == {"stacking was turned off (stack_bytes=0)": len(alone.entries)}
    if name == "digits-vit":  # the position embedding's input (the positions) has no batch
        assert stacked.unstacked() == {"pos_embed: its input does not have the batch in dim 0": 8}
    else:
        assert stacked.unstacked() == {}
    assert {e.stacked for e in stacked.entries if e.layer != "pos_embed"} == {8}
    assert stacked.forward_passes < 0.5 * len(stacked.entries) < alone.forward_passes


def test_against_a_quantized_base_with_quantized_activations(samples):
    """Activation ranges are calibrated once and fake-quantized per element: stacked batches quantize alike."""
    sample = samples["digits-resnet"]
    base = Plan.uniform(6, act_bits=8)
    kwargs = {"bits": (2, 4), "prune": (0.5,), "base": base, "layers": ["stem.0", "layer2.conv1", "layer3.shortcut.0", "fc"]}
    stacked = sensitivity(Session(sample.model, sample.eval_data), **kwargs)
    alone = sensitivity(Session(sample.model, sample.eval_data), **kwargs, stack_bytes=0)
    assert_same_table(stacked, alone)
    assert {e.stacked for e in stacked.entries} == {3}
    assert all(e.spec.act_bits == 8 for e in stacked.entries)


def test_a_stacked_pass_counts_its_calls_once(cnn_session):
    table = sensitivity(cnn_session, bits=(2, 4), prune=())
    calls = 15  # module calls of one pass of the CNN
    first = [e.computed_fraction for e in table.entries if e.layer == "features.0"]
    assert first == [pytest.approx((calls + 1) / calls / 2)] * 2  # everything once, the probed layer once per setting
    assert max(e.computed_fraction for e in table.entries if e.layer == "classifier.1") < 0.2
    assert table.forward_passes == pytest.approx(sum(e.computed_fraction for e in table.entries))


def test_the_settings_are_grouped_to_stay_under_stack_bytes(samples):
    sample = samples["digits-cnn"]
    session = Session(sample.model, sample.eval_data)
    per_sample = survey(session._m.runner, session.input_mode).per_sample_bytes
    assert per_sample == 32 * 8 * 8 * 4  # the second conv's output (32 channels of 8 x 8), float32
    budget = 3 * per_sample * 256  # three settings of the larger eval batch (256 samples)
    table = sensitivity(session, bits=(2, 3, 4, 6, 8), prune=(), stack_bytes=budget)
    assert [e.stacked for e in table.entries if e.layer == "features.3"] == [3, 3, 3, 2, 2]
    assert_same_table(table, sensitivity(session, bits=(2, 3, 4, 6, 8), prune=(), stack_bytes=0))
    small = sensitivity(session, bits=(2, 8), prune=(), stack_bytes=per_sample * 256)
    assert set(small.unstacked()) == {f"two settings stacked would hold more than stack_bytes={per_sample * 256} in one activation"}


class Recurrent(nn.Module):
    """An LSTM (its state has the batch in dim 1) and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(x))
        return self.head(out[:, -1])


def test_a_call_whose_batch_is_not_dim_0_makes_the_probes_run_one_at_a_time():
    torch.manual_seed(0)
    model = Recurrent().eval()
    x = torch.randn(30, 5, 4)
    data = (x, model(x).argmax(-1))
    table = sensitivity(Session(model, data), bits=(2, 4), prune=())
    reason = "head: it needs the output of lstm, whose batch is not in dim 0"  # its state is (layers, batch, features)
    assert table.unstacked() == {reason: 2}
    assert [e.stacked for e in table.entries if e.layer == "embed"] == [2, 2]  # nothing upstream to replay
    assert_same_table(table, sensitivity(Session(model, data), bits=(2, 4), prune=(), stack_bytes=0))


def test_torchscript_runs_one_probe_at_a_time_and_says_why(tiny):
    model, data = tiny
    table = sensitivity(Session(torch.jit.script(model), data), bits=(2, 8), prune=())
    assert table.unstacked() == {"TorchScript modules cannot be cut, so every pass runs in full": 4}
    assert all(e.metric is not None for e in table.entries)


def test_progress_and_cancel_inside_a_stacked_pass(samples):
    sample = samples["digits-resnet"]
    session = Session(sample.model, sample.eval_data)
    calls = []
    table = sensitivity(session, bits=(3, 8), prune=(0.5,), progress=lambda d, t: calls.append((d, t)))
    total = len(table.entries) + 1
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) == len(table.layers) + 2  # one report per stacked group
    before = session.evaluate(Plan().with_layer("layer2.conv1", bits=3))
    asked = []

    def cancel() -> bool:  # stops inside the third stacked pass (after the base evaluation's checks)
        asked.append(1)
        return len(asked) > 120

    with pytest.raises(Cancelled):
        sensitivity(session, bits=(2, 3, 4, 6, 8), cancel=cancel)
    assert sensitivity(session, bits=(3, 8), prune=(0.5,)).entries == table.entries  # the session works on, bit for bit
    after = session.evaluate(Plan().with_layer("layer2.conv1", bits=3))
    assert (after.metric, after.fidelity) == (before.metric, before.fidelity)


def test_a_thread_executor_stacks_in_each_worker(tiny):
    model, data = tiny
    session = Session(model, data)
    local = sensitivity(session, bits=(2, 4), prune=(0.5,))
    with ThreadPoolExecutor(max_workers=2) as executor:
        fanned = sensitivity(session, bits=(2, 4), prune=(0.5,), executor=executor)
    assert fanned.entries == local.entries
    assert {e.stacked for e in fanned.entries} == {3}


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1GB"])
def test_bad_stack_bytes_says_what_to_do(mlp_session, bad):
    with pytest.raises(studio.StudioError, match="stack_bytes must be a whole number of bytes"):
        sensitivity(mlp_session, stack_bytes=bad)

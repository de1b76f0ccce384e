"""Incremental evaluation: after a change only what is downstream re-runs, and the
outputs are bit-identical to a full pass."""

import random
import sys
import time
from collections.abc import Callable

import pytest
import torch
from torch import nn

import studio
from studio.engine import Cancelled, Plan, Session
from studio.engine.memory import PeakSampler
from studio.engine.replay import IncrementalRunner


def full_pass(session: Session, plan: Plan) -> list[torch.Tensor]:
    """The plan's outputs from a standalone module (no replay at all)."""
    model = session.compressed_model(plan)
    with torch.no_grad():
        return [session.output_fn(model(x) if not isinstance(x, dict) else model(**x)).float() for x, _ in session.batches()]


def random_walk(session: Session, steps: int, seed: int, acts: bool = True) -> list[Plan]:
    """A slider session: one layer (or the activations, or the calibration) changes per step."""
    rng = random.Random(seed)
    plan, plans = Plan(), []
    for _ in range(steps):
        move = rng.random()
        if acts and move < 0.15:
            plan = plan.with_all(act_bits=rng.choice([None, 8, 16]))
        elif acts and move < 0.25:
            plan = plan.replace(calibration=rng.choice(["minmax", "percentile", "mse"]))
        else:
            name = rng.choice(session.layer_names)
            plan = plan.with_layer(name, bits=rng.choice([None, 2, 3, 4, 6, 8, 16]), prune=rng.choice([0.0, 0.5]))
        plans.append(plan)
    return plans


def assert_identical(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


@pytest.mark.parametrize("name", studio.list_samples())
def test_every_sample_is_bit_identical_to_a_full_pass(samples, name):
    sample = samples[name]
    session = Session(sample.model, sample.eval_data)
    reference = Session(sample.model, sample.eval_data, activation_cache_bytes=0)  # keeps nothing: full passes
    replayed = 0
    for plan in random_walk(session, 14, seed=hash(name) % 1000):
        report = session.evaluate(plan)
        assert_identical(session.outputs(plan), reference.outputs(plan))
        assert report.metric == reference.evaluate(plan).metric
        replayed += report.timing.calls - report.timing.computed
    assert_identical(session.outputs(plan), full_pass(session, plan))
    assert replayed > 0  # some passes really ran downstream only


def test_last_layer_change_runs_only_the_last_layer(samples):
    sample = samples["digits-resnet"]
    session = Session(sample.model, sample.eval_data)
    session.evaluate(Plan().with_layer(session.layer_names[0], bits=4))  # fills what is kept
    report = session.evaluate(Plan().with_layer(session.layer_names[0], bits=4).with_layer(session.layer_names[-1], bits=4))
    assert report.timing.mode == "incremental"
    assert report.timing.computed <= 2 * len(session.batches())  # the head (and its parent) per batch
    unchanged = session.evaluate(Plan().with_layer(session.layer_names[0], bits=4).with_layer(session.layer_names[-1], bits=4))
    assert unchanged.timing.computed == 0 and unchanged.metric == report.metric


class Residual(nn.Module):
    """Residual blocks whose skip adds in place onto a layer's output (torchvision-style)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(12, 32)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32)) for _ in range(4)])
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        for block in self.blocks:
            out = block(x)
            out += x  # modifies a kept output in place: must never be replayed stale
            x = torch.relu(out)
        return self.head(x)


def test_residual_model_with_in_place_adds_is_bit_identical():
    torch.manual_seed(0)
    model = Residual().eval()
    x = torch.randn(96, 12)
    data = (x, model(x).argmax(1))
    session = Session(model, data, batch_size=32)
    reference = Session(model, data, batch_size=32, activation_cache_bytes=0)
    for plan in random_walk(session, 20, seed=3):
        assert_identical(session.outputs(plan), reference.outputs(plan))


class InPlaceReLU(nn.Module):
    """torchvision's pattern: a layer's output modified in place by the next call (ReLU(inplace=True), +=)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(12, 32)
        self.relu = nn.ReLU(inplace=True)
        self.body = nn.Linear(32, 32)
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.stem(x))
        out = self.body(x)
        out += x
        return self.head(self.relu(out))


def test_outputs_modified_in_place_are_kept_as_copies_and_still_replayed():
    torch.manual_seed(0)
    model = InPlaceReLU().eval()
    x = torch.randn(96, 12)
    data = (x, model(x).argmax(1))
    session = Session(model, data, batch_size=32)
    reference = Session(model, data, batch_size=32, activation_cache_bytes=0)
    for bits in (8, 4, 3, 2):  # the first changes find the outputs that ReLU and += modify in place
        plan = Plan().with_layer("head", bits=bits)
        report = session.evaluate(plan)
        assert_identical(session.outputs(plan), reference.outputs(plan))
    assert report.timing.computed == len(session.batches())  # only the head re-ran: stem and body were replayed
    for plan in random_walk(session, 16, seed=5):
        assert_identical(session.outputs(plan), reference.outputs(plan))
    assert_identical(session.outputs(plan), full_pass(session, plan))


class DictTransformer(nn.Module):
    """A tiny transformer taking dict inputs (input_ids, attention_mask), with residuals."""

    def __init__(self, vocab: int = 50, dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.attn = nn.MultiheadAttention(dim, 4, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 64), nn.GELU(), nn.Linear(64, dim))
        self.head = nn.Linear(dim, vocab)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(input_ids)
        a, _ = self.attn(h, h, h, key_padding_mask=attention_mask == 0, need_weights=False)
        h = self.norm(h + a)
        return self.head(h + self.ff(h))


def token_data(n: int = 24, length: int = 10, vocab: int = 50) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (n, length), generator=g)
    mask = torch.ones_like(ids)
    mask[::3, -3:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_dict_input_transformer_is_bit_identical():
    torch.manual_seed(0)
    model = DictTransformer().eval()
    data = (token_data(), None)
    session = Session(model, data, batch_size=8)
    reference = Session(model, data, batch_size=8, activation_cache_bytes=0)
    for plan in random_walk(session, 16, seed=5):
        assert_identical(session.outputs(plan), reference.outputs(plan))


def test_hugging_face_bert_is_bit_identical():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32, num_labels=3)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    data = (token_data(16, 12, 100), None)
    session = Session(model, data, batch_size=8)
    reference = Session(model, data, batch_size=8, activation_cache_bytes=0)
    for plan in random_walk(session, 12, seed=7):
        assert_identical(session.outputs(plan), reference.outputs(plan))
    last = session.evaluate(plan.with_layer("classifier", bits=3))
    assert last.timing.computed_fraction < 0.2  # only the classifier (and its callers) ran


class FunctionalHead(nn.Module):
    """Uses a compressible layer's weight outside that layer's own call (tied output head)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.mix = nn.Linear(16, 16)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(torch.tanh(self.mix(self.embed(ids))), self.embed.weight)


def test_weight_used_outside_its_module_runs_a_full_pass_and_says_so():
    torch.manual_seed(0)
    model = FunctionalHead().eval()
    ids = torch.randint(0, 20, (16, 5))
    session = Session(model, (ids, None), batch_size=8)
    reference = Session(model, (ids, None), batch_size=8, activation_cache_bytes=0)
    plan = Plan().with_layer("mix", bits=4)
    session.evaluate(plan)
    report = session.evaluate(plan.with_layer("embed", bits=3))
    assert "used outside its own module" in report.timing.reason
    assert_identical(session.outputs(plan.with_layer("embed", bits=3)), reference.outputs(plan.with_layer("embed", bits=3)))


def test_torchscript_runs_full_passes_and_says_so(samples):
    sample = samples["digits-mlp"]
    session = Session(torch.jit.script(sample.model), sample.eval_data)
    report = session.evaluate(Plan().with_layer("fc3", bits=4))
    assert report.timing.mode == "full" and "TorchScript" in report.timing.reason


def test_a_cancelled_pass_leaves_kept_outputs_consistent(samples):
    sample = samples["digits-cnn"]
    session = Session(sample.model, sample.eval_data, batch_size=100)
    reference = Session(sample.model, sample.eval_data, batch_size=100, activation_cache_bytes=0)
    plan_a = Plan().with_layer("features.3", bits=4)
    session.evaluate(plan_a)
    calls = {"n": 0}

    def cancel_midway() -> bool:
        calls["n"] += 1
        return calls["n"] > 12  # inside the second batch

    plan_b = plan_a.with_layer("features.0", bits=3)
    with pytest.raises(Cancelled):
        session.evaluate(plan_b, cancel=cancel_midway)
    for plan in (plan_a, plan_b, plan_a.with_layer("classifier.1", bits=2)):
        assert_identical(session.outputs(plan), reference.outputs(plan))


class _FixedSampler:
    """Stands in for PeakSampler: each pass batch reports ``peak()``."""

    peak_fn: Callable[[], int] = staticmethod(lambda: 0)

    def __init__(self, accounted) -> None:
        self.peak = _FixedSampler.peak_fn()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def test_kept_outputs_respect_the_budget(samples, monkeypatch):
    sample = samples["digits-resnet"]
    unlimited = Session(sample.model, sample.eval_data)
    unlimited.evaluate(Plan.uniform(8))
    everything = unlimited._runner.kept_bytes
    monkeypatch.setattr("studio.engine.replay.PeakSampler", _FixedSampler)
    mb = 1 << 20
    runner = None
    quantized_batches = []

    def peak() -> int:  # float passes need 4 MiB, the first batch that quantizes activations 11, later ones 10
        if runner is None or not runner._acts:
            return 4 * mb
        quantized_batches.append(1)
        return 11 * mb if len(quantized_batches) == 1 else 10 * mb

    monkeypatch.setattr(_FixedSampler, "peak_fn", staticmethod(peak))
    budget = everything // 2 + 11 * mb
    session = Session(sample.model, sample.eval_data, activation_cache_bytes=budget)
    runner = session._runner
    assert runner.reserved_bytes == 4 * mb * 9 // 8  # what the float passes were measured to use, and an eighth more
    session.evaluate(Plan.uniform(8))
    float_kept = runner.kept_bytes
    assert 0 < float_kept <= budget - 4 * mb * 9 // 8 and float_kept < everything  # the budget bites
    acts = Plan.uniform(8, act_bits=8)
    session.evaluate(acts)
    assert runner.reserved_bytes == 11 * mb * 9 // 8  # measured, where the float passes' 4 MiB was assumed before
    assert 0 < runner.kept_bytes <= budget - 11 * mb * 9 // 8
    for plan in random_walk(session, 6, seed=11, acts=True):
        session.evaluate(plan)
        kept = runner.describe()
        assert kept["kept_bytes"] + kept["reserved_bytes"] <= budget  # a pass's own working memory fits too
    session.evaluate(Plan.uniform(8).with_layer(session.layer_names[-1], bits=4))  # float activations again
    session.evaluate(Plan.uniform(8).with_layer(session.layer_names[-1], bits=5))
    assert runner.reserved_bytes == 4 * mb * 9 // 8 and runner.kept_bytes == float_kept  # room again: kept as before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the RSS comes from /proc")
def test_peak_sampler_sees_a_pass_allocate_and_leaves_out_what_is_accounted():
    held = {"bytes": 0}
    with PeakSampler(lambda: held["bytes"], interval=0.001) as sampler:
        block = torch.ones(16 << 20)  # 64 MiB, touched
        time.sleep(0.02)
        del block
    assert sampler.peak is not None and sampler.peak >= 60 << 20
    with PeakSampler(lambda: held["bytes"], interval=0.001) as accounted:
        held["bytes"] = 64 << 20  # kept on purpose: not working memory
        kept = torch.ones(16 << 20)
        time.sleep(0.02)
    assert accounted.peak is not None and accounted.peak < 16 << 20
    del kept


def test_session_keeps_at_most_one_extra_copy_of_the_weights():
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(256, 256) for _ in range(6)]).eval()
    session = Session(model, (torch.randn(8, 256), None))
    user = {t.untyped_storage().data_ptr() for t in model.state_dict().values()}
    work = {p.untyped_storage().data_ptr() for p in session._prepared.work.parameters()}
    assert work <= user  # in float, the working copy is the user's own tensors, read only
    plan = Plan.uniform(4)
    session.evaluate(plan)
    weights = sum(m.weight.numel() * 4 for m in model)
    held = sum(p.untyped_storage().nbytes() for p in session._prepared.work.parameters() if p.untyped_storage().data_ptr() not in user)
    assert held <= weights  # one dequantized copy of the weights (biases are shared)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    session.evaluate(Plan.uniform(2, prune=0.5))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_later_passes_are_measured_only_while_their_working_memory_matters(samples, monkeypatch):
    sample = samples["digits-mlp"]
    monkeypatch.setattr("studio.engine.replay.PeakSampler", _FixedSampler)
    monkeypatch.setattr(_FixedSampler, "peak_fn", staticmethod(lambda: 1 << 20))  # 1 MiB a pass
    small = Session(sample.model, sample.eval_data)  # 1 GiB: 1 MiB is no part of it
    tight = Session(sample.model, sample.eval_data, activation_cache_bytes=16 << 20)
    assert small._runner.reserved_bytes >= 1 << 20 and tight._runner.reserved_bytes >= 1 << 20  # both measured
    assert not small._runner._sampling()  # a thread per batch would cost more than it tells
    assert tight._runner._sampling()


def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 8 * 8, 10),
    ).eval()


def test_the_budget_also_holds_the_eval_data_and_weights_beyond_their_allowance(monkeypatch):
    monkeypatch.setattr("studio.engine.replay.PeakSampler", _FixedSampler)
    monkeypatch.setattr(_FixedSampler, "peak_fn", staticmethod(lambda: 1 << 20))
    model = _bn_model()
    data = (torch.randn(64, 3, 8, 8), None)
    data_bytes = 64 * 3 * 8 * 8 * 4
    float_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    weights = sum(m.weight.numel() * 4 for m in model if isinstance(m, (nn.Conv2d, nn.Linear)))
    conv_weights = weights - 10 * 32 * 8 * 8 * 4  # folded: the session's own float copies
    cache = 3 * float_bytes
    session = Session(model, data, cache_bytes=cache, activation_cache_bytes=8 << 20)
    runner = session._runner
    allowance = int(1.5 * float_bytes)
    assert runner.held_bytes == data_bytes + max(0, conv_weights + weights - allowance)  # nothing cached yet
    session.evaluate(Plan.uniform(8))
    session.evaluate(Plan.uniform(4))
    cached = session._m.cache.nbytes
    assert cached > 0
    assert runner.held_bytes == data_bytes + max(0, conv_weights + weights + cached - allowance)
    kept = runner.describe()
    assert kept["kept_bytes"] + kept["reserved_bytes"] + kept["held_bytes"] <= 8 << 20
    # a model whose weights stay within the allowance (no folding, default cache): the data only
    plain = Session(nn.Sequential(nn.Linear(16, 16)).eval(), (torch.randn(32, 16), None))
    plain.evaluate(Plan.uniform(8))
    assert plain._runner.held_bytes == 32 * 16 * 4


def test_the_default_cache_budget_follows_the_model():
    small = Session(nn.Sequential(nn.Linear(16, 16)).eval(), (torch.randn(4, 16), None))
    assert small._m.cache.budget_bytes == 64 << 20  # at least 64 MiB
    big = nn.Sequential(nn.Linear(4096, 8192)).eval()  # 128 MiB
    session = Session(big, (torch.randn(2, 4096), None))
    assert session._m.cache.budget_bytes == session.float_size_bytes  # the float model's bytes


def test_a_pass_lets_go_of_what_it_will_recompute_before_it_runs(samples, monkeypatch):
    sample = samples["digits-cnn"]
    session = Session(sample.model, sample.eval_data)
    runner = session._runner
    base = Plan.uniform(8)
    session.evaluate(base)
    changed = base.with_layer(session.layer_names[len(session.layer_names) // 2], bits=4)
    bounds = [runner.boundary(b, session._m.configs(changed, {})) for b in range(len(runner.batches))]
    assert any(i >= bounds[b] for b, i in runner._store)  # kept from the last pass, to be recomputed
    stale_at_start = []
    real = IncrementalRunner._invoke

    def spy(self, idx, fwd, args, kwargs):  # noqa: ANN001, ANN202
        run = self._run
        if run is not None and run.computed == 0:  # the first call this batch computes
            stale_at_start.append(sum(1 for b, i in self._store if b == run.batch and i >= run.boundary))
        return real(self, idx, fwd, args, kwargs)

    monkeypatch.setattr(IncrementalRunner, "_invoke", spy)
    session.evaluate(changed)
    assert stale_at_start and max(stale_at_start) == 0
    assert runner.kept_bytes > 0  # and kept again as the pass computed them


def test_a_load_lets_a_layers_old_weights_go_before_it_makes_the_new(monkeypatch):
    from studio.engine.compress import CompressedWeight

    model = nn.Sequential(nn.Linear(64, 8)).eval()
    session = Session(model, (torch.randn(16, 64), None))
    session.evaluate(Plan.uniform(8))
    user = model[0].weight.untyped_storage().data_ptr()
    working = session._prepared.modules["0"]
    assert working.weight.untyped_storage().data_ptr() != user  # holds its int8 weights
    held_at_decode = []
    real = CompressedWeight.dequant_view

    def spy(self):  # noqa: ANN001, ANN202
        held_at_decode.append(working.weight.untyped_storage().data_ptr())
        return real.fget(self)

    monkeypatch.setattr(CompressedWeight, "dequant_view", property(spy))
    session.evaluate(Plan.uniform(4))
    assert held_at_decode and held_at_decode[0] == user  # back on the float weights while the new ones are made

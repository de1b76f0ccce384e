"""Recovery fine-tuning: judged by the engine, deterministic, cancellable, never mutating."""

import json

import pytest
import torch
from torch import nn

import studio
from studio.engine import Cancelled, Plan, Session
from studio.engine.finetune import finetune
from studio.engine.recovered import EpochRecord, FinetuneConfig, Recovered
from studio.engine.schedule import ramp_epochs, ratio_at

pytestmark = pytest.mark.usefixtures("one_thread")  # many small passes: one intra-op thread is faster


def _subset(data, n):
    x, y = data
    return x[:n], (None if y is None else y[:n])


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def cnn_qat(samples, cnn_session):
    """digits-cnn, 4-bit weights and 8-bit activations, two epochs of QAT on 512 images."""
    plan = Plan.uniform(4, act_bits=8)
    return plan, finetune(cnn_session, plan, _subset(samples["digits-cnn"].train_data, 512), epochs=2, lr=1e-3)


def test_recovered_metric_is_what_evaluate_measures(samples, cnn_session, cnn_qat):
    plan, rec = cnn_qat
    report = Session(rec.model, samples["digits-cnn"].eval_data).evaluate(plan)
    assert report.metric == rec.metric
    assert report.size_bytes == rec.size_bytes
    # Huffman-coded sizes follow the trained codes' histogram: close to, not equal to, the start's
    assert rec.size_bytes == pytest.approx(cnn_session.size(plan).size_bytes, rel=0.01)
    assert rec.before_metric == cnn_session.evaluate(plan).metric
    assert rec.metric > rec.before_metric  # recovery recovered something
    for record in rec.history:
        # the training forward sees what evaluate measures; the gap is the activation ranges,
        # recalibrated on the new weights by evaluate, one epoch after training used them
        assert abs(record.metric - record.forward_metric) <= 0.005


def test_batchnorm_is_folded_before_training_on_digits_cnn(samples, cnn_session, cnn_qat):
    _, rec = cnn_qat
    assert cnn_session.folds  # the user's model has three Conv+BatchNorm pairs
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in rec.model.modules())
    start = cnn_session.float_model()
    x = samples["digits-cnn"].eval_data[0][:64]
    with torch.no_grad():  # training starts from the folded model: same function as the user's
        assert torch.allclose(start(x), samples["digits-cnn"].model(x), atol=1e-5)
    trained = Session(rec.model, samples["digits-cnn"].eval_data)
    assert trained.folds == [] and [layer.name for layer in trained.layers] == cnn_session.layer_names
    assert all(layer.has_bias for layer in trained.layers)  # the folded BatchNorm lives on as the bias
    assert not _same_state(_state(start), _state(rec.model))


def test_fixed_masks_stay_fixed_and_pruned_weights_stay_exactly_zero(samples, mlp_session):
    plan = Plan.uniform(4, prune=0.8).with_layer("fc3", bits=3, cluster=True, prune=0.5)
    start = {n: mlp_session.compressed(n, plan.spec_for(n)).keep for n in mlp_session.layer_names}
    rec = finetune(mlp_session, plan, _subset(samples["digits-mlp"].train_data, 256), epochs=2, lr=5e-3)
    judge = Session(rec.model, samples["digits-mlp"].eval_data)
    for name in mlp_session.layer_names:
        weight = rec.model.get_submodule(name).weight.detach()
        assert torch.equal(weight != 0, start[name])  # zeros exactly where the first mask said
        assert torch.equal(judge.compressed(name, plan.spec_for(name)).keep, start[name])
    assert all(r.sparsity == rec.history[0].sparsity for r in rec.history)


def test_gradual_schedule_reaches_the_plans_ratio(samples, mlp_session):
    ramp = 10
    ratios = [ratio_at("gradual", 0.9, t, ramp) for t in range(ramp + 3)]
    assert ratios[0] == 0 and ratios[ramp:] == [0.9] * 3
    assert all(a < b for a, b in zip(ratios[:ramp], ratios[1 : ramp + 1]))
    assert ratios[1] - ratios[0] > ratios[ramp] - ratios[ramp - 1]  # cubic: fast, then slow
    assert ramp_epochs(5) == 3 and ramp_epochs(1) == 1

    plan = Plan.uniform(None).with_layer("fc1", prune=0.9).with_layer("fc2", prune=0.75, prune_method="structured")
    rec = finetune(mlp_session, plan, _subset(samples["digits-mlp"].train_data, 256), epochs=3, lr=2e-3, prune_schedule="gradual")
    sparsity = [r.sparsity for r in rec.history]
    assert sparsity == sorted(sparsity) and sparsity[0] < sparsity[-1]
    assert [r.at_plan for r in rec.history] == [False, True, True]  # a two-epoch ramp
    for record in rec.history[1:]:  # at the plan's ratio, training sees what evaluate measures
        assert abs(record.metric - record.forward_metric) <= 0.005
    fc1 = rec.model.fc1.weight.detach()
    assert int((fc1 == 0).sum()) == round(0.9 * fc1.numel())
    fc2 = rec.model.fc2.weight.detach()
    assert int((fc2 == 0).all(dim=1).sum()) == 75  # whole output channels
    assert Session(rec.model, samples["digits-mlp"].eval_data).evaluate(plan).metric == rec.metric


def test_same_seed_same_result_other_seed_differs(samples, mlp_session):
    plan = Plan.uniform(3, prune=0.5)
    data = _subset(samples["digits-mlp"].train_data, 200)
    a, b, c = (finetune(mlp_session, plan, data, epochs=1, batch_size=32, seed=s) for s in (0, 0, 1))
    assert _same_state(_state(a.model), _state(b.model))
    assert [r.train_loss for r in a.history] == [r.train_loss for r in b.history]
    assert not _same_state(_state(a.model), _state(c.model))


def test_cancel_halfway_and_no_mutation_of_model_or_session(samples, mlp_session):
    sample = samples["digits-mlp"]
    plan = Plan.uniform(4, prune=0.5, act_bits=8)
    user_state = _state(sample.model)
    session_float = _state(mlp_session.float_model())
    session_report = mlp_session.evaluate(plan)
    session_acts = mlp_session.activation_params(plan)
    data = _subset(sample.train_data, 256)
    calls = []

    def progress(done, total):
        calls.append((done, total))

    with pytest.raises(Cancelled):
        finetune(mlp_session, plan, data, epochs=2, batch_size=32, progress=progress, cancel=lambda: len(calls) >= 8)
    assert calls[-1] == (8, 16)  # stopped halfway, at the next batch
    rec = finetune(mlp_session, plan, data, epochs=1, batch_size=32, method="distill", teacher=sample.model)
    assert not _same_state(_state(rec.model), session_float)
    assert _same_state(_state(sample.model), user_state)
    assert _same_state(_state(mlp_session.float_model()), session_float)
    again = mlp_session.evaluate(plan)
    assert (again.metric, again.size_bytes) == (session_report.metric, session_report.size_bytes)
    assert mlp_session.activation_params(plan) == session_acts


def test_progress_per_batch(samples, mlp_session):
    calls = []
    finetune(mlp_session, Plan.uniform(8), _subset(samples["digits-mlp"].train_data, 100), epochs=2, batch_size=30,
             progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 8) for i in range(1, 9)]


def test_distill_needs_no_labels_and_qat_says_to_use_it(samples, cnn_session):
    x, _ = _subset(samples["digits-cnn"].train_data, 256)
    plan = Plan.uniform(3)
    with pytest.raises(ValueError, match="method='distill'"):
        finetune(cnn_session, plan, (x, None), epochs=1)
    rec = finetune(cnn_session, plan, (x, None), method="distill", epochs=2, lr=2e-3)
    assert rec.method == "distill"
    assert rec.metric > rec.before_metric
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=64)
    from_loader = finetune(cnn_session, plan, ([b[0] for b in loader]), method="distill", epochs=1)
    assert from_loader.history[0].train_loss > 0


def test_distilled_student_is_a_new_model_to_keep_compressing(samples):
    teacher = samples["digits-cnn"]
    student = studio.samples.student("digits-cnn", width=0.5, seed=0)
    assert student.features[0].out_channels == 8 and student.classifier[1].in_features == 32
    session = Session(student, teacher.eval_data)
    rec = finetune(session, Plan(), teacher.train_data, method="distill", teacher=teacher.model, epochs=3, lr=5e-3)
    assert rec.before_metric < 0.2 and rec.metric > rec.before_metric + 0.3  # it learns from the teacher
    again = Session(rec.model, teacher.eval_data)
    assert again.evaluate(Plan()).metric == rec.metric
    int8 = again.evaluate(Plan.uniform(8))
    assert int8.compression_ratio > 3 and abs(int8.delta) <= 0.01


def test_student_widths_and_default_weights(samples):
    from studio.samples.architectures import DigitsCNN, DigitsMLP, DigitsResNet, DigitsViT

    assert DigitsMLP(width=0.5).fc1.out_features == 150
    assert DigitsResNet(width=0.25).fc.in_features == 16
    assert DigitsViT(width=0.5).head.in_features == 24  # kept a multiple of the 4 heads
    for name in studio.list_samples():  # width 1.0 still loads the bundled weights
        assert samples[name].model is not None
    a, b = studio.samples.student("digits-mlp", 0.5, seed=3), studio.samples.student("digits-mlp", 0.5, seed=3)
    assert _same_state(_state(a), _state(b))
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    studio.samples.student("digits-cnn", 0.5)
    assert torch.equal(state, torch.random.get_rng_state())
    for bad in (0, -1, "half", True):
        with pytest.raises(ValueError, match="width"):
            DigitsCNN(width=bad)


def test_recovered_round_trips_without_its_model(cnn_qat):
    _, rec = cnn_qat
    data = json.loads(json.dumps(rec.to_dict()))  # plain JSON
    back = Recovered.from_dict(data, model=rec.model)
    assert back == rec and back.model is rec.model
    assert Recovered.from_dict(data).to_dict() == data
    assert rec.compression_ratio == pytest.approx(rec.float_size_bytes / rec.size_bytes)
    assert EpochRecord.from_dict(rec.history[0].to_dict()) == rec.history[0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "lsq"}, "method"),
        ({"epochs": 0}, "epochs"),
        ({"lr": -1.0}, "lr"),
        ({"alpha": 1.5}, "alpha"),
        ({"temperature": 0}, "temperature"),
        ({"prune_schedule": "linear"}, "prune schedule"),
        ({"batch_size": 2.5}, "batch_size"),
    ],
)
def test_bad_settings_say_what_to_do(mlp_session, samples, kwargs, match):
    with pytest.raises(ValueError, match=match):
        finetune(mlp_session, Plan.uniform(8), samples["digits-mlp"].train_data, **kwargs)


def test_bad_plan_or_data(mlp_session):
    with pytest.raises(ValueError, match="does not have"):
        finetune(mlp_session, Plan().with_layer("nope", bits=4), (torch.zeros(4, 64), torch.zeros(4, dtype=torch.long)))
    with pytest.raises(ValueError, match="train_data"):
        finetune(mlp_session, Plan.uniform(8), None)
    assert FinetuneConfig().to_dict()["method"] == "qat"


def test_train_set_reshuffles_every_sample_by_seed_and_keeps_unstackable_batches_whole():
    from studio.engine.trainset import TrainSet

    x = {"a": torch.arange(10.0).reshape(10, 1), "b": torch.arange(10)}
    data = TrainSet((x, torch.arange(10)), batch_size=4)
    assert len(data) == 3 and data.n_samples == 10
    first = [t.tolist() for _, t in data.epoch(torch.Generator().manual_seed(0))]
    again = [t.tolist() for _, t in data.epoch(torch.Generator().manual_seed(0))]
    assert first == again and sorted(sum(first, [])) == list(range(10)) and first != [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    for inputs, targets in data.epoch(torch.Generator().manual_seed(1)):
        assert torch.equal(inputs["b"], targets)  # inputs and targets stay paired
    ragged = TrainSet([(torch.zeros(2, 3), None), (torch.zeros(3, 5), None)], batch_size=8)
    shapes = sorted(tuple(x.shape) for x, _ in ragged.epoch(torch.Generator().manual_seed(0)))
    assert shapes == [(2, 3), (3, 5)] and len(ragged) == 2 and not ragged.has_targets


def test_finetune_leaves_the_global_random_state_alone(samples, mlp_session):
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    finetune(mlp_session, Plan.uniform(8), _subset(samples["digits-mlp"].train_data, 64), epochs=1)
    assert torch.equal(state, torch.random.get_rng_state())

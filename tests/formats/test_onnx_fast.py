"""The onnx-fast export: the studio's numbers, on the kernels ONNX Runtime runs fast."""

import collections

import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import studio
from studio.engine import Plan
from studio.engine.formats import export_bytes as write_format
from studio.engine.formats.onnx_integer import FORMAT, build_fast
from studio.engine.formats.onnx_meta import layer_notes, read_metadata, session_config
from studio.engine.formats.onnx_trace import export_float_onnx


def export_bytes(session, plan, fmt):
    """The file of ``plan`` as ``fmt``, and its suffix."""
    data, chosen = write_format(session.compile(plan), fmt)
    return data, chosen.suffix


def export_onnx_fast(session, plan):
    return export_bytes(session, plan, "onnx-fast")[0]


def ort_session(data: bytes, optimized: str | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    for key, value in session_config(data).items():
        options.add_session_config_entry(key, value)
    if optimized:
        options.optimized_model_filepath = optimized
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def run_onnx(data: bytes, session: studio.Session) -> float:
    sess = ort_session(data)
    return session.score([torch.from_numpy(sess.run(None, {"input": x.numpy()})[0]) for x, _ in session.batches()]).metric


def runtime_ops(data: bytes, tmp_path) -> collections.Counter:
    """The op types ONNX Runtime runs after its graph optimizations (constant folding included)."""
    path = str(tmp_path / "optimized.onnx")
    ort_session(data, path)
    return collections.Counter(n.op_type for n in onnx.load(path).graph.node)


def mixed(session: studio.Session) -> Plan:
    names = session.layer_names
    return Plan.uniform(8).with_layer(names[0], bits=3).with_layer(names[1], bits=4, prune=0.5)


PLANS = ["full-integer", "dynamic-range", "16x8", "float16", "deep-compression", "mixed", "mixed+act"]


@pytest.fixture(scope="module")
def sessions(samples) -> dict[str, studio.Session]:
    return {name: studio.Session(s.model, s.eval_data) for name, s in samples.items()}


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn", "digits-resnet", "digits-vit"])
@pytest.mark.parametrize("plan_name", PLANS)
def test_onnx_fast_reproduces_the_studio_accuracy(sessions, name, plan_name):
    session = sessions[name]
    if plan_name.startswith("mixed"):
        plan = mixed(session) if plan_name == "mixed" else mixed(session).with_all(act_bits=8)
    else:
        plan = Plan.preset(plan_name, session)
    data = export_onnx_fast(session, plan)
    assert abs(run_onnx(data, session) - session.evaluate(plan).metric) <= 0.003
    meta = read_metadata(data)
    assert meta["studio.format"] == FORMAT and Plan.from_json(meta["studio.plan"]) == plan
    assert set(layer_notes(data)) == set(session.layer_names)


def test_weight_only_layers_are_dequantized_once_at_load(cnn_session, tmp_path):
    data = export_onnx_fast(cnn_session, mixed(cnn_session))  # 3-, 4- and 8-bit weights, float activations
    inits = onnx.load_from_string(data).graph.initializer
    stored = {i.data_type for i in inits if "weight" in i.name and "_scale" not in i.name and len(i.dims) > 1}
    assert onnx.TensorProto.INT4 in stored and onnx.TensorProto.INT8 in stored and onnx.TensorProto.FLOAT not in stored
    ops = runtime_ops(data, tmp_path)
    assert not {"DequantizeLinear", "Cast", "Mul"} & set(ops), ops  # all folded into float weights
    assert ops["Conv"] + ops["FusedConv"] == 3


def test_standard_qdq_weight_only_plans_ask_ort_to_fold_their_dequantization(cnn_session, tmp_path):
    data, _ = export_bytes(cnn_session, Plan.preset("dynamic-range", cnn_session), "onnx")
    assert session_config(data)["session.disable_quant_qdq"] == "1"
    assert "DequantizeLinear" not in runtime_ops(data, tmp_path)
    act, _ = export_bytes(cnn_session, Plan.preset("full-integer", cnn_session), "onnx")
    assert "session.disable_quant_qdq" not in session_config(act)  # its Q/DQ pairs are fused into integer kernels


def test_full_integer_runs_integer_kernels(sessions, tmp_path):
    cnn = export_onnx_fast(sessions["digits-cnn"], Plan.preset("full-integer", sessions["digits-cnn"]))
    ops = runtime_ops(cnn, tmp_path)
    assert ops["QLinearConv"] == 2 and ops["MatMulIntegerToFloat"] == 1  # features.0 (fan-in 9) runs float
    notes = layer_notes(cnn)
    assert "fan-in 9" in notes["features.0"] and notes["features.3"].startswith("integer kernel")
    vit = export_onnx_fast(sessions["digits-vit"], Plan.preset("full-integer", sessions["digits-vit"]))
    assert runtime_ops(vit, tmp_path)["MatMulIntegerToFloat"] == 9  # every Linear but the 4-input patch embedding


def test_activations_stay_uint8_between_layers(cnn_session):
    model = onnx.load_from_string(export_onnx_fast(cnn_session, Plan.preset("full-integer", cnn_session)))
    ops = collections.Counter(n.op_type for n in model.graph.node)
    # Relu runs as a uint8 Clip, MaxPool on uint8 and global pooling as QLinearGlobalAveragePool
    assert ops["Relu"] == 0 and ops["Clip"] >= 2 and ops["QLinearGlobalAveragePool"] == 1
    maxpool = next(n for n in model.graph.node if n.op_type == "MaxPool")
    producer = next(n for n in model.graph.node if maxpool.input[0] in n.output)
    assert producer.op_type in ("Clip", "QLinearConv", "QuantizeLinear")


def test_verify_runs_the_fast_file_with_its_session_options(cnn_session, tmp_path):
    plan = Plan.preset("full-integer", cnn_session)
    path = tmp_path / "fast.onnx"
    path.write_bytes(export_onnx_fast(cnn_session, plan))
    assert session_config(path.read_bytes()) == {"session.disable_quant_qdq": "1", "session.disable_double_qdq_remover": "1"}
    check = cnn_session.verify(path)
    assert check.metric == pytest.approx(check.studio_metric, abs=0.003)
    assert check.latency_ms > 0 and check.float_latency_ms > 0


# -- structured pruning as smaller layers ------------------------------------------------------
def weight_dims(data: bytes) -> dict[str, list[int]]:
    model = onnx.load_from_string(data)
    codes = [i for i in model.graph.initializer if ".weight" in i.name and "_scale" not in i.name and "_zp" not in i.name]
    return {i.name.split(".weight")[0]: list(i.dims) for i in codes}


@pytest.mark.parametrize("base", ["dynamic-range", "full-integer"])
def test_structured_pruning_removes_channels_from_producer_and_consumer(mlp_session, base):
    plan = Plan.preset(base, mlp_session).with_all(prune=0.5, prune_method="structured")
    data = export_onnx_fast(mlp_session, plan)
    dims = weight_dims(data)
    assert sorted(dims["fc1"]) == [64, 150] and sorted(dims["fc2"]) == [50, 150] and sorted(dims["fc3"]) == [10, 50]
    assert "150 of 300 output channels removed" in layer_notes(data)["fc1"]
    assert abs(run_onnx(data, mlp_session) - mlp_session.evaluate(plan).metric) <= 0.003


class ConstantChannels(nn.Module):
    """Linear -> ReLU -> Linear, and Conv -> ReLU -> padded Conv -> ReLU -> unpadded 1x1 Conv."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 4)
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = x[:, :4].reshape(-1, 1, 2, 2).repeat(1, 1, 3, 3)
        conv = self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(image))))).mean(dim=(2, 3))
        return self.fc2(torch.relu(self.fc1(x))) + conv


def test_constant_channels_fold_into_biases_only_where_padding_allows():
    torch.manual_seed(0)
    model = ConstantChannels().eval()
    with torch.no_grad():
        model.fc1.bias.copy_(torch.linspace(-1, 1, 8))  # pruned channels: some constant > 0 after ReLU
        model.conv1.bias.fill_(0.5)  # positive constants before a padded conv: must stay
        model.conv2.bias.copy_(torch.linspace(-1, 1, 32))  # before a 1x1 conv: fold into its bias
    x = torch.randn(300, 6)
    session = studio.Session(model, (x, None), fold_bn=False)
    plan = Plan().with_all(prune=0.5, prune_method="structured")
    compiled = session.compile(plan)
    proto = export_float_onnx(compiled.float_model(), compiled.example_inputs)
    model_out, how = build_fast(proto, compiled.layers, compiled.weights, {})
    assert "4 of 8 output channels removed" in how["fc1"]
    assert "kept" in how["conv1"] and "16 of 32 output channels removed" in how["conv2"]
    sess = ort.InferenceSession(model_out.SerializeToString(), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(sess.run(None, {"input": x.numpy()})[0])
    want = session.compressed_model(plan)(x).detach()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fmt", ["onnx", "onnx-fast"])
@pytest.mark.parametrize("name", ["digits-mlp", "digits-resnet"])
def test_pruned_channels_keep_their_bias_in_integer_kernels(sessions, name, fmt):
    # an all-zero channel outputs its bias; with the studio's placeholder scale 1 an int32
    # bias would be rounded to the input's scale (this cost 0.4 points on digits-mlp)
    session = sessions[name]
    plan = Plan.preset("full-integer", session).with_all(prune=0.5, prune_method="structured")
    data = export_bytes(session, plan, "onnx")[0] if fmt == "onnx" else export_onnx_fast(session, plan)
    assert abs(run_onnx(data, session) - session.evaluate(plan).metric) <= 0.001


class TiedHead(nn.Module):
    """An embedding whose weight is also the output projection (language-model style)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(60, 16)
        self.head = nn.Linear(16, 60, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids).mean(dim=1))


@pytest.mark.parametrize("fmt", ["onnx", "onnx-fast"])
def test_a_weight_read_by_two_nodes_is_compressed_for_both(fmt):
    torch.manual_seed(0)
    model = TiedHead().eval()
    ids = torch.randint(0, 60, (400, 6))
    session = studio.Session(model, (ids, model(ids).argmax(1)))
    assert session.layer_names == ["embed"]  # the tied weight is one layer
    plan = Plan.uniform(3)
    data = export_bytes(session, plan, "onnx")[0] if fmt == "onnx" else export_onnx_fast(session, plan)
    sess = ort_session(data)
    outputs = [torch.from_numpy(sess.run(None, {"input": x.numpy()})[0]) for x, _ in session.batches()]
    assert session.score(outputs).metric == pytest.approx(session.evaluate(plan).metric, abs=0.003)
    assert session.evaluate(plan).metric < 0.99  # 3-bit weights do change the answers: the test can tell


def test_verify_passes_the_recorded_session_options_to_onnx_runtime(cnn_session, monkeypatch):
    from studio.engine.formats import onnx as onnx_format

    seen = []
    real = ort.InferenceSession

    def spy(data, options=None, **kwargs):
        seen.append({k: options.get_session_config_entry(k) for k in ("session.disable_quant_qdq", "session.disable_double_qdq_remover")})
        return real(data, options, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    data = export_onnx_fast(cnn_session, Plan.preset("full-integer", cnn_session))
    onnx_format.ort_session(data)
    assert seen == [{"session.disable_quant_qdq": "1", "session.disable_double_qdq_remover": "1"}]


class EveryKind(nn.Module):
    """Conv1d, a depthwise and a plain Conv2d, ConvTranspose2d, Embedding and Linear in one model."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1d = nn.Conv1d(8, 24, 3, padding=1)
        self.depthwise = nn.Conv2d(24, 24, 3, padding=1, groups=24)
        self.conv2d = nn.Conv2d(24, 32, 3, padding=1)
        self.up = nn.ConvTranspose2d(32, 8, 2, stride=2)
        self.embed = nn.Embedding(16, 8)
        self.fc = nn.Linear(8 * 8 * 8 + 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = torch.relu(self.conv1d(x[:, :, :16]))  # (N, 24, 16)
        image = torch.relu(self.depthwise(seq.reshape(-1, 24, 4, 4)))
        image = self.up(torch.relu(self.conv2d(image))).flatten(1)  # (N, 8 * 8 * 8)
        token = self.embed((x[:, 0, 0].abs() * 7).long().clamp(0, 15))
        return self.fc(torch.cat([image, token], dim=1))


@pytest.mark.parametrize("plan_name", ["full-integer", "16x8", "dynamic-range"])
def test_every_layer_kind_exports_with_the_studio_accuracy(plan_name):
    torch.manual_seed(0)
    model = EveryKind().eval()
    x = torch.randn(400, 8, 16)
    session = studio.Session(model, (x, model(x).argmax(1)))
    plan = Plan.preset(plan_name, session)
    data = export_onnx_fast(session, plan)
    assert abs(run_onnx(data, session) - session.evaluate(plan).metric) <= 0.003
    notes = layer_notes(data)
    if plan_name == "full-integer":
        assert notes["conv1d"].startswith("integer kernel") and notes["conv2d"].startswith("integer kernel")
        assert "fan-in 9" in notes["depthwise"] and "ConvTranspose" in notes["up"]

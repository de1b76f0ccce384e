"""Regression tests for the ONNX export fixes of issue 8: packed int4, untraced layers, dict inputs."""

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import studio
from studio.engine import Plan
from studio.engine.formats import export_bytes as write_format
from studio.engine.formats.onnx_meta import export_notes, session_config
from studio.engine.formats.onnx_trace import CallAdapter, export_float_onnx


def export_bytes(session, plan, fmt):
    """The file of ``plan`` as ``fmt``, and its suffix."""
    data, chosen = write_format(session.compile(plan), fmt)
    return data, chosen.suffix


def export_onnx_fast(session, plan):
    return export_bytes(session, plan, "onnx-fast")[0]


def run_onnx(data: bytes, session: studio.Session) -> float:
    options = ort.SessionOptions()
    for key, value in session_config(data).items():
        options.add_session_config_entry(key, value)
    sess = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    outputs = []
    for x, _ in session.batches():
        feeds = {k: v.numpy() for k, v in x.items() if k in names} if isinstance(x, dict) else {"input": x.numpy()}
        outputs.append(torch.from_numpy(sess.run(None, feeds)[0]))
    return session.score(outputs).metric


# -- int4 weights are packed two a byte -------------------------------------------------------
@pytest.mark.parametrize("fmt", ["onnx", "onnx-fast"])
def test_four_bit_weights_take_four_bits_in_the_file(mlp_session, fmt):
    plan = Plan(default=studio.LayerSpec(bits=4), huffman=False)  # ONNX cannot entropy-code: compare packed sizes
    data = export_bytes(mlp_session, plan, "onnx")[0] if fmt == "onnx" else export_onnx_fast(mlp_session, plan)
    estimate = mlp_session.size(plan).size_bytes
    assert len(data) <= 1.15 * estimate, (len(data), estimate)
    model = onnx.load_from_string(data)
    int4 = [i for i in model.graph.initializer if i.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4)]
    weights = {i.name: i for i in int4 if len(i.dims) == 2}  # the codes (zero-points are 1-D)
    assert len(weights) == 3  # fc1, fc2, fc3
    for init in weights.values():
        assert len(init.raw_data) == math.ceil(math.prod(init.dims) / 2) and not init.int32_data
    assert run_onnx(data, mlp_session) == pytest.approx(mlp_session.evaluate(plan).metric, abs=0.003)


def test_int4_values_survive_packing():
    from studio.engine.formats.onnx_graph import make_initializer

    codes = np.array([[-7, -1, 0, 7, 3], [1, -8, 5, -3, 2]], dtype=np.int8)  # odd count: a padding nibble
    tensor = make_initializer("w", codes, int4=True)
    assert len(tensor.raw_data) == 5
    assert np.array_equal(onnx.numpy_helper.to_array(tensor), codes)
    unsigned = np.array([0, 15, 9], dtype=np.uint8)
    assert np.array_equal(onnx.numpy_helper.to_array(make_initializer("u", unsigned, int4=True)), unsigned)


# -- layers missing from the traced graph ------------------------------------------------------
class WithUnusedHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(8, 16)
        self.head = nn.Linear(16, 4)
        self.unused = nn.Linear(16, 16)  # defined, never called (like a head's unused pooler)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))


@pytest.fixture(scope="module")
def unused_session() -> studio.Session:
    torch.manual_seed(0)
    model = WithUnusedHead().eval()
    x = torch.randn(400, 8)
    return studio.Session(model, (x, model(x).argmax(1)))


@pytest.mark.parametrize("fmt", ["onnx", "onnx-fast"])
def test_layers_not_in_the_traced_graph_are_skipped_and_noted(unused_session, fmt):
    plan = Plan.preset("full-integer", unused_session)  # quantized activations used to raise IndexError
    data = export_bytes(unused_session, plan, "onnx")[0] if fmt == "onnx" else export_onnx_fast(unused_session, plan)
    notes = export_notes(data)
    assert len(notes) == 1 and "unused" in notes[0] and "not in the traced graph" in notes[0]
    assert run_onnx(data, unused_session) == pytest.approx(unused_session.evaluate(plan).metric, abs=0.003)


# -- dict inputs: keyword arguments (Hugging Face) and one dict argument -------------------------
def small_bert(cls_name: str = "BertModel") -> tuple[nn.Module, dict[str, torch.Tensor]]:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128, vocab_size=500,
        max_position_embeddings=64, num_labels=5,
    )
    model = getattr(transformers, cls_name)(config).eval()
    ids = torch.randint(0, config.vocab_size, (48, 16))
    mask = torch.ones_like(ids)
    mask[:, 12:] = 0
    return model, {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("fmt", ["onnx", "onnx-fast"])
def test_hugging_face_bert_with_dict_inputs_exports(tmp_path, fmt):
    model, inputs = small_bert("BertModel")
    session = studio.Session(model, (inputs, None))
    plan = Plan.preset("full-integer", session)
    path = session.export(plan, tmp_path / "bert.onnx", format="onnx") if fmt == "onnx" else tmp_path / "bert.onnx"
    if fmt == "onnx-fast":
        path.write_bytes(export_onnx_fast(session, plan))
    data = path.read_bytes()
    assert [i.name for i in onnx.load_from_string(data).graph.input] == ["input_ids", "attention_mask"]
    # BertModel scores last_hidden_state: its pooler is not needed, so it is left out and said so
    assert any("pooler.dense" in note for note in export_notes(data))
    check = session.verify(path)
    assert check.metric == pytest.approx(check.studio_metric, abs=0.003)


def test_sequence_classification_bert_exports_the_float_model_exactly():
    model, inputs = small_bert("BertForSequenceClassification")
    session = studio.Session(model, (inputs, None))
    data, _ = export_bytes(session, Plan(), "onnx")
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = sess.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    with torch.no_grad():
        want = model(**inputs).logits.numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


class DictArgument(nn.Module):
    """A sentence-transformers-style model: forward takes ONE dict."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.proj = nn.Linear(8, 3)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tokens = self.embed(features["input_ids"]) * features["attention_mask"].unsqueeze(-1)
        return {"sentence_embedding": self.proj(tokens.mean(dim=1))}


def test_a_model_taking_one_dict_argument_exports_through_the_adapter():
    torch.manual_seed(0)
    model = DictArgument().eval()
    inputs = {"input_ids": torch.randint(0, 50, (6, 5)), "attention_mask": torch.ones(6, 5, dtype=torch.long)}
    pick = lambda out: out["sentence_embedding"]  # noqa: E731
    proto = export_float_onnx(model, inputs, input_mode="dict", output_fn=pick)
    assert [i.name for i in proto.graph.input] == ["input_ids", "attention_mask"]
    assert {"embed.weight", "proj.weight", "proj.bias"} <= {i.name for i in proto.graph.initializer}
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, pick(model(inputs)).numpy(), atol=1e-6)


def test_the_adapter_calls_by_the_given_convention():
    seen = {}

    class Spy(nn.Module):
        def forward(self, *args, **kwargs):
            seen["args"], seen["kwargs"] = args, kwargs
            return torch.zeros(1)

    a, b = torch.ones(1), torch.zeros(1)
    CallAdapter(Spy(), ["a", "b"], "kwargs")(a, b)
    assert seen["args"] == () and set(seen["kwargs"]) == {"a", "b"}
    CallAdapter(Spy(), ["a", "b"], "dict")(a, b)
    assert len(seen["args"]) == 1 and set(seen["args"][0]) == {"a", "b"} and seen["kwargs"] == {}
    with pytest.raises(ValueError, match="input_mode"):
        CallAdapter(Spy(), ["a"], "named")


def test_verify_names_the_onnx_flavour_it_ran(mlp_session, tmp_path):
    plan = Plan.preset("full-integer", mlp_session)
    for fmt in ("onnx", "onnx-fast"):
        path = mlp_session.export(plan, tmp_path / fmt, format=fmt)
        check = mlp_session.verify(path)
        assert check.format == fmt and check.runtime == "onnxruntime"
        assert abs(check.metric_gap) <= 0.003

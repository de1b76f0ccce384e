import onnx
import onnxruntime as ort
import pytest
import torch

import studio
from studio.engine import Plan
from studio.engine.formats import export_bytes as write_format
from studio.engine.formats.onnx import onnx_layer_runtime


def export_bytes(session: studio.Session, plan: Plan, fmt: str) -> tuple[bytes, str]:
    data, chosen = write_format(session.compile(plan), fmt)
    return data, chosen.suffix


def run_onnx(data: bytes, session: studio.Session) -> float:
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    outputs = [torch.from_numpy(sess.run(None, {"input": x.numpy()})[0]) for x, _ in session.batches()]
    return session.score(outputs).metric


def mixed(session: studio.Session) -> Plan:
    names = session.layer_names
    return Plan.uniform(8).with_layer(names[0], bits=3).with_layer(names[1], bits=4, prune=0.5)


@pytest.mark.parametrize("name", ["digits-cnn", "digits-vit"])
@pytest.mark.parametrize("plan_name", ["full-integer", "mixed", "16x8"])
def test_onnxruntime_accuracy_matches_the_studio(samples, name, plan_name):
    sample = samples[name]
    session = studio.Session(sample.model, sample.eval_data)
    plan = mixed(session) if plan_name == "mixed" else Plan.preset(plan_name, session)
    data, suffix = export_bytes(session, plan, "onnx")
    assert suffix == ".onnx"
    assert abs(run_onnx(data, session) - session.evaluate(plan).metric) <= 0.003


def test_onnx_graph_holds_standard_qdq(cnn_session):
    data, _ = export_bytes(cnn_session, mixed(cnn_session).with_all(act_bits=8), "onnx")
    model = onnx.load_from_string(data)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("DequantizeLinear") >= 4 and "QuantizeLinear" in ops
    inits = {i.name: i for i in model.graph.initializer}
    dtypes = {i.data_type for name, i in inits.items() if name.startswith("features.0.weight_q")}
    assert dtypes == {onnx.TensorProto.INT4}  # 3-bit codes stored as int4
    assert all(not name.endswith(".weight") for name in inits if name.startswith("features."))


def test_float16_and_clustered_layers_stay_exact(mlp_session):
    plan = Plan.uniform(16).with_layer("fc2", bits=4, cluster=True, prune=0.3)
    data, _ = export_bytes(mlp_session, plan, "onnx")
    assert run_onnx(data, mlp_session) == pytest.approx(mlp_session.evaluate(plan).metric)


def test_runtime_notes_say_what_is_native():
    three = onnx_layer_runtime(studio.LayerSpec(bits=3))
    assert three.exact and not three.native and "int4" in three.weights
    assert onnx_layer_runtime(studio.LayerSpec(bits=8)).native
    assert not onnx_layer_runtime(studio.LayerSpec(bits=5, cluster=True)).native
    assert "int16" in onnx_layer_runtime(studio.LayerSpec(bits=8, act_bits=16)).note

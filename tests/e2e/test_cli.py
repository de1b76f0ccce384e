import json

import pytest

import studio
from studio.cli import main
from studio.engine import Plan


def test_compress_exports_and_verifies(tmp_path, capsys):
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(Plan.uniform(8, act_bits=8).with_layer("fc1", bits=4).to_json())
    assert main(["compress", "--model", "digits-mlp", "--plan", str(plan_file), "--export", str(tmp_path / "out"), "--format", "onnx"]) == 0
    out = capsys.readouterr()
    assert "evaluating: 100%" in out.err and "verifying" in out.err
    assert "fc1" in out.out and "int4" in out.out and "verified" in out.out
    assert (tmp_path / "out" / "model.onnx").exists()


def test_compress_json_with_a_preset(tmp_path, capsys):
    assert main(["compress", "--model", "digits-cnn", "--preset", "full-integer", "--export", str(tmp_path), "--format", "studio", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    v = out["verification"]
    assert v["file_bytes"] == v["estimated_bytes"] == out["report"]["size_bytes"]
    assert v["metric"] == pytest.approx(v["studio_metric"])


def test_the_exported_plan_reapplies_through_the_cli(tmp_path, capsys):
    assert main(["compress", "--model", "digits-vit", "--bits", "6", "--export", str(tmp_path), "--format", "plan"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", "digits-vit", "--plan", str(tmp_path / "plan.json"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert Plan.from_dict(report["plan"]) == Plan.uniform(6)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compress", "--model", "nope.pt", "--export", "x"], "no model file"),
        (["compress", "--model", "digits-mlp", "--plan", "missing.json", "--export", "x"], "no plan file"),
        (["compress", "--model", "digits-mlp", "--preset", "int3", "--export", "x"], "unknown preset"),
        (["evaluate", "--model", "digits-mlp", "--bits", "12"], "bits=12 is out of range"),
    ],
)
def test_bad_input_exits_non_zero_with_a_message(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_verify_every_format(samples, tmp_path):
    sample = samples["digits-resnet"]
    session = studio.Session(sample.model, sample.eval_data)
    plan = Plan.uniform(8).with_layer("layer1.conv1", bits=3).with_layer("fc", bits=4, prune=0.5)
    for fmt, suffix in (("studio", ".studio"), ("onnx", ".onnx"), ("torch", ".safetensors")):
        v = session.verify(session.export(plan, tmp_path / f"m{suffix}", format=fmt))
        assert abs(v.metric_gap) <= 0.003, fmt
        assert v.latency_ms > 0 and v.float_latency_ms > 0
        assert v.estimated_bytes == session.size(plan).size_bytes
    with pytest.raises(ValueError, match="cannot verify"):
        session.verify(session.export(plan, tmp_path / "p.json", format="plan"))


def test_finetune_recovers_a_4_bit_plan_and_verifies_the_file(tmp_path, capsys):
    argv = ["finetune", "--model", "digits-cnn", "--bits", "3", "--act-bits", "8", "--epochs", "2", "--export", str(tmp_path), "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "training: 100%" in captured.err and "epoch 2:" in captured.err
    out = json.loads(captured.out)
    assert len(out["recovery"]["history"]) == 2
    assert out["report"]["metric"] > out["before_metric"]  # QAT wins back what 3-bit weights lost
    v = out["verification"]
    assert v["file_bytes"] == v["estimated_bytes"] == out["report"]["size_bytes"]
    assert v["metric"] == pytest.approx(out["report"]["metric"])


def test_finetune_distils_a_narrower_student(tmp_path, capsys):
    assert main(["finetune", "--model", "digits-mlp", "--width", "0.25", "--bits", "8", "--epochs", "1", "--export", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["recovery"]["config"]["method"] == "distill"
    teacher_bytes = 4 * sum(p.numel() for p in studio.load_sample("digits-mlp").model.parameters())
    assert out["report"]["float_size_bytes"] < 0.3 * teacher_bytes


@pytest.mark.parametrize(
    "argv, message",
    [
        (["finetune", "--model", "digits-cnn", "--width", "1.5", "--export", "x"], "width multiplier"),
        (["finetune", "--model", "digits-cnn", "--epochs", "0", "--export", "x"], "epochs must be at least 1"),
        (["finetune", "--model", "nope.pt", "--export", "x"], "needs training data"),
    ],
)
def test_finetune_bad_input_exits_non_zero_with_a_message(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err

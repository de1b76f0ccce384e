"""The latency benchmark runs as a smoke test: it must print its rows (no timing asserts)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_latency_benchmark_prints_a_row_per_plan_and_export():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_latency.py"), "--quick", "--samples", "digits-mlp,digits-cnn", "--rounds", "1"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (model, plan, export)
        for model in ("digits-mlp", "digits-cnn")
        for plan in ("full-integer", "dynamic-range")
        for export in ("onnx", "onnx-fast")
    ]
    for row in rows:
        float_ms, file_ms, speedup = float(row[3]), float(row[4]), float(row[5].rstrip("x"))
        assert float_ms > 0 and file_ms > 0 and speedup > 0
        assert abs(float(row[8])) <= 0.3  # the file's accuracy is the studio's

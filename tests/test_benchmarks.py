"""Benchmarks run as smoke tests: they must run and print their figures (no timing asserts)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_engine_benchmark_prints_a_row_per_sample():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_engine.py"), "--repeats", "1"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [r[0] for r in rows] == ["digits-mlp", "digits-cnn", "digits-resnet", "digits-vit"]
    assert all(float(v) > 0 for r in rows for v in r[1:])

"""Benchmarks run as smoke tests: they must run and print their figures (no timing asserts)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_engine_benchmark_prints_a_row_per_sample():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_engine.py"), "--repeats", "1"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [r[0] for r in rows] == ["digits-mlp", "digits-cnn", "digits-resnet", "digits-vit"]
    assert all(float(v) > 0 for r in rows for v in r[1:])


def test_browser_benchmark_prints_its_figures():
    import pytest

    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Chromium is not installed")
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_browser.py"), "--trials", "1", "--samples", "digits-mlp"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    assert "first usable slider" in out
    row = [line for line in out.splitlines() if line.startswith("digits-mlp")][0].split()
    assert float(row[1]) > 0 and float(row[2]) > 0


def test_export_benchmark_prints_verified_rows():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_exports.py"), "--samples", "digits-cnn"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    rows = [line.split() for line in out.splitlines()[1:]]
    assert len(rows) == 4 * 3
    for row in rows:
        studio_acc, export_acc = float(row[3]), float(row[4])
        assert abs(studio_acc - export_acc) <= 0.3
        if row[2] == "studio":
            assert row[5] == row[6]  # the file is exactly the estimated size

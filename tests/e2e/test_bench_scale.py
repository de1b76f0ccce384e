"""The scale benchmark runs as a smoke test (tiny models): it must print its table (no timing asserts)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = ["resnet-18", "resnet-50", "bert-base", "mlp-128"]


def test_scale_benchmark_prints_a_table_row_per_model():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_scale.py"), "--quick", "--layers", "3"],
        capture_output=True, text=True, timeout=600, check=True,
    ).stdout
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| ")]
    main = [r for r in rows if len(r) == 11 and not r[0].startswith("model")]
    presets = [r for r in rows if len(r) == 6 and not r[0].startswith("model")]
    assert [r[0] for r in main] == MODELS
    assert [r[0] for r in presets] == MODELS
    for row in main:
        assert float(row[2].split()[0]) > 0  # the float forward
        for cell in (row[5], row[6], row[7], row[8], row[10]):  # every target is judged
            assert cell.endswith(("PASS", "MISS")), cell
    for row in presets:  # "first use PASS|MISS / chosen again", each a ratio to a forward
        for cell in row[1:]:
            first, again = cell.split(" / ")
            assert first.endswith(("PASS", "MISS")) and float(first.split("×")[0]) >= 0 and float(again.rstrip("×")) >= 0, cell
    assert "ran" in out  # the per-change lines say how many module calls re-ran

"""The guidance benchmark runs as a smoke test: it must print its three tables (no timing asserts)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_guidance_benchmark_quick_prints_every_table():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_guidance.py"), "--quick"],
        capture_output=True, text=True, timeout=600, check=True,
    ).stdout
    sections = out.split("\n\n")
    assert len(sections) == 3
    cost, agreement, found = ([line.split() for line in s.strip().splitlines()[2:]] for s in sections)
    assert [r[:2] for r in cost] == [["digits-mlp", "stacked"], ["digits-mlp", "alone"]]
    stacked, alone = ([int(r[2]), int(r[3]), *map(float, r[4:8])] for r in cost)
    for layers, probes, calls, forward, wall, limit in (stacked, alone):
        assert probes == 5 * layers and limit == 0.5 * probes
        assert 0 < calls < probes and forward > 0 and wall > 0  # incremental: fewer module calls than a full pass per probe
    assert stacked[2] < alone[2]  # a layer's settings share one pass
    assert agreement[0][0] == "digits-mlp" and -1 <= float(agreement[0][1]) <= 1 and -1 <= float(agreement[0][2]) <= 1
    row = found[0]
    assert row[0] == "digits-mlp" and row[1] == "max_drop=0.01"
    assert float(row[2].rstrip("x")) > 1 and float(row[3]) <= 1.0
    assert row[6] == row[7]  # the exported file is exactly the bytes the search reported

"""The codec benchmark runs as a smoke test: small sizes, every figure printed and positive."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = [
    "pack int8 round trip",
    "pack int4 round trip",
    "huffman int8 round trip",
    "huffman int4 round trip",
    "studio file",
    "int8 compress_view",
    "mse choose_params int8",
    "kmeans_1d k=32",
    "mse compress_view int8",
    "k-means compress_view 5-bit",
    "deep-compression compress_view",
    "range_kl per tensor",
    "range_mse per tensor",
    "compress_view 96x384 int8",
    "compress_view 96x384 int4 50% pruned",
    "compress_view 96x384 5-bit k-means",
    "cached result 96x384 int8 nbytes",
]


def test_codec_benchmark_prints_every_figure():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_codecs.py"), "--quick"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    lines = out.splitlines()[1:]
    for name in EXPECTED:
        assert any(line.startswith(name) or f" {name}" in line for line in lines), name
    for line in lines:
        value = float(line.split()[-2])
        assert value > 0, line

"""Codec and per-weight kernel speed on layer sizes of real models (BERT-base, ResNet-50).

Prints, as rows of ``name  value  unit``:
- a 25M-weight round trip through bit packing (int8 and int4 codes) and Huffman coding:
  ms, and the peak extra memory that NumPy allocated (tracemalloc; the output and the
  decoded copy included);
- the studio file of a 25M-weight Linear (6144x4096) written and read back (int8 +
  Huffman, and int4 50% pruned): ms, and the peak extra resident memory (Linux only);
- ns per weight of int8 (``compress_view``, min-max), MSE clipping (``choose_params``)
  and k-means (``kmeans_1d``, 32 clusters) on a 4096x4096 and a 512x(512*3*3) weight,
  and the ratio of each to int8; also ``compress_view`` with MSE, with k-means, and as the
  deep-compression preset's dense layers (30% pruned, 5-bit k-means, Huffman);
- ms per activation tensor for the KL and MSE range methods (2048-bin histograms);
- ms of ``compress_view`` for a 768x3072 layer at int8, int4 with 50% pruning and
  5-bit k-means, and the bytes per weight that the cached result holds.

Timings are medians of ``--repeats`` runs, taken on whatever else the machine is doing;
on a busy machine ``--threads 1 --clock cpu`` (this process's CPU time) is steadier.

    python benchmarks/bench_codecs.py [--quick] [--repeats N] [--threads N] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import studio  # noqa: E402
from studio.engine import LayerSpec, Plan  # noqa: E402
from studio.engine.activations import ActStats, range_kl, range_mse  # noqa: E402
from studio.engine.bitstream import huffman_decode, huffman_encode, pack, unpack  # noqa: E402
from studio.engine.cluster import kmeans_1d  # noqa: E402
from studio.engine.compress import compress_view  # noqa: E402
from studio.engine.formats import studio as studio_format  # noqa: E402
from studio.engine.quantize import choose_params  # noqa: E402

CLOCK = time.perf_counter  # --clock cpu: time.process_time (steadier on a busy machine, with --threads 1)


def median_s(fn, repeats: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(repeats):
        start = CLOCK()
        fn()
        times.append(CLOCK() - start)
    return statistics.median(times)


def row(name: str, value: float, unit: str) -> None:
    print(f"{name:<48} {value:>12.4g}  {unit}")


def round_trips(n: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    gauss = rng.standard_normal(n)
    int8 = (np.clip(np.round(gauss * 20), -127, 127) + 127).astype(np.uint8)  # codes of a Gaussian layer
    int4 = (np.clip(np.round(gauss * 2), -7, 7) + 7).astype(np.uint8)
    del gauss
    cases = [
        ("pack int8", lambda s: pack(s, 8), lambda d: unpack(d, 8, n), int8),
        ("pack int4", lambda s: pack(s, 4), lambda d: unpack(d, 4, n), int4),
        ("huffman int8", lambda s: huffman_encode(s, 255), lambda d: huffman_decode(d, 255, n), int8),
        ("huffman int4", lambda s: huffman_encode(s, 15), lambda d: huffman_decode(d, 15, n), int4),
    ]
    label = f"{n / 1e6:g}M"
    for name, encode, decode, symbols in cases:
        times, peaks = [], []
        for _ in range(repeats):
            tracemalloc.start()
            start = CLOCK()
            out = decode(encode(symbols))
            times.append(CLOCK() - start)
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
            if not np.array_equal(out, symbols):
                raise SystemExit(f"{name}: the round trip changed the symbols")
            del out
        row(f"{name} round trip {label} ms", statistics.median(times) * 1000, "ms")
        row(f"{name} round trip {label} peak extra", max(peaks) / 2**20, "MB")


def _rss_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def studio_file(out_features: int, in_features: int, repeats: int) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(in_features, out_features)).eval()
    session = studio.Session(model, (torch.randn(4, in_features), None))
    label = f"{out_features}x{in_features}"
    for name, plan in (("int8+huffman", Plan.uniform(8)), ("int4 50% pruned", Plan.uniform(4, prune=0.5))):
        compiled = session.compile(plan)  # compressing is not the file's work
        writes, reads, peaks = [], [], []
        for _ in range(repeats):
            before = _rss_mb("VmRSS")
            tracked = _reset_peak_rss()
            start = CLOCK()
            data = studio_format.write(compiled)
            middle = CLOCK()
            decoded = studio_format.read(data)
            writes.append(middle - start)
            reads.append(CLOCK() - middle)
            peak = _rss_mb("VmHWM")
            if tracked and before is not None and peak is not None:
                peaks.append(peak - before)
            if len(data) != session.size(plan).size_bytes:
                raise SystemExit("the studio file is not the reported size")
            del data, decoded
        row(f"studio file {label} {name} write", statistics.median(writes) * 1000, "ms")
        row(f"studio file {label} {name} read", statistics.median(reads) * 1000, "ms")
        if peaks:
            row(f"studio file {label} {name} peak extra RSS", max(peaks), "MB")


def per_weight(shapes: list[tuple[int, int]], repeats: int) -> None:
    for rows, cols in shapes:
        torch.manual_seed(0)
        w = torch.randn(rows, cols) * 0.02
        n = w.numel()
        fns = {
            "int8 compress_view": lambda w=w: compress_view(w, LayerSpec(bits=8), True, 0),
            "mse choose_params int8": lambda w=w: choose_params(w, 8, True, "mse"),
            "mse choose_params int4": lambda w=w: choose_params(w, 4, True, "mse"),
            "kmeans_1d k=32": lambda w=w: kmeans_1d(w.reshape(-1), 32),
            "mse compress_view int8": lambda w=w: compress_view(w, LayerSpec(bits=8, clip="mse"), True, 0),
            "k-means compress_view 5-bit": lambda w=w: compress_view(w, LayerSpec(bits=5, cluster=True), True, 0),
            "deep-compression compress_view": lambda w=w: compress_view(w, LayerSpec(bits=5, prune=0.3, cluster=True), True, 0),
        }
        times = {k: [] for k in fns}
        for _ in range(repeats):  # interleaved, so that the machine's load falls on all alike
            for k, fn in fns.items():
                start = CLOCK()
                fn()
                times[k].append(CLOCK() - start)
        ns = {k: statistics.median(v) / n * 1e9 for k, v in times.items()}
        for k, v in ns.items():
            row(f"{rows}x{cols} {k}", v, "ns/weight")
            if k != "int8 compress_view":
                row(f"{rows}x{cols} {k} / int8", v / ns["int8 compress_view"], "x")


def calibration(repeats: int) -> None:
    torch.manual_seed(0)
    x = torch.cat([torch.randn(200_000), torch.tensor([40.0])])
    stats = ActStats()
    stats.observe_range(x)
    stats.observe_hist(x)
    for bits in (8, 16):
        row(f"range_kl per tensor (2048 bins, {bits}-bit)", median_s(lambda bits=bits: range_kl(stats, bits), repeats * 5) * 1000, "ms")
        row(f"range_mse per tensor (2048 bins, {bits}-bit)", median_s(lambda bits=bits: range_mse(stats, bits), repeats * 5) * 1000, "ms")


def layer(rows: int, cols: int, repeats: int) -> None:
    torch.manual_seed(0)
    w = torch.randn(rows, cols) * 0.02
    for name, spec in (
        ("int8", LayerSpec(bits=8)),
        ("int4 50% pruned", LayerSpec(bits=4, prune=0.5)),
        ("5-bit k-means", LayerSpec(bits=5, cluster=True)),
    ):
        row(f"compress_view {rows}x{cols} {name}", median_s(lambda spec=spec: compress_view(w, spec, True, 0), repeats) * 1000, "ms")
        result = compress_view(w, spec, True, 0)
        row(f"cached result {rows}x{cols} {name} nbytes", result.nbytes / w.numel(), "B/weight")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="cpu: this process's CPU time")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else args.repeats
    print(f"{'figure':<48} {'value':>12}  unit   (torch threads: {torch.get_num_threads()}, {args.clock} clock)")
    round_trips(200_000 if args.quick else 25_000_000, repeats)
    studio_file(*((96, 512) if args.quick else (6144, 4096)), repeats=1 if args.quick else min(3, repeats))
    per_weight([(256, 256), (16, 288)] if args.quick else [(4096, 4096), (512, 4608)], repeats)
    calibration(repeats)
    layer(*((96, 384) if args.quick else (768, 3072)), repeats)


if __name__ == "__main__":
    main()

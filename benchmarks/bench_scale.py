"""The engine at realistic sizes (issue 8): ResNet-18, ResNet-50, BERT-base and a 128-layer MLP.

Per model (see ``scale_models.py``; random weights, metric = top-1 agreement with the float
model), each figure as a ratio to one float forward pass over the eval set measured in the
same process (median of 5: 3 before and 2 after everything else):
- ``Session()``: building the session (BatchNorm folding, the float pass, profiling);
- evaluate after a first-layer / last-layer change, and the mean over layers: the session
  has evaluated the base plan (int8 everywhere) just before; the changed layer goes to 4 bits
  (compressed anew: not cached). The mean is over evenly spaced layers (``--layers``;
  first and last included); ``report.timing`` says how many module calls ran;
- ``size()`` after a one-layer change (3 bits, not cached), in ms: median over those layers;
- each preset's evaluate (``Plan.presets()``, the GUI's list), one after another, cold; then each again;
- export (``studio`` format) of the base plan and ``session.verify`` of the file;
- peak RSS (``VmHWM``) less the RSS after imports, against 2.5 x the float model plus the
  activation cache budget; beside it, the peak of the float model, its data and a plain forward.
Times are process CPU time by default (``--clock wall`` for wall time): on a shared machine
other processes stretch wall time by factors that differ from one measurement to the next.
Each model runs in its own child process, one after another, so that peaks do not mix.

    python benchmarks/bench_scale.py [--quick] [--models resnet-18,bert-base] [--device cuda] [--layers 8] [--clock wall]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

MODELS = ["resnet-18", "resnet-50", "bert-base", "mlp-128"]
TARGETS = {"last": 0.15, "mean": 0.6, "size_ms": 50.0, "preset": 1.5, "rss": 1.0}


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}
clock = time.process_time


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = clock()
    out = fn()
    return clock() - start, out


def spaced(n: int, k: int) -> list[int]:
    """``k`` evenly spaced indices of ``range(n)``, first and last included."""
    if k >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def child(name: str, quick: bool, device: str, n_layers: int) -> dict[str, Any]:
    import scale_models

    import studio
    from studio import Plan
    from studio.engine.data import call_model, to_batches, to_device
    from studio.engine.replay import DEFAULT_BUDGET as ACTIVATION_BUDGET

    if name == "bert-base":
        import transformers  # noqa: F401  (its import is part of the baseline, not of the model)
    base_rss = rss_kib("VmRSS") * 1024
    spec = scale_models.build(name, quick)
    log = lambda text: print(f"[{name}] {text}", flush=True)  # noqa: E731
    model = spec.model.to(device)
    batches = to_batches(spec.eval_data, spec.batch_size)
    mode = "kwargs" if isinstance(batches[0][0], dict) else "positional"

    @torch.no_grad()
    def forward() -> None:
        for x, _ in batches:
            call_model(model, to_device(x, torch.device(device)), mode)
        if device == "cuda":
            torch.cuda.synchronize()

    forward()  # warm-up
    forward_rss = rss_kib("VmHWM") * 1024  # the model, its data and one plain forward's working memory
    forwards = [timed(forward)[0] for _ in range(3)]
    session_s, session = timed(lambda: studio.Session(spec.model, spec.eval_data, batch_size=spec.batch_size, device=device))
    names = session.layer_names
    log(f"{len(names)} layers, {sum(i.params for i in session.layers):,} parameters; {spec.description}; Session() {session_s:.1f} s")
    base = Plan.uniform(8)
    first_eval_s, _ = timed(lambda: session.evaluate(base))

    def change(index: int) -> dict[str, Any]:
        session.evaluate(base)  # back to the base plan (untimed)
        seconds, report = timed(lambda: session.evaluate(base.with_layer(names[index], bits=4)))
        t = report.timing
        row = {"layer": names[index], "index": index, "s": seconds, "calls": t.calls, "computed": t.computed, "mode": t.mode, "reason": t.reason}
        log(f"change {names[index]:40} {seconds * 1000:9.1f} ms  {t.mode:11} ran {t.computed}/{t.calls} calls  compress {t.compress_s * 1000:.0f} ms  {t.reason}")
        return row

    sampled = spaced(len(names), n_layers)
    changes = [change(i) for i in sampled]
    sizes = []
    for i in sampled:
        seconds, _ = timed(lambda i=i: session.size(base.with_layer(names[i], bits=3)))
        sizes.append(seconds * 1000)
    log(f"size() after a one-layer change: median {statistics.median(sizes):.1f} ms, max {max(sizes):.1f} ms")
    # each preset cold, then each chosen again (calibration done, weights cached where the cache kept them)
    presets: dict[str, float] = {}
    warm: dict[str, float] = {}
    for times, when in ((presets, "first"), (warm, "again")):
        for preset in Plan.presets():
            times[preset], report = timed(lambda preset=preset: session.evaluate(Plan.preset(preset, session)))
            t = report.timing
            log(f"preset {preset:18} {times[preset]:7.2f} s {when:5} (compress {t.compress_s:.2f} s, forward {t.forward_s:.2f} s, {t.mode}, ran {t.computed}/{t.calls})")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.studio"
        export_s, _ = timed(lambda: session.export(base, path, format="studio"))
        verify_s, check = timed(lambda: session.verify(path))
    log(f"export {export_s:.2f} s, verify {verify_s:.2f} s: file {check.file_bytes:,} B (estimated {check.estimated_bytes:,}), metric {check.metric:.4f} (studio {check.studio_metric:.4f})")
    forwards += [timed(forward)[0] for _ in range(2)]
    float_s = statistics.median(forwards)
    log(f"float forward {float_s * 1000:.0f} ms (median of {[round(f * 1000) for f in forwards]})")
    peak = rss_kib("VmHWM") * 1024
    return {
        "model": name, "layers": len(names), "params": sum(i.params for i in session.layers), "float_bytes": session.float_size_bytes,
        "float_s": float_s, "session_s": session_s, "first_eval_s": first_eval_s, "changes": changes, "size_ms": sizes,
        "presets": presets, "presets_warm": warm, "export_s": export_s, "verify_s": verify_s, "base_rss": base_rss, "forward_rss": forward_rss, "peak_rss": peak,
        "activation_budget": ACTIVATION_BUDGET, "kept": session._runner.describe(),
    }


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| model | layers / params | float forward | `Session()` | first-layer change | last-layer change | mean over layers | `size()` after one change | slowest preset | export + verify | peak RSS over baseline (budget) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        f = r["float_s"]
        first, last = r["changes"][0]["s"] / f, r["changes"][-1]["s"] / f
        mean = statistics.mean(c["s"] for c in r["changes"]) / f
        size_ms = statistics.median(r["size_ms"])
        slowest = max(r["presets"], key=r["presets"].get)
        preset = r["presets"][slowest] / f
        rss = r["peak_rss"] - r["base_rss"]
        plain = r["forward_rss"] - r["base_rss"]
        budget = 2.5 * r["float_bytes"] + r["activation_budget"]
        gb = 1 << 30
        lines.append(
            f"| {r['model']} | {r['layers']} / {r['params'] / 1e6:.1f}M | {f * 1000:.1f} ms | {r['session_s']:.1f} s ({r['session_s'] / f:.1f}×) "
            f"| {first:.2f}× | {last:.2f}× {mark(last <= TARGETS['last'])} | {mean:.2f}× ({len(r['changes'])} layers) {mark(mean <= TARGETS['mean'])} "
            f"| {size_ms:.1f} ms {mark(size_ms <= TARGETS['size_ms'])} | {preset:.2f}× {slowest} {mark(preset <= TARGETS['preset'])} "
            f"| {r['export_s'] + r['verify_s']:.1f} s ({(r['export_s'] + r['verify_s']) / f:.1f}×) "
            f"| {rss / gb:.2f} GiB ({budget / gb:.2f}; plain forward {plain / gb:.2f}) {mark(rss <= budget)} |"
        )
    names = list(results[0]["presets"]) if results else []
    lines += ["", "| model (preset: first use / chosen again) | " + " | ".join(f"`{n}`" for n in names) + " |", "|---|" + "---|" * len(names)]
    for r in results:
        f = r["float_s"]
        cells = (f"{r['presets'][n] / f:.2f}× {mark(r['presets'][n] / f <= TARGETS['preset'])} / {r['presets_warm'][n] / f:.2f}×" for n in names)
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="tiny versions of the four models (seconds)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--layers", type=int, default=8, help="evenly spaced layers for the mean over layers (0: all)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu", help="process CPU time (default: steadier on a shared machine) or wall time")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one model, print its JSON
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    n_layers = args.layers or 1 << 30
    global clock
    clock = CLOCKS[args.clock]
    if args.child:
        result = child(args.child, args.quick, args.device, n_layers)
        print("RESULT " + json.dumps(result), flush=True)
        return
    results = []
    for name in args.models.split(","):
        command = [sys.executable, __file__, "--child", name, "--device", args.device, "--layers", str(args.layers), "--clock", args.clock]
        command += ["--quick"] if args.quick else []
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("RESULT "):
                results.append(json.loads(line[len("RESULT "):]))
            else:
                print(line, end="", flush=True)
        if proc.wait() != 0:
            raise SystemExit(f"{name}: the child process failed with status {proc.returncode}")
    print()
    what = "process CPU time" if args.clock == "cpu" else "wall time"
    print(f"Ratios to one float forward over the eval set, measured in the same process ({args.device}, {what}, torch threads {torch.get_num_threads()}):")
    print()
    print("\n".join(table(results)))


if __name__ == "__main__":
    main()

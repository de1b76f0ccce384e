"""Latency of exported plans in ONNX Runtime (CPU) against the float model, and their accuracy.

For each model x plan x export (``onnx``: standard QDQ; ``onnx-fast``: the layout for ORT's
CPU kernels), prints one eval pass's latency of the float model and of the compressed
file in the same runtime (the float model is the plain float ONNX export), the speedup,
and the file's measured metric against the studio's figure for the plan (delta in
percentage points). Sessions use the ORT options each file records in its metadata.
Timings interleave float and compressed passes (rounds x one pass each) and report the
median; with ``--cpu-time`` (single thread) they measure process CPU time instead of wall
time, which a busy shared machine disturbs less.

    python benchmarks/bench_latency.py [--quick] [--large] [--threads N] [--rounds R] [--cpu-time]

``--large`` adds ResNet-18 (``scale_models.resnet18``: torchvision's definition, random weights,
BatchNorm statistics from random images; the first 32 of its random 224x224 images) and BERT-base
(``scale_models.bert_base``: ``BertForSequenceClassification(BertConfig())``, random weights,
32 x 64 random token ids); their metric is top-1 agreement with the float model.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import scale_models  # noqa: E402
import torch  # noqa: E402

import studio  # noqa: E402
from studio import Plan  # noqa: E402
from studio.engine.formats.onnx import export_float, export_onnx, export_onnx_fast  # noqa: E402
from studio.engine.formats.onnx_meta import session_config  # noqa: E402

EXPORTS: dict[str, Callable[..., bytes]] = {"onnx": export_onnx, "onnx-fast": export_onnx_fast}


def resnet18_session(images: int = 32, batch: int = 8) -> studio.Session:
    spec = scale_models.resnet18()
    return studio.Session(spec.model, (spec.eval_data[0][:images], None), batch_size=batch)


def bert_base_session() -> studio.Session:
    spec = scale_models.bert_base()
    return studio.Session(spec.model, spec.eval_data, batch_size=spec.batch_size)


# -- plans and timing --------------------------------------------------------------------------
def plans(session: studio.Session, quick: bool) -> dict[str, Plan]:
    names = session.layer_names
    out = {"full-integer": Plan.preset("full-integer", session), "dynamic-range": Plan.preset("dynamic-range", session)}
    if quick:
        return out
    out["mixed-3/4/8+prune"] = Plan.uniform(8).with_layer(names[0], bits=3).with_layer(names[1], bits=4, prune=0.5)
    out["structured-50%"] = Plan.uniform(8).with_all(prune=0.5, prune_method="structured")
    out["structured-50%+int8act"] = Plan.preset("full-integer", session).with_all(prune=0.5, prune_method="structured")
    return out


class Runner:
    """One ORT session over fixed feeds, with the session options its file records."""

    def __init__(self, path: Path, feeds: list[dict[str, Any]], threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        for key, value in session_config(path.read_bytes()).items():
            options.add_session_config_entry(key, value)
        self.sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = {i.name for i in self.sess.get_inputs()}
        self.feeds = [{k: v for k, v in f.items() if k in names} for f in feeds]

    def outputs(self) -> list[Any]:
        return [self.sess.run(None, f)[0] for f in self.feeds]

    def one_pass(self) -> None:
        for f in self.feeds:
            self.sess.run(None, f)


def interleaved(runners: list[Runner], rounds: int, clock: Callable[[], float]) -> list[float]:
    times: list[list[float]] = [[] for _ in runners]
    for runner in runners:  # warm-up: at least 3 passes and 0.2 s
        start, passes = time.perf_counter(), 0
        while passes < 3 or time.perf_counter() - start < 0.2:
            runner.one_pass()
            passes += 1
    for _ in range(rounds):
        for i, runner in enumerate(runners):
            start = clock()
            runner.one_pass()
            times[i].append((clock() - start) * 1000)
    return [statistics.median(t) for t in times]


def child(args: Any) -> None:
    """Time float vs compressed on saved feeds; save the compressed outputs; print the medians."""
    import json

    import numpy as np

    tmp = Path(args.child)
    with np.load(tmp / "feeds.npz") as saved:
        count = 1 + max(int(k.split(":")[0]) for k in saved.files)
        feeds = [{k.split(":", 1)[1]: saved[k] for k in saved.files if int(k.split(":")[0]) == i} for i in range(count)]
    runners = [Runner(tmp / "float.onnx", feeds, args.threads), Runner(tmp / "compressed.onnx", feeds, args.threads)]
    np.savez(tmp / "outputs.npz", *runners[1].outputs())
    clock = time.process_time if args.cpu_time else time.perf_counter
    print(json.dumps(interleaved(runners, args.rounds, clock)))


def bench_model(name: str, session: studio.Session, args: Any, tmp: Path) -> None:
    """Files go through disk, and ONNX Runtime runs in a child process, so that no process
    holds the studio session (with its copies of BERT-base's weights) and two ORT sessions."""
    import json
    import subprocess

    import numpy as np
    import onnx

    float_path, traced, path = tmp / "float.onnx", tmp / "traced.onnx", tmp / "compressed.onnx"
    feeds = {}
    for i, (x, _) in enumerate(session.batches()):
        named = x if isinstance(x, dict) else {"input": x}
        feeds.update({f"{i}:{k}": v.numpy() for k, v in named.items()})
    np.savez(tmp / "feeds.npz", **feeds)
    # trace once: each export rewrites a fresh copy (tracing BERT-base again per export
    # would add about 1.5 GB to the peak memory while the session holds its weights)
    onnx.save(export_float(session.compile(Plan())), traced)
    float_path.write_bytes(export_onnx(session.compile(Plan()), onnx.load(traced)))
    command = [sys.executable, __file__, "--child", str(tmp), "--threads", str(args.threads), "--rounds", str(args.rounds)]
    command += ["--cpu-time"] if args.cpu_time else []
    for plan_name, plan in plans(session, args.quick).items():
        studio_metric = session.evaluate(plan).metric
        for fmt in args.exports.split(","):
            path.write_bytes(EXPORTS[fmt](session.compile(plan), onnx.load(traced)))
            gc.collect()
            float_ms, ms = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
            with np.load(tmp / "outputs.npz") as saved:
                outputs = [torch.from_numpy(saved[f"arr_{i}"]) for i in range(len(saved.files))]
            metric = session.score(outputs).metric
            print(
                f"{name:14} {plan_name:23} {fmt:9} {float_ms:9.1f} {ms:9.1f} {float_ms / ms:7.2f}x "
                f"{100 * studio_metric:8.2f} {100 * metric:8.2f} {100 * (metric - studio_metric):+6.2f}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", default=",".join(studio.list_samples()))
    parser.add_argument("--exports", default="onnx,onnx-fast")
    parser.add_argument("--quick", action="store_true", help="full-integer and dynamic-range only, 3 rounds")
    parser.add_argument("--large", action="store_true", help="also ResNet-18 and BERT-base")
    parser.add_argument("--only-large", action="store_true", help="ResNet-18 and BERT-base only")
    parser.add_argument("--large-models", default="resnet-18,bert-base")
    parser.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: ORT's default)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--cpu-time", action="store_true", help="process CPU time (use with --threads 1)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: time the files in this folder
    args = parser.parse_args()
    if args.child:
        args.rounds = args.rounds or 15
        child(args)
        return
    if args.rounds is None:
        args.rounds = 3 if args.quick else 15
    mode = f"{'cpu time, ' if args.cpu_time else ''}threads={args.threads or 'ORT default'}, median of {args.rounds} rounds"
    print(f"{'model':14} {'plan':23} {'export':9} {'float ms':>9} {'file ms':>9} {'speedup':>8} {'studio %':>8} {'file %':>8} {'Δ pp':>6}   ({mode})")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.only_large:
            for name in args.samples.split(","):
                sample = studio.load_sample(name)
                bench_model(name, studio.Session(sample.model, sample.eval_data), args, Path(tmp))
        if args.large or args.only_large:
            for name in args.large_models.split(","):
                session = {"resnet-18": resnet18_session, "bert-base": bert_base_session}[name]()
                bench_model(name, session, args, Path(tmp))
                del session
                gc.collect()


if __name__ == "__main__":
    main()

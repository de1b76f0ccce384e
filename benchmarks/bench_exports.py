"""Exports verified in their own runtimes: sample x plan x format.

Prints the studio's accuracy and the exported file's measured accuracy, the studio's
size estimate and the file's size, and one eval pass's latency for the float model
and the exported one in the same runtime (ONNX Runtime for .onnx, PyTorch otherwise).

    python benchmarks/bench_exports.py [--samples digits-mlp,...] [--formats studio,onnx,torch]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import studio  # noqa: E402
from studio import Plan  # noqa: E402

SUFFIX = {"studio": ".studio", "onnx": ".onnx", "torch": ".safetensors"}


def plans(session: studio.Session) -> dict[str, Plan]:
    names = session.layer_names
    mixed = Plan.uniform(8).with_layer(names[0], bits=3).with_layer(names[1], bits=4, prune=0.5)
    return {
        "full-integer": Plan.preset("full-integer", session),
        "dynamic-range": Plan.preset("dynamic-range", session),
        "float16": Plan.preset("float16", session),
        "mixed-3/4/8+prune": mixed,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", default=",".join(studio.list_samples()))
    parser.add_argument("--formats", default="studio,onnx,torch")
    args = parser.parse_args()
    print(f"{'sample':<14} {'plan':<18} {'format':<7} {'studio %':>9} {'export %':>9} {'est. B':>8} {'file B':>8} {'float ms':>9} {'quant ms':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.samples.split(","):
            sample = studio.load_sample(name)
            session = studio.Session(sample.model, sample.eval_data)
            for plan_name, plan in plans(session).items():
                for fmt in args.formats.split(","):
                    path = session.export(plan, Path(tmp) / f"{name}-{plan_name}{SUFFIX[fmt]}", format=fmt)
                    v = session.verify(path)
                    print(
                        f"{name:<14} {plan_name:<18} {fmt:<7} {100 * v.studio_metric:>9.2f} {100 * v.metric:>9.2f} "
                        f"{v.estimated_bytes:>8} {v.file_bytes:>8} {v.float_latency_ms:>9.1f} {v.latency_ms:>9.1f}"
                    )


if __name__ == "__main__":
    main()

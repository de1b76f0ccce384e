"""Engine speed: one evaluate after a one-layer change, against a float pass and a naive loop.

For each sample model prints:
- evaluate_ms:  one Session.evaluate after changing one layer's spec (that layer is
                re-compressed, the rest come from the cache);
- float_ms:     one plain float forward pass over the eval set;
- naive_ms:     deep-copy the model, compress every layer, load the weights, run the eval set;
- the ratios evaluate/float and evaluate/naive.

    python benchmarks/bench_engine.py [--repeats N]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import studio  # noqa: E402
from studio.engine.compress import compress_view  # noqa: E402
from studio.engine.quantize import channel_view, from_channel_view  # noqa: E402


def _median_ms(fn, repeats: int) -> float:
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench(name: str, repeats: int) -> dict[str, float]:
    sample = studio.load_sample(name)
    session = studio.Session(sample.model, sample.eval_data)
    base = studio.Plan.uniform(8)
    session.evaluate(base)
    layer = session.layer_names[len(session.layer_names) // 2]
    settings = [(b, p) for b in (2, 3, 4, 5, 6, 7) for p in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)]
    plans = [base.with_layer(layer, bits=b, prune=p) for b, p in settings]
    evaluate_ms = _median_ms(lambda i: session.evaluate(plans[i]), repeats)

    x = sample.eval_data[0]
    model = sample.model

    def float_pass(_: int) -> None:
        with torch.no_grad():
            for i in range(0, len(x), 256):
                model(x[i : i + 256])

    float_ms = _median_ms(float_pass, repeats)

    def naive(i: int) -> None:  # the same plans, with no working copy and no cache
        work = copy.deepcopy(model).eval()
        for info in session.layers:
            module = work.get_submodule(info.name)
            view = channel_view(module.weight.detach(), info.channel_axis, True)
            result = compress_view(view, plans[i].spec_for(info.name), True, 0)
            with torch.no_grad():
                module.weight.copy_(from_channel_view(result.dequant_view, module.weight, info.channel_axis, True))
        with torch.no_grad():
            for i in range(0, len(x), 256):
                work(x[i : i + 256])

    naive_ms = _median_ms(naive, repeats)
    return {"evaluate_ms": evaluate_ms, "float_ms": float_ms, "naive_ms": naive_ms}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"{'sample':<15} {'evaluate ms':>12} {'float ms':>9} {'naive ms':>9} {'eval/float':>11} {'eval/naive':>11}")
    for name in studio.list_samples():
        r = bench(name, args.repeats)
        print(
            f"{name:<15} {r['evaluate_ms']:>12.1f} {r['float_ms']:>9.1f} {r['naive_ms']:>9.1f} "
            f"{r['evaluate_ms'] / r['float_ms']:>11.2f} {r['evaluate_ms'] / r['naive_ms']:>11.2f}"
        )


if __name__ == "__main__":
    main()

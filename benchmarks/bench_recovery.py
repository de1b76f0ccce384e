"""Recovery: how much fine-tuning wins back, measured by the engine on the 500 eval images.

Three recipes on the bundled samples (train split: 1297 images):
- digits-mlp: Deep Compression's pipeline. Prune (Zhu & Gupta's gradual schedule, float
  weights) and retrain; then 2-bit k-means weight sharing (three shared values and a pinned
  zero per layer) with Huffman coding, and retrain the shared values.
- digits-cnn: quantization-aware training for 4-bit weights and uint8 activations.
- digits-cnn student: a new model at width 0.5, distilled from digits-cnn (no labels used).

"before" is the plan on the starting model without retraining (for the student: untrained);
"after" is ``Session(recovered.model, eval_data).evaluate(plan)``, a fresh session that
re-compresses the trained float weights, and "file" the same plan written as a .studio
file and run by ``session.verify``. The ratio is against the original float model (for the
student: the teacher's). "gap_pp" is the largest per-epoch difference between the training
forward's metric and evaluate's (points), once the pruning schedule has reached the plan. "time" is the fine-tuning's wall time (training
and the per-epoch evaluations).

    python benchmarks/bench_recovery.py [--quick] [--seed 0] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import studio  # noqa: E402
from studio import Plan  # noqa: E402
from studio.engine.finetune import finetune  # noqa: E402
from studio.engine.recovered import Recovered  # noqa: E402

MLP_PRUNE = {"fc1": 0.96, "fc2": 0.97, "fc3": 0.70}
FULL = {"mlp_prune": 80, "mlp_cluster": 30, "cnn_qat": 10, "student": 50}
QUICK = {"mlp_prune": 3, "mlp_cluster": 1, "cnn_qat": 1, "student": 2}


def judged(model: torch.nn.Module, eval_data: tuple, plan: Plan, path: Path) -> tuple[float, float, int]:
    """(metric, the exported .studio file's metric, size) by a fresh session of ``model``."""
    session = studio.Session(model, eval_data)
    report = session.evaluate(plan)
    path = session.export(plan, path, format="studio")
    check = session.verify(path)
    assert check.file_bytes == report.size_bytes
    return report.metric, check.metric, report.size_bytes


def mlp_row(epochs: dict, seed: int, tmp: Path) -> dict:
    sample = studio.load_sample("digits-mlp")
    session = studio.Session(sample.model, sample.eval_data)
    pruned = Plan()
    for name, ratio in MLP_PRUNE.items():
        pruned = pruned.with_layer(name, prune=ratio)
    plan = pruned.with_all(bits=2, cluster=True)
    before = session.evaluate(plan).metric
    start = time.perf_counter()
    stage1 = finetune(session, pruned, sample.train_data, epochs=epochs["mlp_prune"], lr=2e-3, prune_schedule="gradual", seed=seed)
    stage2 = finetune(studio.Session(stage1.model, sample.eval_data), plan, sample.train_data,
                      epochs=epochs["mlp_cluster"], lr=1e-3, seed=seed)
    seconds = time.perf_counter() - start
    after, file_metric, size = judged(stage2.model, sample.eval_data, plan, tmp / "mlp.studio")
    label = "prune " + "/".join(f"{100 * r:.0f}" for r in MLP_PRUNE.values()) + "% + 2-bit k-means + Huffman"
    return row(sample.name, label, session.float_size_bytes / size, session.baseline_metric, before, after, file_metric,
               seconds, gap(stage1, stage2))


def cnn_row(epochs: dict, seed: int, tmp: Path) -> dict:
    sample = studio.load_sample("digits-cnn")
    session = studio.Session(sample.model, sample.eval_data)
    plan = Plan.uniform(4, act_bits=8)
    before = session.evaluate(plan).metric
    start = time.perf_counter()
    rec = finetune(session, plan, sample.train_data, epochs=epochs["cnn_qat"], lr=1e-3, seed=seed)
    seconds = time.perf_counter() - start
    after, file_metric, size = judged(rec.model, sample.eval_data, plan, tmp / "cnn.studio")
    return row(sample.name, "QAT int4 weights, uint8 activations", session.float_size_bytes / size,
               session.baseline_metric, before, after, file_metric, seconds, gap(rec))


def student_row(epochs: dict, seed: int, tmp: Path) -> dict:
    teacher = studio.load_sample("digits-cnn")
    teacher_float = studio.Session(teacher.model, teacher.eval_data)
    student = studio.samples.student("digits-cnn", width=0.5, seed=seed)
    session = studio.Session(student, teacher.eval_data)
    plan = Plan()
    x, _ = teacher.train_data  # distillation needs no labels
    start = time.perf_counter()
    rec = finetune(session, plan, (x, None), method="distill", teacher=teacher.model, epochs=epochs["student"],
                   lr=5e-3, alpha=0.9, temperature=4.0, seed=seed)
    seconds = time.perf_counter() - start
    after, file_metric, size = judged(rec.model, teacher.eval_data, plan, tmp / "student.studio")
    return row("digits-cnn/0.5", "distilled student, width 0.5, float32", teacher_float.float_size_bytes / size,
               teacher_float.baseline_metric, session.baseline_metric, after, file_metric, seconds, gap(rec))


def gap(*runs: Recovered) -> float:
    """The largest difference, in points, between an epoch's training-forward metric and evaluate's,
    over the epochs that trained at the plan's ratios (not while a gradual schedule ramps up)."""
    return max(abs(r.metric - r.forward_metric) for run in runs for r in run.history if r.at_plan) * 100


def row(sample: str, plan: str, ratio: float, float_metric: float, before: float, after: float, file_metric: float,
        seconds: float, gap_pp: float) -> dict:
    return dict(sample=sample, plan=plan, ratio=ratio, float=float_metric, before=before, after=after, file=file_metric,
                seconds=seconds, gap=gap_pp)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a few epochs each: a smoke test, not the figures")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (these models are tiny)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    epochs = QUICK if args.quick else FULL
    print(f"# torch threads {args.threads}, seed {args.seed}, epochs {epochs}; accuracy in % of the 500 eval images")
    print(f"{'sample':<14} {'plan':<42} {'ratio':>6} {'float':>6} {'before':>7} {'after':>6} {'file':>6} {'gap_pp':>6} {'time_s':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for make in (mlp_row, cnn_row, student_row):
            r = make(epochs, args.seed, Path(tmp))
            print(
                f"{r['sample']:<14} {r['plan']:<42} {r['ratio']:>6.1f} {100 * r['float']:>6.1f} {100 * r['before']:>7.1f} "
                f"{100 * r['after']:>6.1f} {100 * r['file']:>6.1f} {r['gap']:>6.1f} {r['seconds']:>7.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()

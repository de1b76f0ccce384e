"""The recovery command: fine-tune under a plan (QAT or distillation), then export and verify.

    studio finetune --model digits-cnn --bits 4 --act-bits 8 --epochs 10 --export out/
    studio finetune --model digits-cnn --width 0.5 --epochs 50 --lr 3e-3 --export out/ --format onnx
    studio finetune --model model.pt --data eval.npz --train-data train.npz --plan plan.json --export out/

It prints the plan's metric before and after, one line per epoch, writes the recovered
model compressed by the plan, and runs the file in its runtime (as ``studio compress`` does).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .engine.errors import StudioError
from .engine.recovered import METHODS, EpochRecord

COMMANDS = ("finetune",)


def register(sub: Any) -> None:
    """Add ``studio finetune`` to the CLI's subparsers."""
    from .cli import add_plan_args
    from .engine.formats import FORMATS

    ft = sub.add_parser("finetune", help="recover accuracy: fine-tune under a plan (QAT or distillation), export and verify")
    add_plan_args(ft)
    ft.add_argument("--train-data", help="training data (.npz or weights-only .pt); samples bring their own train split")
    ft.add_argument("--method", default="qat", choices=METHODS, help="qat: task loss through fake quantization; distill: learn the float model's outputs")
    ft.add_argument("--epochs", type=int, default=5)
    ft.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (cosine-decayed)")
    ft.add_argument("--batch-size", type=int, default=64)
    ft.add_argument("--prune-schedule", default="fixed", choices=("fixed", "gradual"),
                    help="fixed: keep the starting masks; gradual: raise sparsity to the plan's (Zhu & Gupta)")
    ft.add_argument("--width", type=float, default=1.0,
                    help="below 1: distil a new student of the sample with hidden sizes scaled by this (samples only)")
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--export", required=True, help="the folder (or file) to write")
    ft.add_argument("--format", default="studio", choices=FORMATS.names())
    ft.add_argument("--no-verify", action="store_true", help="skip running the exported file")


def _print_epoch(record: EpochRecord) -> None:
    print(f"epoch {record.epoch}: loss {record.train_loss:.4f}, measured {record.metric:.4f}, "
          f"sparsity {record.sparsity:.2f}, {record.seconds:.1f} s", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run ``studio finetune``; StudioError and OSError reach the CLI's handler."""
    from .cli import _plan, _session, export_and_report, progress_bar
    from .loading import load_data
    from .samples import list_samples, load_sample, student

    is_sample = args.model in list_samples()
    if args.train_data:
        train = load_data(args.train_data)
    elif is_sample:
        train = load_sample(args.model).train_data
    else:
        raise StudioError("fine-tuning a model file needs training data: pass --train-data <file.npz or file.pt>")
    if not 0 < args.width <= 1:
        raise StudioError(f"--width {args.width:g}: give a width multiplier in (0, 1]; 1 fine-tunes the model itself")
    print(f"loading {args.model}", file=sys.stderr)
    session = _session(args.model, args.data)
    teacher = session.recipe().model
    method = args.method
    if args.width < 1:
        if not is_sample:
            raise StudioError("a narrower student can be made of the sample architectures only; drop --width for your model")
        session = session.with_model(student(args.model, args.width, seed=args.seed))
        method = "distill"
    plan = _plan(args, session)
    before = session.evaluate(plan)
    rec = session.finetune(plan, train, method=method, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                           teacher=teacher, prune_schedule=args.prune_schedule, seed=args.seed,
                           progress=progress_bar("training", unit="batch"), on_epoch=_print_epoch)
    if rec.model is None:  # finetune always returns its trained model; from_dict may not
        raise StudioError("fine-tuning returned no model")
    recovered = session.with_model(rec.model)
    report = recovered.evaluate(plan)
    if not args.json:
        print(f"{report.metric_name} under the plan: {before.metric:.4f} before, {report.metric:.4f} after "
              f"{method} ({len(rec.history)} epochs, {rec.seconds:.1f} s); the original float model {before.baseline_metric:.4f} "
              f"(the table below compares with the trained float weights)")
    extra = {"before_metric": before.metric, "recovery": rec.to_dict()}
    return export_and_report(recovered, report, args, extra=extra)

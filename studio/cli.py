"""The command line: the same engine behind a terminal command.

    studio samples
    studio evaluate --model digits-cnn --plan plan.json
    studio evaluate --model model.pt --data eval.npz --bits 4 --prune 0.5 --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .engine import Plan, Report, Session
from .loading import load_data, load_model
from .samples import list_samples, load_sample


def _session(model_arg: str, data_arg: str | None) -> Session:
    if model_arg in list_samples():
        sample = load_sample(model_arg)
        model, data = sample.model, sample.eval_data
    else:
        model = load_model(model_arg)
        data = None
    if data_arg:
        data = load_data(data_arg)
    if data is None:
        raise ValueError("a model file needs eval data: pass --data <file.npz or file.pt>")
    return Session(model, data)


def _plan(args: argparse.Namespace) -> Plan:
    if args.plan:
        return Plan.from_json(Path(args.plan).read_text())
    return Plan.uniform(args.bits, prune=args.prune)


def format_report(report: Report) -> str:
    lines = [f"{'layer':<24} {'spec':<28} {'float B':>9} {'bytes':>9} {'SQNR dB':>8}"]
    for layer in report.layers.values():
        sqnr = "exact" if layer.sqnr_db is None else f"{layer.sqnr_db:.1f}"
        lines.append(f"{layer.name:<24} {layer.spec.label():<28} {layer.float_bytes:>9} {layer.total:>9} {sqnr:>8}")
    lines.append(f"{'(other tensors)':<24} {'':<28} {'':>9} {report.rest_bytes:>9}")
    lines.append(
        f"size {report.float_size_bytes} B -> {report.size_bytes} B ({report.compression_ratio:.2f}x); "
        f"parts {report.parts()}"
    )
    if report.metric is not None:
        noise = "" if report.delta_stderr is None else f" (+/- {1.96 * report.delta_stderr:.4f} at 95%)"
        lines.append(
            f"{report.metric_name}: {report.baseline_metric:.4f} -> {report.metric:.4f} "
            f"(delta {report.delta:+.4f}{noise}); agreement with float {report.fidelity.agreement:.4f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="studio", description="Compression Studio on the command line")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("samples", help="list the bundled sample models")
    ev = sub.add_parser("evaluate", help="evaluate a plan on a model")
    ev.add_argument("--model", required=True, help="a sample name or a model file")
    ev.add_argument("--data", help="eval data (.npz or weights-only .pt); samples bring their own")
    ev.add_argument("--plan", help="a plan JSON file (else --bits/--prune for every layer)")
    ev.add_argument("--bits", type=int, default=8)
    ev.add_argument("--prune", type=float, default=0.0)
    ev.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        if args.command == "samples":
            for name in list_samples():
                print(name)
            return 0
        session = _session(args.model, args.data)
        report = session.evaluate(_plan(args), progress=lambda d, t: print(f"evaluating {d}/{t}", file=sys.stderr))
        print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
        return 0
    except (ValueError, OSError) as exc:
        print(f"studio: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

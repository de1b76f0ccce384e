"""The command line: the same engine behind a terminal command.

    studio samples
    studio evaluate --model digits-cnn --plan plan.json
    studio evaluate --model model.pt --data eval.npz --bits 4 --prune 0.5 --json
    studio compress --model digits-cnn --preset full-integer --export out/ --format onnx
    studio compress --model model.pt --data eval.npz --plan plan.json --export out/ --format studio
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .engine import Plan, Report, Session, StudioError, Verification
from .engine.activations import RANGE_METHODS
from .engine.formats import FORMATS
from .engine.prune import PRUNERS
from .engine.quantize import CLIP_METHODS
from .loading import load_data, load_model
from .samples import list_samples, load_sample


def _session(model_arg: str, data_arg: str | None) -> Session:
    data: Any
    if model_arg in list_samples():
        sample = load_sample(model_arg)
        model, data = sample.model, sample.eval_data
    else:
        model = load_model(model_arg)
        data = None
    if data_arg:
        data = load_data(data_arg)
    if data is None:
        raise StudioError("a model file needs eval data: pass --data <file.npz or file.pt>")
    return Session(model, data)


def _plan(args: argparse.Namespace, session: Session) -> Plan:
    if args.plan and args.preset:
        raise StudioError("give either --plan or --preset, not both")
    if args.plan:
        path = Path(args.plan)
        if not path.is_file():
            raise StudioError(f"no plan file at {path}")
        return Plan.from_json(path.read_text())
    if args.preset:
        return Plan.preset(args.preset, session)
    return Plan.uniform(
        args.bits, prune=args.prune, prune_method=args.prune_method, clip=args.clip, cluster=args.cluster,
        act_bits=args.act_bits, calibration=args.calibration,
    )


def progress_bar(desc: str, unit: str = "call") -> Callable[[int, int], None]:
    """A tqdm bar on stderr, fed by the engine's ``progress(done, total)`` callable."""
    from tqdm import tqdm

    bar: Any = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)
        bar.total = total
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def format_verification(v: Verification) -> str:
    return (
        f"verified {v.path} in {v.runtime}: {v.metric_name} {v.metric:.4f} (studio {v.studio_metric:.4f}, "
        f"gap {v.metric_gap:+.4f}); file {v.file_bytes} B (studio estimate {v.estimated_bytes} B); "
        f"latency {v.latency_ms:.1f} ms per eval pass (float {v.float_latency_ms:.1f} ms)"
    )


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
            f"(delta {report.delta:+.4f}{noise}); agreement with float {report.fidelity.agreement if report.fidelity else float('nan'):.4f}"
        )
    return "\n".join(lines)


def export_and_report(session: Session, report: Report, args: argparse.Namespace, extra: dict[str, Any] | None = None) -> int:
    """Write ``report``'s plan in ``args.format``, verify the file in its runtime, print both
    (``extra`` joins the JSON output)."""
    print(f"exporting {args.format}", file=sys.stderr)
    path = session.export(report.plan, args.export, format=args.format)
    verification = None
    if not args.no_verify and FORMATS[args.format].run is not None:
        print(f"verifying {path}", file=sys.stderr)
        verification = session.verify(path)
    if args.json:
        out: dict[str, Any] = {"report": report.to_dict(), "path": str(path)}
        out["verification"] = verification.to_dict() if verification else None
        out.update(extra or {})
        print(json.dumps(out, indent=2))
    else:
        print(format_report(report))
        print(f"wrote {path}")
        if verification:
            print(format_verification(verification))
    return 0


def add_plan_args(cmd: argparse.ArgumentParser) -> None:
    """The model, data and plan options that every command which evaluates a plan takes."""
    cmd.add_argument("--model", required=True, help="a sample name or a model file")
    cmd.add_argument("--data", help="eval data (.npz or weights-only .pt); samples bring their own")
    cmd.add_argument("--plan", help="a plan JSON file (else --preset, or --bits/--prune for every layer)")
    cmd.add_argument("--preset", help=f"a named plan: {', '.join(Plan.presets())}")
    cmd.add_argument("--bits", type=int, default=8, help="bits for every layer: 2..8, 16 (float16) or 32 (float)")
    cmd.add_argument("--prune", type=float, default=0.0, help="fraction of weights to prune in every layer")
    cmd.add_argument("--prune-method", default="unstructured", help=f"one of {', '.join(PRUNERS.names())} or N:M such as 2:4")
    cmd.add_argument("--clip", default="minmax", choices=CLIP_METHODS.names())
    cmd.add_argument("--cluster", action="store_true", help="k-means weight sharing (2**bits shared values)")
    cmd.add_argument("--act-bits", type=int, choices=(8, 16), help="quantize activations to 8 or 16 bits")
    cmd.add_argument("--calibration", default="minmax", choices=RANGE_METHODS.names())
    cmd.add_argument("--json", action="store_true", help="print the report as JSON")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="studio", description="Compression Studio on the command line")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("samples", help="list the bundled sample models")
    ev = sub.add_parser("evaluate", help="evaluate a plan on a model")
    co = sub.add_parser("compress", help="evaluate a plan, export the compressed model and verify the file")
    for cmd in (ev, co):
        add_plan_args(cmd)
    co.add_argument("--export", required=True, help="the folder (or file) to write")
    co.add_argument("--format", default="studio", choices=FORMATS.names())
    co.add_argument("--no-verify", action="store_true", help="skip running the exported file")
    from . import cli_guidance, cli_recovery

    cli_guidance.register(sub)
    cli_recovery.register(sub)
    args = parser.parse_args(argv)
    try:
        if args.command in cli_guidance.COMMANDS:
            return cli_guidance.run(args)
        if args.command in cli_recovery.COMMANDS:
            return cli_recovery.run(args)
        if args.command == "samples":
            for name in list_samples():
                print(name)
            return 0
        print(f"loading {args.model}", file=sys.stderr)
        session = _session(args.model, args.data)
        report = session.evaluate(_plan(args, session), progress=progress_bar("evaluating"))
        if args.command == "evaluate":
            print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
            return 0
        return export_and_report(session, report, args)
    except (StudioError, OSError) as exc:
        print(f"studio: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The guidance commands: per-layer sensitivity, and a search for a plan within a budget.

    studio sensitivity --model digits-cnn [--proxy] [--json]
    studio search --model digits-mlp --max-drop 1.0 --export plan.json
    studio search --model model.pt --data eval.npz --target-size 15x --export plan.json

On the command line ``--max-drop`` is in points of the metric (1.0 = one point of
accuracy); the engine's ``max_drop`` is the same drop as a fraction (0.01).
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from .engine.errors import StudioError
from .engine.search import SearchResult, search
from .engine.sensitivity import SensitivityTable, sensitivity

COMMANDS = ("search", "sensitivity")


def register(sub: Any) -> None:
    """Add the guidance commands to the CLI's subparsers."""
    se = sub.add_parser("sensitivity", help="per-layer sensitivity: metric drop and bytes saved per setting")
    sr = sub.add_parser("search", help="find the smallest plan within a drop, or the best within a size")
    for cmd in (se, sr):
        cmd.add_argument("--model", required=True, help="a sample name or a model file")
        cmd.add_argument("--data", help="eval data (.npz or weights-only .pt); samples bring their own")
        cmd.add_argument("--json", action="store_true", help="print the result as JSON")
        cmd.add_argument("--executor", choices=["local", "process", "ray"], default="local",
                         help="where the probes run: here in order (fastest with incremental evaluation), in worker processes, or on Ray")
        cmd.add_argument("--workers", type=int, default=2, help="worker processes for --executor process")
        cmd.add_argument("--seed", type=int, default=0, help="seeds the Fisher proxy's sampled labels (data without labels)")
    se.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4, 6, 8], help="bit widths to probe")
    se.add_argument("--prune", type=float, nargs="+", default=[0.25, 0.5, 0.75], help="prune ratios to probe")
    se.add_argument("--proxy", action="store_true", help="rank by the Fisher proxy instead of measuring every probe")
    sr.add_argument("--max-drop", type=float, help="largest drop of the metric, in points (1.0 = one point of accuracy)")
    sr.add_argument("--target-size", help="a size in bytes (20000, 20kB) or a compression ratio (15x)")
    sr.add_argument("--export", help="write the chosen plan to this JSON file")
    sr.add_argument("--evaluations", type=int, default=16, help="candidate plans the refinement may evaluate")
    sr.add_argument("--strict", action="store_true", help="the drop's 95%% interval must be within the budget too")
    sr.add_argument("--space", help='the options per layer as JSON, e.g. \'{"bits": [2, 4, 8], "prune": [0, 0.5]}\'')


def _target(text: str | None) -> Any:
    if text is None:
        return None
    return int(text) if text.strip().isdigit() else text


def _space(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise StudioError(f"--space is not valid JSON: {exc}") from exc


def _executor(args: argparse.Namespace) -> Any:
    if args.executor == "process":
        return ProcessPoolExecutor(max_workers=max(1, args.workers))
    return None if args.executor == "local" else args.executor


def format_sensitivity(table: SensitivityTable) -> str:
    """Rows of layers, columns of settings: the measured drop in points (or the proxy), and bytes saved."""
    labels = [s.label for s in table.settings]
    what = "drop in points (bytes saved)" if table.mode == "measured" else f"Fisher proxy, nats ({table.proxy_loss}) (bytes saved)"
    lines = [f"{table.metric_name}: base {table.base_metric if table.base_metric is not None else table.baseline_metric:.4f}; {what}"]
    lines.append(f"{'layer':<22}" + "".join(f"{label:>22}" for label in labels))
    for layer, row in zip(table.layers, table.grid("delta" if table.mode == "measured" else "proxy")):
        cells = []
        for label, value in zip(labels, row):
            saved = table.entry(layer, label).bytes_saved
            shown = "-" if value is None else (f"{-100 * value:+.1f}" if table.mode == "measured" else f"{value:.2e}")
            cells.append(f"{shown} ({saved})")
        lines.append(f"{layer:<22}" + "".join(f"{c:>22}" for c in cells))
    lines.append("most sensitive first: " + ", ".join(table.ranking()))
    if table.forward_passes is not None:
        lines.append(f"{len(table.entries)} probes cost {table.forward_passes:.1f} full forward passes of module calls, {table.seconds:.1f} s")
    else:
        lines.append(f"{table.seconds:.1f} s")
    return "\n".join(lines)


def format_search(result: SearchResult) -> str:
    """The Pareto table of the evaluated candidates, then the chosen plan per layer."""
    lines = [f"{'':2}{'bytes':>9} {'ratio':>7} {'metric':>8} {'drop (pt)':>10} {'±95%':>6} {'budget':>13}"]
    for c in result.pareto():
        mark = "*" if c.plan == result.plan else ""
        noise = "" if c.delta_stderr is None else f"{196 * c.delta_stderr:.1f}"
        lines.append(f"{mark:2}{c.size_bytes:>9} {c.compression_ratio:>6.2f}x {c.metric:>8.4f} {100 * c.drop:>10.2f} {noise:>6} {c.budget:>13}")
    best = result.best
    budget = []
    if result.target_size_bytes is not None:
        budget.append(f"size <= {result.target_size_bytes} B ({result.float_size_bytes / result.target_size_bytes:.2f}x)")
    if result.max_drop is not None:
        budget.append(f"drop <= {100 * result.max_drop:g} points")
    lines.append(
        f"chosen (*): {best.compression_ratio:.2f}x, {result.metric_name} {result.baseline_metric:.4f} -> {best.metric:.4f} "
        f"(drop {100 * best.drop:.2f} points, {best.budget}) for {' and '.join(budget)}; "
        f"{len(result.candidates)} candidates evaluated, {result.probes} one-layer probes, {result.seconds:.1f} s"
    )
    for name, spec in _layer_specs(result):
        lines.append(f"  {name:<24} {spec}")
    return "\n".join(lines)


def _layer_specs(result: SearchResult) -> list[tuple[str, str]]:
    names = result.sensitivity.layers if result.sensitivity is not None else [n for n, _ in result.plan.overrides]
    return [(name, result.plan.spec_for(name).label()) for name in names]


def run(args: argparse.Namespace) -> int:
    """Run a guidance command; StudioError and OSError reach the CLI's handler."""
    from .cli import _session, progress_bar

    session = _session(args.model, args.data)
    executor = _executor(args)
    try:
        if args.command == "sensitivity":
            table = sensitivity(session, bits=args.bits, prune=args.prune, progress=progress_bar("probing", unit="probe"),
                                executor=executor, mode="proxy" if args.proxy else "measured", seed=args.seed)
            print(json.dumps(table.to_dict(), indent=2) if args.json else format_sensitivity(table))
            return 0
        if args.max_drop is not None and not 0 <= args.max_drop < 100:
            raise StudioError(f"--max-drop {args.max_drop:g}: give the largest drop in points, from 0 up to 100 (1.0 = one point of accuracy)")
        max_drop = None if args.max_drop is None else args.max_drop / 100
        result = search(session, target_size=_target(args.target_size), max_drop=max_drop, space=_space(args.space), seed=args.seed,
                        progress=progress_bar("searching", unit="step"), executor=executor, evaluations=args.evaluations, strict=args.strict)
    finally:
        if isinstance(executor, ProcessPoolExecutor):
            executor.shutdown(cancel_futures=True)
    path = session.export(result.plan, args.export, format="plan") if args.export else None
    if args.json:
        print(json.dumps({**result.to_dict(), "path": None if path is None else str(path)}, indent=2))
    else:
        print(format_search(result))
        if path is not None:
            print(f"wrote {path}")
    return 0

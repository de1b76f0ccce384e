"""Pure functions that render reports as HTML for the Metrics and Model panels."""

from __future__ import annotations

import html
import math

from ..engine import Report, Session
from ..engine.latency import Latency
from ..engine.report import Z95
from ..engine.search import SearchResult
from ..engine.sensitivity_table import SensitivityTable

PART_COLORS = {"codes": "#1f6fd1", "scales": "#7048e8", "index": "#f08c00", "other": "#868e96"}


def fmt_bytes(n: float) -> str:
    if n < 1000:
        return f"{int(n)}\u00a0B"
    if n < 1_000_000:
        return f"{n / 1000:.2f}\u00a0KB"
    return f"{n / 1_000_000:.2f}\u00a0MB"


def fmt_metric(value: float, name: str) -> str:
    return f"{100 * value:.2f}%" if "accuracy" in name or "agreement" in name else f"{value:.4f}"


def model_info_html(session: Session, source: str) -> str:
    params = sum(info.params for info in session.layers)
    folds = ", ".join(f"{bn}→{layer}" for layer, bn in session.folds)
    fold_line = f"<div class='studio-dim'>BatchNorm folded: {html.escape(folds)}</div>" if folds else ""
    return (
        f"<div class='studio-info'><b>{html.escape(source)}</b>: {len(session.layers)} compressible layers, "
        f"{params:,} parameters in them · float size <b>{fmt_bytes(session.float_size_bytes)}</b> · "
        f"baseline {html.escape(session.metric_name)} <b>{fmt_metric(session.baseline_metric, session.metric_name)}</b> "
        f"on {session.n_samples} samples</div>{fold_line}"
    )


def _parts_bar(parts: dict[str, int], total: int) -> str:
    cells = "".join(
        f"<span title='{k}: {v} B' style='display:inline-block;height:14px;width:{100 * v / max(total, 1):.2f}%;"
        f"background:{PART_COLORS[k]}'></span>"
        for k, v in parts.items()
        if v > 0
    )
    legend = " · ".join(
        f"<span style='color:{PART_COLORS[k]}'>■</span> {k} {fmt_bytes(v)}" for k, v in parts.items()
    )
    return f"<div class='studio-parts'>{cells}</div><div class='studio-dim'>{legend}</div>"


def size_html(report: Report) -> str:
    return (
        f"<div class='studio-size'>Size: {fmt_bytes(report.float_size_bytes)} → "
        f"<b class='studio-size-value'>{fmt_bytes(report.size_bytes)}</b> "
        f"(<b class='studio-ratio'>{report.compression_ratio:.2f}×</b> smaller)"
        f"<span class='studio-bytes' data-bytes='{report.size_bytes}'></span></div>"
        + _parts_bar(report.parts(), report.size_bytes)
    )


def metric_html(eval_report: Report | None, last: Report | None, evaluating: bool, session: Session) -> str:
    name = session.metric_name
    base = fmt_metric(session.baseline_metric, name)
    if eval_report is None:
        stale = ""
        if last is not None and last.metric is not None:
            stale = f" <span class='studio-dim'>(previous plan: {fmt_metric(last.metric, name)})</span>"
        state = "evaluating…" if evaluating else "not measured yet"
        return (
            f"<div class='studio-metric'>{html.escape(name)}: {base} → "
            f"<b class='studio-metric-value' data-state='pending'>{state}</b>{stale}</div>"
        )
    r = eval_report
    if r.metric is None or r.delta is None:  # a size-only report
        return f"<div class='studio-metric'>{html.escape(name)}: {base}</div>"
    delta = r.delta
    if r.delta_stderr is not None:
        half = 1.96 * r.delta_stderr
        noise = "within noise" if r.delta_within_noise else "beyond noise"
        css = "studio-ok" if r.delta_within_noise or delta >= 0 else "studio-bad"
        noise_text = f" <span class='{css}'>±{100 * half:.2f} pts at 95% ({noise}, paired test on {r.n_samples} samples)</span>"
    else:
        noise_text = ""
    unit = " pts" if "accuracy" in name or "agreement" in name else ""
    delta_text = f"{100 * delta:+.2f}{unit}" if unit else f"{delta:+.4f}"
    fid = r.fidelity
    fid_text = (
        f"<div class='studio-dim'>Fidelity to float: top-1 agreement {100 * fid.agreement:.2f}% · "
        f"KL {fid.kl:.2e} · cosine {fid.cosine:.4f}</div>"
        if fid is not None
        else ""
    )
    return (
        f"<div class='studio-metric'>{html.escape(name)}: {base} → "
        f"<b class='studio-metric-value' data-state='measured' data-value='{r.metric:.6f}'>{fmt_metric(r.metric, name)}</b> "
        f"(<b>{delta_text}</b>){noise_text}</div>{fid_text}{latency_html(r.latency)}"
    )


RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "pytorch": "PyTorch"}


def latency_html(latency: Latency | None) -> str:
    """The measured latency beside the float model's in the same runtime, with its noise."""
    if latency is None:
        return ""
    faster = "faster" if latency.speedup >= 1 else "slower"
    ratio = latency.speedup if latency.speedup >= 1 else 1 / max(latency.speedup, 1e-9)
    return (
        f"<div class='studio-latency' data-ms='{latency.ms:.4f}' data-speedup='{latency.speedup:.4f}'>Latency in "
        f"{RUNTIME_NAMES.get(latency.runtime, latency.runtime)} ({html.escape(latency.file_format)}, batch of {latency.batch}, "
        f"{latency.threads} thread{'s' if latency.threads > 1 else ''}): <b>{latency.ms:.2f} ms</b> ±{latency.spread_ms:.2f} "
        f"against float {latency.float_ms:.2f} ms ±{latency.float_spread_ms:.2f}: <b>{ratio:.2f}× {faster}</b></div>"
    )


def layer_bars_html(report: Report, groups: dict[str, list[str]] | None = None) -> str:
    """Float against compressed bytes per layer, or per group of layers when ``groups`` is given."""
    if groups:
        items = [(title, sum(report.layers[n].float_bytes for n in names), sum(report.layers[n].total for n in names)) for title, names in groups.items()]
        what = "group"
    else:
        items = [(layer.name, layer.float_bytes, layer.total) for layer in report.layers.values()]
        what = "layer"
    peak = max([before for _, before, _ in items] + [1])
    rows = []
    for name, before, now in items:
        rows.append(
            "<div class='studio-barrow'>"
            f"<span class='studio-barname'>{html.escape(name)}</span>"
            f"<span class='studio-bartrack'><span class='studio-barfloat' style='width:{100 * before / peak:.1f}%'></span>"
            f"<span class='studio-barnow' style='width:{100 * now / peak:.1f}%'></span></span>"
            f"<span class='studio-barval'>{fmt_bytes(now)}</span></div>"
        )
    if report.rest_bytes:
        rows.append(f"<div class='studio-dim'>other tensors (norms, embeddings' extras…): {fmt_bytes(report.rest_bytes)}</div>")
    return f"<div class='studio-bars'><div class='studio-dim'>Per-{what} size (grey: float, blue: now)</div>" + "".join(rows) + "</div>"


def sqnr_text(sqnr: float | None) -> str:
    return "exact" if sqnr is None else f"{sqnr:.1f} dB"


def _heat(value: float, worst: float) -> str:
    """White (no drop) to red (the worst drop); gains are green."""
    if value < 0:
        return f"rgba(47,158,68,{min(1.0, -value / max(worst, 1e-9)) * 0.6:.2f})"
    return f"rgba(214,69,69,{min(1.0, value / max(worst, 1e-9)) * 0.85:.2f})"


def sensitivity_html(table: SensitivityTable) -> str:
    """A heatmap of layers × settings: colour = metric drop (measured) or the Fisher estimate
    (proxy, labelled as such); hover = bytes saved, SQNR and the drop's noise."""
    measured = table.mode == "measured"
    field = "drop" if measured else "proxy"
    grid = [[getattr(e, field) for e in table.entries[i * len(table.settings) : (i + 1) * len(table.settings)]] for i in range(len(table.layers))]
    finite = [v for row in grid for v in row if v is not None and math.isfinite(v)]
    worst = max([abs(v) for v in finite] + [1e-12])
    head = "".join(f"<th>{html.escape(s.label.replace('bits=', '').replace('prune=', 'prune '))}</th>" for s in table.settings)
    rows = []
    for layer, values, entries in zip(table.layers, grid, (table.entries[i * len(table.settings) : (i + 1) * len(table.settings)] for i in range(len(table.layers)))):
        cells = []
        for value, e in zip(values, entries):
            sqnr = sqnr_text(e.sqnr_db)
            if measured:
                noise = f" ±{100 * Z95 * e.delta_stderr:.2f}" if e.delta_stderr is not None else ""
                text = f"{-100 * value:+.1f}" if value is not None else "—"
                tip = f"{layer} at {e.setting}: {fmt_metric(e.metric or 0.0, table.metric_name)} ({-100 * (value or 0):+.2f} pts{noise}{', within noise' if e.within_noise else ''}); saves {fmt_bytes(e.bytes_saved)}; SQNR {sqnr}"
            else:
                text = f"{value:.2g}" if value is not None else "—"
                tip = f"{layer} at {e.setting}: estimated cost {value:.3g} (Fisher proxy, not measured); saves {fmt_bytes(e.bytes_saved)}; SQNR {sqnr}"
            colour = _heat(value, worst) if value is not None and math.isfinite(value) else "#f1f3f5"
            cells.append(f"<td style='background:{colour}' title='{html.escape(tip, quote=True)}' data-value='{value if value is not None else ''}'>{text}</td>")
        rows.append(f"<tr><th class='studio-heat-layer'>{html.escape(layer)}</th>{''.join(cells)}</tr>")
    what = (
        f"metric change in points against {'float' if not table.base.overrides and table.base.default.is_float else 'the base plan'}, measured"
        if measured
        else "estimated cost (diagonal Fisher × squared weight error): an estimate, not a measurement"
    )
    cost = f" · {table.forward_passes:.1f} full-pass equivalents" if table.forward_passes else ""
    return (
        f"<div class='studio-dim'>{html.escape(what)}; {len(table.entries)} probes in {table.seconds:.1f} s{cost}. Hover a cell for bytes saved.</div>"
        f"<div class='studio-heat-box'><table class='studio-heat' data-mode='{table.mode}'><tr><th>layer</th>{head}</tr>{''.join(rows)}</table></div>"
    )


def search_html(result: SearchResult) -> str:
    """What Fit to budget chose, and how it searched."""
    best = result.best
    noise = f" ±{100 * Z95 * best.delta_stderr:.2f}" if best.delta_stderr is not None else ""
    budget = f"≤ {100 * result.max_drop:.2f} pts drop" if result.max_drop is not None else f"≤ {fmt_bytes(result.target_size_bytes or 0)}"
    return (
        f"<div class='studio-search' data-ratio='{best.compression_ratio:.4f}'>Budget {budget}: chose "
        f"<b>{best.compression_ratio:.2f}× smaller</b> ({fmt_bytes(best.size_bytes)}) at <b>{100 * best.delta:+.2f} pts</b>{noise} "
        f"(<span class='{'studio-ok' if best.budget == 'meets' else 'studio-dim'}'>{html.escape(best.budget)}</span>). "
        f"{len(result.candidates)} candidates measured in {result.seconds:.1f} s are in History; the Pareto front shows the searched front.</div>"
    )

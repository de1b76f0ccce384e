"""Pure functions that render reports as HTML for the Metrics and Model panels."""

from __future__ import annotations

import html

from ..engine import Report, Session

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
        f"(<b>{delta_text}</b>){noise_text}</div>{fid_text}"
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

"""Tables and bars as pure functions: reports, verifications and runtime notes in, HTML out.

Every number in them comes from the engine: sizes from ``Report``, Huffman code
lengths from the same coder that counts the bytes, file sizes and metrics from
``session.verify``.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import CompressedWeight, LayerSpec, Plan, Report, Session, Verification
from ..engine.huffman import block_table_bytes, code_lengths, table_bytes
from ..engine.search import SearchResult
from ..engine.sensitivity import SensitivityTable, rank_agreement
from ..ui.html import fmt_bytes
from .pictures import GREEN, GREY, RED


def weight_counts(session: Session) -> dict[str, int]:
    """Weights per compressible layer (the weight tensor only, no bias)."""
    return {info.name: int(np.prod(info.weight_shape)) for info in session.layers}


def parts_table_html(report: Report, weights: Mapping[str, int]) -> str:
    """Every layer's bytes by part, how its codes and sparse index are stored, and the
    bits that codes and index cost per weight; then the rest of the file.
    ``weights`` is the weight count per layer (``weight_counts(session)``)."""
    head = (
        "<tr><th>layer</th><th>weights</th><th>codes</th><th>scales</th><th>index</th><th>other</th><th>total</th>"
        "<th>codes stored as</th><th>index</th><th>code + index bits per weight</th></tr>"
    )
    rows = []
    for name, layer in report.layers.items():
        size = layer.size
        count = weights[name]
        per_weight = 8 * (size.codes + size.index) / max(count, 1)
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{count:,}</td><td>{fmt_bytes(size.codes)}</td><td>{fmt_bytes(size.scales)}</td>"
            f"<td>{fmt_bytes(size.index)}</td><td>{fmt_bytes(size.other)}</td><td><b>{fmt_bytes(size.total)}</b></td>"
            f"<td class='workshop-text'>{html.escape(size.codes_encoding)}</td><td class='workshop-text'>{html.escape(size.index_encoding)}</td>"
            f"<td>{per_weight:.2f}</td></tr>"
        )
    rest = report.rest_bytes + report.container_bytes
    rows.append(
        f"<tr><td>rest of the file</td><td></td><td></td><td></td><td></td><td>{fmt_bytes(rest)}</td><td><b>{fmt_bytes(rest)}</b></td>"
        f"<td colspan='3' style='text-align:left'>other tensors {fmt_bytes(report.rest_bytes)} + file header {fmt_bytes(report.container_bytes)}</td></tr>"
    )
    rows.append(f"<tr><th>total</th><th colspan='5'></th><th>{fmt_bytes(report.size_bytes)}</th><th colspan='3'></th></tr>")
    return "<table class='workshop-table workshop-parts'>" + head + "".join(rows) + "</table>"


def huffman_summary(result: CompressedWeight) -> dict[str, Any]:
    """How a uniform layer's codes Huffman-code: per code its count and code length,
    and the totals (payload bits, table bytes, packed bits) the size counter compares."""
    if result.uniform is None or result.codes is None:
        raise ValueError("Huffman coding applies to integer codes: give a layer quantized to 2..8 bits, not float or k-means")
    u = result.uniform
    symbols = (result.codes - u.qmin).flatten().numpy()
    counts = np.bincount(symbols, minlength=u.qmax - u.qmin + 1)
    lengths = code_lengths(counts)
    return {
        "codes": list(range(u.qmin, u.qmax + 1)),
        "counts": counts.tolist(),
        "lengths": lengths.tolist(),
        "weights": int(counts.sum()),
        "payload_bits": int((counts * lengths).sum()),
        "table_bytes": table_bytes(len(counts)),
        "block_bytes": block_table_bytes(int(counts.sum())),
        "packed_bits": int(counts.sum()) * int(result.spec.bits or 0),
    }


def huffman_table_html(result: CompressedWeight) -> str:
    """Each code's count and Huffman length, then packed against Huffman-coded bytes."""
    h = huffman_summary(result)
    peak = max(h["counts"]) or 1
    rows = []
    for code, count, length in zip(h["codes"], h["counts"], h["lengths"]):
        bar = f"<span style='display:inline-block;height:10px;width:{120 * count / peak:.0f}px;background:#1f6fd1'></span>"
        rows.append(f"<tr><td>{code:+d}</td><td>{count:,}</td><td style='text-align:left'>{bar}</td><td>{length if count else '—'}</td></tr>")
    packed = (h["packed_bits"] + 7) // 8
    coded = (h["payload_bits"] + 7) // 8
    average = h["payload_bits"] / max(h["weights"], 1)
    summary = (
        f"<div class='workshop-readout'>Packed: {h['weights']:,} × {result.spec.bits} bits = <b>{fmt_bytes(packed)}</b>. "
        f"Huffman: {average:.2f} bits on average = {fmt_bytes(coded)} + table {fmt_bytes(h['table_bytes'])} "
        f"(one byte per code)" + (f" + block starts {fmt_bytes(h['block_bytes'])} (2 bytes per 4096 codes, so a reader can decode blocks at once)" if h["block_bytes"] else "")
        + f" = <b>{fmt_bytes(coded + h['table_bytes'] + h['block_bytes'])}</b>.</div>"
    )
    return (
        "<table class='workshop-table workshop-huffman'><tr><th>code</th><th>count</th><th></th><th>Huffman bits</th></tr>"
        + "".join(rows) + "</table>" + summary
    )


def cost_bars_html(costs: Iterable[tuple[str, float, float | None]], unit: str = "pts") -> str:
    """Bars of the metric change per layer: ``(label, delta, half-width of the 95% interval)``.
    Drops beyond noise are red, gains green, changes within noise grey."""
    costs = list(costs)
    peak = max([abs(d) for _, d, _ in costs] + [1e-9])
    rows = []
    for label, delta, half in costs:
        within = half is not None and abs(delta) <= half
        color = GREY if within else RED if delta < 0 else GREEN
        noise = "" if half is None else f" <span class='workshop-dim'>±{half:.1f}{' noise' if within else ''}</span>"
        rows.append(
            "<div class='workshop-cost' style='display:flex;align-items:center;gap:8px;margin:2px 0'>"
            f"<span style='width:230px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap'>{html.escape(label)}</span>"
            f"<span style='flex:1;background:#f8f9fa;height:16px;position:relative'>"
            f"<span style='position:absolute;left:0;top:0;height:16px;width:{100 * abs(delta) / peak:.1f}%;background:{color}'></span></span>"
            f"<span style='width:190px;text-align:right'>{delta:+.1f} {unit}{noise}</span></div>"
        )
    return "<div class='workshop-costs'>" + "".join(rows) + "</div>"


def verify_table_html(files: Mapping[str, Path], estimated_bytes: int, checks: Mapping[str, Verification] | None = None) -> str:
    """Each exported file (format -> path): its bytes beside the studio's size and, once
    verified, its metric and latency measured in its own runtime beside the studio's."""
    checks = checks or {}
    head = (
        "<tr><th>format</th><th>file</th><th>studio's size</th><th>runtime</th><th>metric in runtime</th>"
        "<th>studio's metric</th><th>latency</th><th>float latency (same runtime)</th></tr>"
    )
    rows = []
    for fmt, path in files.items():
        size = Path(path).stat().st_size
        same = "workshop-good" if size == estimated_bytes else "workshop-dim"
        cells = f"<td>{html.escape(fmt)}</td><td class='{same}' data-bytes='{size}'>{size:,} B</td><td>{estimated_bytes:,} B</td>"
        v = checks.get(fmt)
        if v is None:
            cells += "<td colspan='5' class='workshop-dim workshop-text'>not verified yet</td>"
        else:
            cells += (
                f"<td class='workshop-text'>{html.escape(v.runtime)}</td><td data-metric='{v.metric:.6f}'>{100 * v.metric:.2f}%</td>"
                f"<td>{100 * v.studio_metric:.2f}%</td><td>{v.latency_ms:.0f} ms</td><td>{v.float_latency_ms:.0f} ms</td>"
            )
        rows.append(f"<tr>{cells}</tr>")
    return "<table class='workshop-table workshop-verify'>" + head + "".join(rows) + "</table>"


def runtime_table_html(plan: Plan, support: Mapping[str, Any]) -> str:
    """Per layer: the plan's choice, how ONNX Runtime stores it, and whether it runs it
    exactly and natively (``session.runtime_support(plan)``)."""
    head = "<tr><th>layer</th><th>plan</th><th>stored in the .onnx as</th><th>exact</th><th>native</th><th style='text-align:left'>note</th></tr>"
    rows = []
    for name, rt in support.items():
        spec = plan.spec_for(name)
        yes = lambda flag: "<span class='workshop-good'>yes</span>" if flag else "<span class='workshop-bad'>no</span>"  # noqa: E731
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{html.escape(spec.label())}</td><td>{html.escape(rt.weights)}</td>"
            f"<td>{yes(rt.exact)}</td><td>{yes(rt.native)}</td><td style='text-align:left'>{html.escape(rt.note)}</td></tr>"
        )
    return "<table class='workshop-table workshop-runtime'>" + head + "".join(rows) + "</table>"


def layer_bytes_html(session: Session, table: SensitivityTable) -> str:
    """Per layer: its weights, its bytes in float and at each probed setting, and its
    share of the float model's layer bytes (the table's ``layer_bytes``)."""
    floats = session.size(Plan()).layers
    total = sum(layer.total for layer in floats.values()) or 1
    labels = [s.label.replace("bits=", "") + (" bits" if s.label.startswith("bits=") else "") for s in table.settings]
    head = "<tr><th>layer</th><th>weights</th><th>share</th><th>float</th>" + "".join(f"<th>{html.escape(x)}</th>" for x in labels) + "</tr>"
    rows = []
    for name, row in zip(table.layers, table.grid("layer_bytes")):
        share = floats[name].total / total
        cells = "".join(f"<td>{fmt_bytes(b)}</td>" for b in row)
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{session.layer(name).params:,}</td><td>{share:.0%}</td>"
            f"<td>{fmt_bytes(floats[name].total)}</td>{cells}</tr>"
        )
    return "<table class='workshop-table workshop-layer-bytes'>" + head + "".join(rows) + "</table>"


def ranking_html(measured: SensitivityTable, proxy: SensitivityTable) -> str:
    """The layers ranked by the measured table and by the proxy, side by side, with
    Spearman's correlation over the layers and over every probe."""
    m, p = measured.layer_scores(), proxy.layer_scores()
    m_rank = {n: i + 1 for i, n in enumerate(measured.ranking())}
    p_rank = {n: i + 1 for i, n in enumerate(proxy.ranking())}
    head = "<tr><th>layer</th><th>measured: mean drop</th><th>measured rank</th><th>proxy: mean estimate (nats)</th><th>proxy rank</th></tr>"
    rows = []
    for name in measured.ranking():
        same = "workshop-good" if m_rank[name] == p_rank[name] else "workshop-bad"
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{100 * m[name]:.1f} pts</td><td>{m_rank[name]}</td>"
            f"<td>{p[name]:.2g}</td><td class='{same}'>{p_rank[name]}</td></tr>"
        )
    agree = rank_agreement(measured, proxy)
    note = (
        f"<div class='workshop-dim'>Spearman rank correlation: {agree['layers']:.2f} over the layers, {agree['entries']:.2f} over all "
        f"{len(measured.entries)} probes (1 = the same order). Measured in {measured.seconds:.1f} s; estimated in {proxy.seconds:.1f} s.</div>"
    )
    return "<table class='workshop-table workshop-ranking'>" + head + "".join(rows) + "</table>" + note


def _short(spec: LayerSpec) -> str:
    if spec.is_float:
        return "float"
    text = f"{spec.bits}-bit k-means" if spec.cluster else f"{spec.bits} bits"
    return text + (f", {spec.prune:.0%} pruned" if spec.prune > 0 else "")


def front_table_html(result: SearchResult, layers: list[str]) -> str:
    """The search's Pareto front, smallest first: size, measured change with its 95%
    interval, the budget's verdict, and each layer's setting; the chosen plan in bold."""
    head = (
        "<tr><th>size</th><th>smaller</th><th>change</th><th>budget</th>"
        + "".join(f"<th>{html.escape(n)}</th>" for n in layers) + "</tr>"
    )
    rows = []
    chosen = result.best
    for c in result.pareto():
        half = "" if c.delta_stderr is None else f" ±{100 * 1.96 * c.delta_stderr:.1f}"
        css = "workshop-good" if c.budget == "meets" else "workshop-dim" if c.budget == "within noise" else "workshop-bad"
        cells = "".join(f"<td class='workshop-text'>{html.escape(_short(c.plan.spec_for(n)))}</td>" for n in layers)
        style = " style='font-weight:700;background:#f3f0ff'" if c == chosen else ""
        rows.append(
            f"<tr{style}><td>{fmt_bytes(c.size_bytes)}</td><td>{c.compression_ratio:.1f}×</td><td>{100 * c.delta:+.1f}{half} pts</td>"
            f"<td class='{css} workshop-text'>{html.escape(c.budget)}</td>{cells}</tr>"
        )
    return "<table class='workshop-table workshop-front-table'>" + head + "".join(rows) + "</table>"

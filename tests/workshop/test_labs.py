"""Labs, pictures, tables and measurements against the real engine (digits-cnn)."""

import math
import re

import pytest

from studio.engine import LayerSpec, Plan
from studio.workshop import PruneLab, QuantLab, SizeLab, VerifyPanel
from studio.workshop.measure import LayerCost, granularity_gap, layer_costs, most_sensitive, sqnr_per_bit
from studio.workshop.pictures import BLUE, clipped_mask, codes_table_html, mask_svg, number_line_svg, row_levels
from studio.workshop.tables import (
    cost_bars_html,
    huffman_summary,
    huffman_table_html,
    parts_table_html,
    runtime_table_html,
    verify_table_html,
    weight_counts,
)


def data_bytes(html: str) -> int:
    return int(re.search(r"data-bytes='(\d+)'", html).group(1))


# -- pictures -------------------------------------------------------------------------
def test_levels_follow_the_grid(cnn_session):
    r3 = cnn_session.compressed("features.7", LayerSpec(bits=3))
    levels = row_levels(r3, 5)
    scale = float(r3.uniform.scale[5])
    assert list(levels) == pytest.approx([k * scale for k in range(-3, 4)])
    tensor = cnn_session.compressed("features.7", LayerSpec(bits=3, granularity="tensor"))
    assert list(row_levels(tensor, 5)) == pytest.approx(list(row_levels(tensor, 0)))  # one scale for all rows
    kmeans = cnn_session.compressed("features.7", LayerSpec(bits=3, cluster=True))
    assert len(row_levels(kmeans, 0)) == 8
    assert len(row_levels(cnn_session.compressed("features.7", LayerSpec()), 0)) == 0


def test_number_line_draws_every_level_and_flags_clipping(cnn_session):
    minmax = cnn_session.compressed("features.7", LayerSpec(bits=2))
    mse = cnn_session.compressed("features.7", LayerSpec(bits=2, clip="mse"))
    assert not clipped_mask(minmax, 0).any()  # min-max covers every weight
    assert clipped_mask(mse, 0).any()
    svg = number_line_svg(mse, 0)
    assert svg.count(f"stroke='{BLUE}' stroke-width='2'") == 3  # three levels at 2 bits
    assert svg.count("<circle") == 288  # every weight of the channel
    assert "3 levels" in svg


def test_codes_table_shows_codes_and_rebuilt_values(cnn_session):
    r = cnn_session.compressed("features.0", LayerSpec(bits=4))
    table = codes_table_html(r, 0)
    assert table.count("<tr>") == 10  # header and 9 weights
    for i in range(9):
        assert f"<td>{int(r.codes[0, i])}</td><td>{float(r.dequant_view[0, i]):+.4f}</td>" in table
    assert "codes -7…7" in table


def test_mask_counts_match_the_keep_mask(cnn_session):
    r = cnn_session.compressed("features.3", LayerSpec(prune=0.5))
    svg = mask_svg(r.keep, tuple(r.float_view.shape), max_rows=16, max_cols=24)
    assert svg.count(f"fill='{BLUE}'") == int(r.keep[:16, :24].sum())
    assert svg.count("<rect") == 16 * 24
    assert "workshop-dim" not in mask_svg(r.keep, tuple(r.float_view.shape), caption=False)


# -- tables ---------------------------------------------------------------------------
def test_parts_table_adds_up(cnn_session):
    report = cnn_session.size(Plan.uniform(bits=4, prune=0.6))
    html = parts_table_html(report, weight_counts(cnn_session))
    assert weight_counts(cnn_session)["features.7"] == 64 * 32 * 9
    for name, layer in report.layers.items():
        assert f"<td>{name}</td>" in html and layer.size.index_encoding in html
    assert f"{report.size_bytes / 1000:.2f}\u00a0KB" in html


def test_huffman_summary_is_the_size_counter(cnn_session):
    r = cnn_session.compressed("features.7", LayerSpec(bits=4))
    assert r.size.codes_encoding == "huffman"
    h = huffman_summary(r)
    assert sum(h["counts"]) == h["weights"] == 18432 and h["table_bytes"] == 15
    assert h["block_bytes"] == 2 * 4  # 18432 codes: 5 blocks of 4096, four block starts stored
    assert math.ceil(h["payload_bits"] / 8) + h["table_bytes"] + h["block_bytes"] == r.size.codes
    assert f"{r.size.codes / 1000:.2f}\u00a0KB" in huffman_table_html(r)
    with pytest.raises(ValueError, match="integer codes"):
        huffman_summary(cnn_session.compressed("features.7", LayerSpec(bits=16)))


def test_cost_bars_colour_by_noise():
    html = cost_bars_html([("a", -10.0, 2.0), ("b", -1.0, 2.0), ("c", 1.0, None)])
    rows = html.split("workshop-cost'")[1:]
    assert "#d64545" in rows[0] and "#9aa5b1" in rows[1] and "#1e7b34" in rows[2]
    assert "noise" in rows[1] and "noise" not in rows[0]


def test_runtime_table(cnn_session):
    plan = Plan().with_layer("features.3", bits=3).with_layer("classifier.1", bits=5, cluster=True)
    html = runtime_table_html(plan, cnn_session.runtime_support(plan))
    assert html.count("<tr>") == 1 + len(cnn_session.layer_names)
    assert "int4 QDQ" in html and "5-bit k-means" in html


# -- labs -----------------------------------------------------------------------------
def test_quant_lab_shows_the_engine_figures(cnn_session):
    lab = QuantLab(cnn_session, layer="features.7", bits=4)
    result = cnn_session.compressed("features.7", LayerSpec(bits=4))
    assert f"SQNR <b>{result.sqnr_db:.1f} dB</b>" in lab.readout.value
    measured = cnn_session.evaluate(Plan().with_layer("features.7", bits=4)).metric
    assert f"<b>{100 * measured:.1f}%</b>" in lab.readout.value
    lab.bits.value = 3
    lab.granularity.value = "tensor"
    lab.clip.value = "mse"
    spec = LayerSpec(bits=3, granularity="tensor", clip="mse")
    assert lab.spec == spec
    assert lab.figure.layout.title.text.startswith("features.7: int3 tensor sym mse")
    assert f"SQNR <b>{cnn_session.compressed('features.7', spec).sqnr_db:.1f} dB</b>" in lab.readout.value
    assert "7 levels" in lab.readout.value and "1 scale (4\u00a0B)" in lab.readout.value


def test_quant_lab_keeps_the_channel_in_range(cnn_session):
    lab = QuantLab(cnn_session, layer="features.7")
    lab.channel.value = 60
    lab.layer.value = "features.0"
    assert lab.channel.max == 15 and lab.channel.value == 15
    assert "Output channel 15" in lab.line.value


def test_prune_lab_patterns(cnn_session):
    lab = PruneLab(cnn_session, layer="features.7", prune=30)
    assert "5,530 of 18,432 weights are zero" in lab.readout.value  # round(0.3 * 18432)
    lab.method.value = "2:4"
    assert lab.prune.disabled and lab.spec == LayerSpec(prune=0.5, prune_method="2:4")
    assert "(<b>50%</b> sparse)" in lab.readout.value
    lab.method.value = "structured"
    assert not lab.prune.disabled
    keep = cnn_session.compressed("features.7", lab.spec).keep
    assert int(keep.any(dim=1).sum()) == 64 - round(0.3 * 64)
    assert "pruned to 0" in lab.figure.data[1].name and sum(lab.figure.data[1].y) == int((~keep).sum())


def test_size_lab_follows_its_controls(cnn_session):
    lab = SizeLab(cnn_session, bits=4)
    lab.prune.value = 20
    assert data_bytes(lab.summary.value) == cnn_session.size(Plan.uniform(bits=4, prune=0.2)).size_bytes
    lab.huffman.value = False
    assert data_bytes(lab.summary.value) == cnn_session.size(Plan.uniform(bits=4, prune=0.2).replace(huffman=False)).size_bytes
    lab.bits.value = 32
    lab.kmeans.value = True  # ignored for float
    assert lab.plan.default.bits is None and not lab.plan.default.cluster
    lab.bits.value = 5
    assert lab.plan.default == LayerSpec(bits=5, cluster=True, prune=0.2)
    lab.method.value = "1:4"
    assert lab.prune.disabled and lab.plan.default.prune_method == "1:4"


def test_verify_panel_runs_each_file_in_its_runtime(cnn_session, tmp_path):
    plan = Plan.uniform(bits=6)
    path = cnn_session.export(plan, tmp_path / "m.studio", format="studio")
    panel = VerifyPanel(cnn_session, plan, {"studio": path})
    assert "not verified yet" in panel.table.value
    checks = panel.verify()
    v = checks["studio"]
    assert v.file_bytes == panel.estimated == cnn_session.size(plan).size_bytes
    assert f"data-metric='{v.metric:.6f}'" in panel.table.value and "verified" in panel.status.value
    assert not panel.button.disabled


def test_verify_panel_reports_a_bad_file(cnn_session, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    panel = VerifyPanel(cnn_session, Plan(), {"text": bad})
    panel.button.click()
    assert "cannot verify notes.txt" in panel.status.value and panel.checks == {}
    assert verify_table_html({"text": bad}, 5).count("workshop-dim") >= 1


# -- measurements ---------------------------------------------------------------------
def test_layer_costs_are_measured(cnn_session):
    seen = []
    costs = layer_costs(cnn_session, LayerSpec(prune=0.5), progress=lambda d, t: seen.append((d, t)))
    assert [c.layer for c in costs] == cnn_session.layer_names and seen[-1] == (4, 4)
    first = cnn_session.evaluate(Plan().with_layer("features.0", prune=0.5))
    assert costs[0].metric == pytest.approx(first.metric) and costs[0].delta == pytest.approx(first.delta)
    assert costs[0].half_width == pytest.approx(1.96 * first.delta_stderr)
    assert most_sensitive(costs) == min(costs, key=lambda c: c.metric).layer
    assert LayerCost.from_dict(costs[1].to_dict()) == costs[1]
    with pytest.raises(ValueError, match="no layer costs"):
        most_sensitive([])


def test_sqnr_grows_about_six_db_per_bit(cnn_session):
    per_bit = sqnr_per_bit(cnn_session, "features.7", bits=(3, 8))
    assert 5.0 < per_bit < 7.5  # 20 log10(2) = 6.02 dB in theory
    with pytest.raises(ValueError, match="at least two"):
        sqnr_per_bit(cnn_session, "features.7", bits=(4,))


def test_per_channel_scales_beat_one_per_tensor(cnn_session):
    gaps = granularity_gap(cnn_session, bits=4)
    assert set(gaps) == set(cnn_session.layer_names)
    assert all(g > 0 for g in gaps.values())

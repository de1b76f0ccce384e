"""Labs: a few controls over one session and the pictures they drive.

A lab is what a notebook cell would do in Jupyter, made usable in Voilà (where code
cannot be edited). Each uses the public API only (``session.compressed``,
``session.evaluate``, ``session.size``) and the Studio's figure and HTML functions.
Sliders send one event per release (``continuous_update=False``): a measured accuracy
takes a forward pass over the eval set, and a dragged slider would queue dozens.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ipywidgets as W

from ..engine import LayerSpec, Plan, Report, Session, Verification
from ..ui.figures import histogram_data, histogram_figure, set_font_size, update_histogram
from ..ui.html import fmt_bytes, size_html
from .pictures import codes_table_html, mask_svg, number_line_svg, row_levels
from .tables import parts_table_html, verify_table_html, weight_counts

PRUNE_METHODS = ["unstructured", "structured", "2:4", "1:4"]
BIT_OPTIONS = [(str(b), b) for b in range(2, 9)] + [("16", 16), ("float", 32)]


def _toggle(options: list[tuple[str, str]], description: str) -> W.ToggleButtons:
    toggle = W.ToggleButtons(options=options, description=description, style={"button_width": "auto", "description_width": "initial"})
    return toggle


def measured_html(session: Session, plan: Plan, what: str, report: Report | None = None) -> str:
    """The measured metric of ``plan`` beside the float model's, with its 95% noise
    (``report``: ``plan``'s report when it was just measured)."""
    report = report if report is not None else session.evaluate(plan)
    if report.metric is None or report.delta is None:  # evaluate always measures; anything else is a bug
        raise RuntimeError("session.evaluate returned no metric")
    noise = ""
    if report.delta_stderr is not None:
        half = 1.96 * report.delta_stderr
        verdict = "within noise" if abs(report.delta) <= half else "beyond noise"
        noise = f" <span class='workshop-dim'>±{100 * half:.1f} at 95%, {verdict}</span>"
    css = "workshop-bad" if report.delta < 0 and not report.delta_within_noise else "workshop-good"
    return (
        f"{html.escape(session.metric_name)} {what}: <b>{100 * report.metric:.1f}%</b> "
        f"(float {100 * report.baseline_metric:.1f}%, <span class='{css}'>{100 * report.delta:+.1f} pts</span>{noise}, measured on {report.n_samples} samples)"
    )


class _Lab(W.VBox):
    def __init__(self, session: Session, name: str) -> None:
        super().__init__()
        self.session = session
        self.add_class("workshop-lab")
        self.add_class(f"workshop-lab-{name}")

    def _watch(self, *widgets: W.Widget) -> None:
        for widget in widgets:
            widget.observe(lambda _: self.update(), names="value")

    def update(self) -> None:
        raise NotImplementedError

    def set_projector(self, on: bool) -> None:
        """Larger text in the lab's figure (the page's style sheet does the rest)."""
        figure = getattr(self, "figure", None)
        if figure is not None:
            set_font_size((figure,), 20 if on else 15)


class QuantLab(_Lab):
    """One layer quantized alone: bits, per channel or per tensor, min-max or MSE clipping.
    Shows one channel on a number line with its codes, the layer's histogram, its SQNR,
    and the measured accuracy with only this layer quantized."""

    def __init__(self, session: Session, layer: str | None = None, bits: int = 4) -> None:
        super().__init__(session, "quant")
        first = layer or session.layer_names[0]
        self.layer = W.Dropdown(options=session.layer_names, value=first, description="layer")
        self.bits = W.IntSlider(value=bits, min=2, max=8, description="bits", continuous_update=False)
        self.granularity = _toggle([("per channel", "channel"), ("per tensor", "tensor")], "scales")
        self.clip = _toggle([("min-max", "minmax"), ("MSE clipping", "mse")], "range")
        self.channel = W.IntSlider(value=0, min=0, max=session.layer(first).weight_shape[0] - 1, description="channel", continuous_update=False)
        self.readout, self.line, self.table = W.HTML(), W.HTML(), W.HTML()
        self.readout.add_class("workshop-readout")
        self.figure = histogram_figure()
        self.figure.layout.height = 330
        self.children = [
            W.HBox([self.layer, self.bits, self.channel], layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.granularity, self.clip], layout=W.Layout(flex_flow="row wrap")),
            self.readout, self.line,
            W.HBox([self.table, W.Box([self.figure], layout=W.Layout(flex="1 1 420px", min_width="360px"))], layout=W.Layout(flex_flow="row wrap", align_items="flex-start")),
        ]
        self.layer.observe(self._layer_changed, names="value")
        self._watch(self.bits, self.granularity, self.clip, self.channel)
        self.update()

    @property
    def spec(self) -> LayerSpec:
        return LayerSpec(bits=self.bits.value, granularity=self.granularity.value, clip=self.clip.value)

    def _layer_changed(self, _: Any) -> None:
        channels = self.session.layer(self.layer.value).weight_shape[0]
        with self.hold_trait_notifications():
            self.channel.value = min(self.channel.value, channels - 1)
            self.channel.max = channels - 1
        self.update()

    def update(self) -> None:
        name, spec = self.layer.value, self.spec
        result = self.session.compressed(name, spec)
        row = min(self.channel.value, result.float_view.shape[0] - 1)
        update_histogram(self.figure, histogram_data(result, name))
        self.line.value = number_line_svg(result, row)
        self.table.value = codes_table_html(result, row)
        sqnr = "exact" if result.sqnr_db is None else f"{result.sqnr_db:.1f} dB"
        scales = result.uniform.scale.numel() if result.uniform is not None else 0
        self.readout.value = (
            f"<b>{html.escape(name)}</b> as {html.escape(spec.label())}: SQNR <b>{sqnr}</b> · "
            f"{len(row_levels(result, row))} levels · {scales} scale{'s' if scales != 1 else ''} "
            f"({fmt_bytes(result.size.scales)}) · weights {fmt_bytes(result.size.codes)}<br>"
            + measured_html(self.session, Plan().with_layer(name, spec), "with only this layer quantized")
        )


class PruneLab(_Lab):
    """One layer pruned alone (weights stay float): the pattern, the mask, the histogram,
    and the measured accuracy."""

    def __init__(self, session: Session, layer: str | None = None, prune: int = 50) -> None:
        super().__init__(session, "prune")
        self.layer = W.Dropdown(options=session.layer_names, value=layer or session.layer_names[0], description="layer")
        self.method = W.Dropdown(options=PRUNE_METHODS, value="unstructured", description="pattern")
        self.prune = W.IntSlider(value=prune, min=0, max=90, step=5, description="prune %", continuous_update=False)
        self.readout, self.mask = W.HTML(), W.HTML()
        self.readout.add_class("workshop-readout")
        self.figure = histogram_figure()
        self.figure.layout.height = 330
        self.children = [
            W.HBox([self.layer, self.method, self.prune], layout=W.Layout(flex_flow="row wrap")),
            self.readout,
            W.HBox([W.Box([self.mask], layout=W.Layout(flex="0 1 600px")), W.Box([self.figure], layout=W.Layout(flex="1 1 420px", min_width="360px"))], layout=W.Layout(flex_flow="row wrap", align_items="flex-start")),
        ]
        self._watch(self.layer, self.method, self.prune)
        self.update()

    @property
    def spec(self) -> LayerSpec:
        if ":" in self.method.value:  # N:M fixes the sparsity itself; any prune > 0 turns it on
            return LayerSpec(prune=0.5, prune_method=self.method.value)
        return LayerSpec(prune=self.prune.value / 100, prune_method=self.method.value)

    def update(self) -> None:
        name, spec = self.layer.value, self.spec
        self.prune.disabled = ":" in self.method.value
        result = self.session.compressed(name, spec)
        update_histogram(self.figure, histogram_data(result, name))
        rows, cols = result.float_view.shape
        self.mask.value = mask_svg(result.keep, (int(rows), int(cols)))
        zeros = 0 if result.keep is None else int((~result.keep).sum())
        total = result.float_view.numel()
        fixed = f" ({html.escape(self.method.value)} fixes it; the slider is off)" if self.prune.disabled else ""
        self.readout.value = (
            f"<b>{html.escape(name)}</b>: {zeros:,} of {total:,} weights are zero (<b>{result.sparsity:.0%}</b> sparse){fixed}<br>"
            + measured_html(self.session, Plan().with_layer(name, spec), "with only this layer pruned")
        )


class SizeLab(_Lab):
    """One setting for every layer; where the bytes go (sizes only, no forward pass)."""

    def __init__(self, session: Session, bits: int = 8) -> None:
        super().__init__(session, "size")
        self.bits = W.SelectionSlider(options=BIT_OPTIONS, value=bits, description="bits", continuous_update=False)
        self.prune = W.IntSlider(value=0, min=0, max=90, step=5, description="prune %", continuous_update=False)
        self.method = W.Dropdown(options=PRUNE_METHODS, value="unstructured", description="pattern")
        self.kmeans = W.Checkbox(value=False, description="k-means", indent=False)
        self.huffman = W.Checkbox(value=True, description="Huffman", indent=False)
        self.summary, self.table = W.HTML(), W.HTML()
        self.children = [
            W.HBox([self.bits, self.prune, self.method], layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.kmeans, self.huffman]),
            self.summary, self.table,
        ]
        self._weights = weight_counts(session)
        self._watch(self.bits, self.prune, self.method, self.kmeans, self.huffman)
        self.update()

    @property
    def plan(self) -> Plan:
        bits = None if self.bits.value == 32 else self.bits.value
        cluster = self.kmeans.value and bits is not None and bits <= 8
        prune = 0.5 if ":" in self.method.value else self.prune.value / 100
        return Plan.uniform(bits=bits, cluster=cluster, prune=prune, prune_method=self.method.value).replace(huffman=self.huffman.value)

    def update(self) -> None:
        self.prune.disabled = ":" in self.method.value
        report = self.session.size(self.plan)
        self.summary.value = size_html(report)
        self.table.value = parts_table_html(report, self._weights)


class VerifyPanel(_Lab):
    """Exported files and a button that runs each in its own runtime (``session.verify``).
    Verifying takes seconds per file, so it runs when asked, not when the page loads."""

    def __init__(self, session: Session, plan: Plan, files: Mapping[str, str | Path]) -> None:
        super().__init__(session, "verify")
        self.files = {fmt: Path(path) for fmt, path in files.items()}
        self.estimated = session.size(plan).size_bytes
        self.checks: dict[str, Verification] = {}
        self.button = W.Button(description="Verify in each runtime", button_style="primary", layout=W.Layout(width="auto"))
        self.button.add_class("workshop-verify-button")
        self.status, self.table = W.HTML(), W.HTML(verify_table_html(self.files, self.estimated))
        self.status.add_class("workshop-readout")
        self.button.on_click(lambda _: self.verify())
        self.children = [W.HBox([self.button, self.status], layout=W.Layout(align_items="center")), self.table]

    def update(self) -> None:
        self.table.value = verify_table_html(self.files, self.estimated, self.checks)

    def verify(self) -> dict[str, Verification]:
        """Verify every file, showing each row as it is measured."""
        self.button.disabled = True
        try:
            self.checks = {}
            for i, (fmt, path) in enumerate(self.files.items()):
                self.status.value = f"running the {html.escape(fmt)} file ({i + 1} of {len(self.files)})…"
                self.checks[fmt] = self.session.verify(path)
                self.update()
            self.status.value = "<span class='workshop-good'>verified</span>: every file measured in its own runtime"
        except ValueError as exc:
            self.status.value = f"<span class='workshop-bad'>{html.escape(str(exc))}</span>"
        finally:
            self.button.disabled = False
        return self.checks

"""The Layers panel: one row of controls per compressible layer, plus shared controls.

Small models show every row. A model with more than ``FLAT_LIMIT`` layers shows its
layers grouped by block (``grouping.py``), collapsed: a group's header sums up its
layers and sets all of them at once, and its rows are built when it is opened.
Updates are incremental: after a change only the rows (and group headers) whose spec,
size or selection changed are touched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as W

from ..engine import LayerReport, LayerSpec, Plan, Report, Session
from ..engine.activations import RANGE_METHODS
from ..engine.layers import LayerInfo
from ..engine.prune import PRUNERS
from .grouping import group_layers
from .html import fmt_bytes, sqnr_text
from .state import StudioState

BIT_OPTIONS = [(str(b), b) for b in range(2, 9)] + [("16", 16), ("float", 32)]
MODES = ["uniform", "k-means"]
PRUNE_PATTERNS = ["2:4", "4:8"]
LABEL = {"description_width": "initial"}  # shared controls show their whole label
FLAT_LIMIT = 24  # above this many layers, rows are grouped by block and built on demand
# The table's columns; their widths live in style.CSS (.studio-col-*), shared by the header and every row.
COLUMNS = {"name": "layer", "bits": "bits", "prune": "prune %", "mode": "mode", "size": "size", "sqnr": "SQNR"}
KEEP = "—"  # a group control's resting value: change nothing


def _bits_value(spec: LayerSpec) -> int:
    return 32 if spec.bits is None else spec.bits


def bits_changes(bits: int, mode: str) -> dict[str, Any]:
    """The spec changes for a bit-width control value (32 = float; k-means needs 2..8)."""
    real = None if bits == 32 else bits
    return {"bits": real, "cluster": mode == "k-means" and real is not None and real <= 8}


class LayerRow:
    """Widgets of one layer; ``on_change(name, changes)`` fires on user edits."""

    def __init__(self, index: int, info: LayerInfo, on_change: Callable[[str, dict[str, Any]], None], on_select: Callable[[str], None]) -> None:
        self.name = name = info.name
        kind = info.kind + ("+BN" if info.folded_bn else "")
        self.select = W.Button(description=name, tooltip=f"{name}: {kind}, {info.params:,} parameters. Click to show its histogram.")
        self.select.add_class("studio-layer-select")
        self.select.on_click(lambda _: on_select(name))
        self.caption = W.HTML(f"{kind} · {info.params:,} params")
        self.caption.add_class("studio-layer-kind")
        self.bits = W.SelectionSlider(options=BIT_OPTIONS, value=32, continuous_update=True, style={"description_width": "0px"})
        self.bits.add_class("studio-bits")
        self.prune = W.IntSlider(value=0, min=0, max=95, step=5, continuous_update=True, style={"description_width": "0px"})
        self.prune.add_class("studio-prune")
        self.mode = W.Dropdown(options=MODES, value="uniform")
        self.size = W.HTML()
        self.size.add_class("studio-layer-size")
        self.sqnr = W.HTML()
        cells = [W.VBox([self.select, self.caption]), self.bits, self.prune, self.mode, self.size, self.sqnr]
        for column, cell in zip(COLUMNS, cells):
            cell.add_class(f"studio-col-{column}")
        self.box = W.HBox(cells)
        self.box.add_class("studio-row")
        self.box.add_class(f"studio-row-{index}")
        self._syncing = False
        self._on_change = on_change
        self.bits.observe(lambda ch: self._edited(bits_changes(ch["new"], self.mode.value)), names="value")
        self.prune.observe(lambda ch: self._edited({"prune": ch["new"] / 100}), names="value")
        self.mode.observe(lambda ch: self._edited({"cluster": ch["new"] == "k-means"}), names="value")

    def _edited(self, changes: dict[str, Any]) -> None:
        if not self._syncing:
            self._on_change(self.name, changes)

    def show(self, spec: LayerSpec, layer: LayerReport | None, selected: bool) -> None:
        self._syncing = True
        try:
            self.bits.value = _bits_value(spec)
            self.prune.value = int(round(spec.prune * 100))
            self.mode.value = "k-means" if spec.cluster else "uniform"
            self.mode.disabled = spec.bits is None or spec.bits > 8
        finally:
            self._syncing = False
        if layer is not None:
            self.size.value = f"<span title='codes {layer.codes} · scales {layer.scales} · index {layer.index} · other {layer.other}'>{fmt_bytes(layer.total)}</span>"
            self.sqnr.value = sqnr_text(layer.sqnr_db)
        self.select.button_style = "info" if selected else ""


class LayerGroup:
    """A block of layers: a header that sums them up and sets them all, and rows built on opening."""

    def __init__(self, index: int, title: str, names: list[str], panel: LayersPanel) -> None:
        self.title, self.names, self.panel = title, names, panel
        self.open = False
        self.toggle = W.Button(description=f"▸ {title}", tooltip=f"{len(names)} layers: {names[0]} … {names[-1]}")
        self.toggle.add_class("studio-group-toggle")
        self.toggle.on_click(lambda _: self.set_open(not self.open))
        self.summary = W.HTML()
        self.summary.add_class("studio-group-summary")
        self.bits = W.Dropdown(options=[(f"bits {KEEP}", KEEP)] + [(f"{label} bits" if label != "float" else "float", v) for label, v in BIT_OPTIONS], value=KEEP)
        self.prune = W.Dropdown(options=[(f"prune {KEEP}", KEEP)] + [(f"prune {p}%", p) for p in range(0, 100, 10)], value=KEEP)
        for control, field in ((self.bits, "bits"), (self.prune, "prune")):
            control.add_class(f"studio-group-{field}")
            control.observe(lambda ch, field=field: self._set(field, ch["new"]), names="value")
        self.body = W.VBox()
        self.box = W.VBox([W.HBox([self.toggle, self.summary, self.bits, self.prune]).add_class("studio-group-head"), self.body])
        self.box.add_class("studio-group")
        self.box.add_class(f"studio-group-{index}")
        self.open = False

    def set_open(self, open_: bool) -> None:
        self.open = open_
        self.toggle.description = f"{'▾' if open_ else '▸'} {self.title}"
        self.body.children = [self.panel.row(name).box for name in self.names] if open_ else []
        self.panel.show()

    def _set(self, field: str, value: Any) -> None:
        if value == KEEP:
            return
        changes = bits_changes(value, "uniform") if field == "bits" else {"prune": value / 100}
        self.panel.state.set_layers(self.names, **changes)
        control = self.bits if field == "bits" else self.prune
        control.value = KEEP  # an action: the rows keep the detail

    def show(self, plan: Plan, report: Report | None) -> None:
        labels = sorted({plan.spec_for(name).label() for name in self.names})
        spec_text = labels[0] if len(labels) == 1 else f"{len(labels)} settings"
        if report is not None:
            now = sum(report.layers[n].total for n in self.names)
            before = sum(report.layers[n].float_bytes for n in self.names)
            self.summary.value = f"{len(self.names)} layers · {spec_text} · {fmt_bytes(before)} → <b>{fmt_bytes(now)}</b>"
        else:
            self.summary.value = f"{len(self.names)} layers · {spec_text}"


class LayersPanel:
    """Rows of per-layer controls over a ``StudioState``; edits go to the state, never to the plan directly."""

    HINT = "One row per layer: drag bit width (2–8, 16, float) and prune % — size updates at once, accuracy when measured. Click a name to see its histogram."

    def __init__(self, state: StudioState) -> None:
        self.state = state
        self.infos: dict[str, LayerInfo] = {}
        self.rows: dict[str, LayerRow] = {}
        self.groups: list[LayerGroup] = []
        self._shown: dict[str, Any] = {}  # what each row and group header shows now
        self.all_bits = W.SelectionSlider(options=BIT_OPTIONS, value=32, description="all bits", continuous_update=False, style=LABEL)
        self.all_bits.add_class("studio-all-bits")
        self.all_prune = W.IntSlider(value=0, min=0, max=95, step=5, description="all prune %", continuous_update=False, style=LABEL)
        self.all_mode = W.Dropdown(options=MODES, value="uniform", description="all mode", style=LABEL)
        self.all_bits.observe(lambda ch: self._set_all(bits=ch["new"]), names="value")
        self.all_prune.observe(lambda ch: self._set_all(prune=ch["new"]), names="value")
        self.all_mode.observe(lambda ch: self._set_all(mode=ch["new"]), names="value")
        self.preset = W.Dropdown(options=["(choose)"] + Plan.presets(), value="(choose)", description="preset", style=LABEL)
        self.preset.add_class("studio-preset")
        self.preset.observe(self._preset, names="value")
        self.acts = W.Dropdown(options=[("float", 0), ("int8", 8), ("int16", 16)], value=0, description="activations", style=LABEL)
        self.acts.add_class("studio-acts")
        self.acts.observe(lambda ch: self._shared(lambda: self.state.set_all(act_bits=ch["new"] or None)), names="value")
        self.calibration = W.Dropdown(options=RANGE_METHODS.names(), value="minmax", description="calibration", style=LABEL)
        self.calibration.add_class("studio-calibration")
        self.calibration.observe(lambda ch: self._shared(lambda: self.state.set_plan(self.state.plan.replace(calibration=ch["new"]))), names="value")
        self.prune_method = W.Dropdown(options=PRUNERS.names() + PRUNE_PATTERNS, value="unstructured", description="prune method", style=LABEL)
        self.prune_method.add_class("studio-prune-method")
        self.prune_method.observe(lambda ch: self._shared(lambda: self.state.set_all(prune_method=ch["new"])), names="value")
        self.half_params = W.Checkbox(value=False, description="float16 scales & biases", indent=False)
        self.half_params.add_class("studio-half-params")
        self.half_params.observe(lambda ch: self._shared(lambda: self.state.set_all(param_dtype="float16" if ch["new"] else "float32")), names="value")
        self.reset = W.Button(description="Reset", tooltip="every layer back to float")
        self.undo = W.Button(description="Undo")
        self.redo = W.Button(description="Redo")
        for button, verb in ((self.reset, state.reset), (self.undo, state.undo), (self.redo, state.redo)):
            button.on_click(lambda _, verb=verb: verb())
            button.add_class(f"studio-{button.description.lower()}")
        header = W.HBox([W.HTML(f"<b>{label}</b>").add_class(f"studio-col-{column}") for column, label in COLUMNS.items()])
        header.add_class("studio-rowhead")
        self.rows_box = W.VBox(layout=W.Layout(max_height="520px", overflow="auto"))
        self.widget = W.VBox(
            [
                W.HTML(f"<h3>Layers</h3><div class='studio-hint'>{self.HINT}</div>"),
                W.HBox([self.all_bits, self.all_prune, self.all_mode]),
                W.HBox([self.preset, self.acts, self.calibration, self.prune_method, self.half_params], layout=W.Layout(flex_flow="row wrap")),
                W.HBox([self.reset, self.undo, self.redo]),
                header,
                self.rows_box,
            ]
        )
        self.widget.add_class("studio-panel")

    # -- shared controls -------------------------------------------------------------------
    _syncing_controls = False

    def _shared(self, change: Callable[[], None]) -> None:
        if self.state.session is None or self._syncing_controls:
            return
        try:
            change()
        except ValueError as exc:
            self.state.error = str(exc)

    def _set_all(self, bits: int | None = None, prune: int | None = None, mode: str | None = None) -> None:
        if self.state.session is None:
            return
        changes: dict[str, Any] = {}
        if bits is not None:
            changes = bits_changes(bits, self.all_mode.value)
        if prune is not None:
            changes["prune"] = prune / 100
        if mode is not None:
            default_bits = self.state.plan.default.bits
            if mode == "k-means" and (default_bits is None or default_bits > 8):
                return  # k-means needs integer bits; the rows show it disabled
            changes["cluster"] = mode == "k-means"
        self.state.set_all(**changes)

    def _preset(self, change: dict[str, Any]) -> None:
        if change["new"] == "(choose)" or self.state.session is None:
            return
        self.state.set_plan(Plan.preset(change["new"], self.state.session))
        self.preset.value = "(choose)"  # a preset is an action: the plan can be edited further

    # -- rows ------------------------------------------------------------------------------
    def build(self, session: Session) -> None:
        self.infos = {info.name: info for info in session.layers}
        self._index = {info.name: i for i, info in enumerate(session.layers)}
        self.rows, self._shown = {}, {}
        if len(session.layers) <= FLAT_LIMIT:
            self.groups = []
            self.rows_box.children = [self.row(name).box for name in self.infos]
        else:
            self.groups = [LayerGroup(i, title, names, self) for i, (title, names) in enumerate(group_layers(list(self.infos)).items())]
            self.rows_box.children = [group.box for group in self.groups]

    def row(self, name: str) -> LayerRow:
        """The row of layer ``name``, built on first use."""
        if name not in self.rows:
            self.rows[name] = LayerRow(self._index[name], self.infos[name], self._on_row_change, self.state.select)
        return self.rows[name]

    def _on_row_change(self, name: str, changes: dict[str, Any]) -> None:
        try:
            self.state.set_layer(name, **changes)
        except ValueError as exc:
            self.state.error = str(exc)

    def show(self) -> None:
        """Bring the controls in line with the state, touching only what changed."""
        plan, report, selected = self.state.plan, self.state.size_report, self.state.selected
        self._syncing_controls = True
        try:
            self.acts.value = plan.default.act_bits or 0
            self.calibration.value = plan.calibration
            self.half_params.value = plan.default.param_dtype == "float16"
            if plan.default.prune_method in self.prune_method.options:
                self.prune_method.value = plan.default.prune_method
        finally:
            self._syncing_controls = False
        visible = self.rows if not self.groups else {n: self.rows[n] for g in self.groups if g.open for n in g.names}
        for name, row in visible.items():
            key = (plan.spec_for(name), report.layers[name] if report is not None else None, name == selected)
            if self._shown.get(name) != key:
                row.show(*key)
                self._shown[name] = key
        for group in self.groups:
            group_key = (tuple(plan.spec_for(n) for n in group.names), tuple(report.layers[n].total for n in group.names) if report else None)
            if self._shown.get(group.title) != group_key:
                group.show(plan, report)
                self._shown[group.title] = group_key
        self.undo.disabled = not self.state.can_undo
        self.redo.disabled = not self.state.can_redo

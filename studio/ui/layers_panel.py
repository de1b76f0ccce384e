"""The Layers panel: one row of controls per compressible layer, plus "all layers" controls."""

from __future__ import annotations

from typing import Any, Callable

import ipywidgets as W

from ..engine import LayerSpec, Plan, Report, Session
from ..engine.layers import LayerInfo
from ..engine.plan import CALIBRATION_METHODS
from .html import fmt_bytes, sqnr_text
from .state import StudioState

BIT_OPTIONS = [(str(b), b) for b in range(2, 9)] + [("16", 16), ("float", 32)]
MODES = ["uniform", "k-means"]
LABEL = {"description_width": "initial"}  # shared controls show their whole label
# The table's columns; their widths live in style.CSS (.studio-col-*), shared by the header and every row.
COLUMNS = {"name": "layer", "bits": "bits", "prune": "prune %", "mode": "mode", "size": "size", "sqnr": "SQNR"}


def _bits_value(spec: LayerSpec) -> int:
    return 32 if spec.bits is None else spec.bits


def bits_changes(bits: int, mode: str) -> dict[str, Any]:
    """The spec changes for a bit-width control value (32 = float; k-means needs 2..8)."""
    real = None if bits == 32 else bits
    return {"bits": real, "cluster": mode == "k-means" and real is not None and real <= 8}


class LayerRow:
    """Widgets of one layer; ``on_change(name, changes)`` fires on user edits."""

    def __init__(self, index: int, info: LayerInfo, on_change: Callable, on_select: Callable) -> None:
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

    def show(self, spec: LayerSpec, report: Report | None, selected: bool) -> None:
        self._syncing = True
        try:
            self.bits.value = _bits_value(spec)
            self.prune.value = int(round(spec.prune * 100))
            self.mode.value = "k-means" if spec.cluster else "uniform"
            self.mode.disabled = spec.bits is None or spec.bits > 8
        finally:
            self._syncing = False
        if report is not None:
            layer = report.layers[self.name]
            self.size.value = f"<span title='codes {layer.codes} · scales {layer.scales} · index {layer.index} · other {layer.other}'>{fmt_bytes(layer.total)}</span>"
            self.sqnr.value = sqnr_text(layer.sqnr_db)
        self.select.button_style = "info" if selected else ""


class LayersPanel:
    HINT = "One row per layer: drag bit width (2–8, 16, float) and prune % — size updates at once, accuracy when measured. Click a name to see its histogram."

    def __init__(self, state: StudioState) -> None:
        self.state = state
        self.rows: dict[str, LayerRow] = {}
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
        self.acts.observe(lambda ch: self._set_acts(ch["new"]), names="value")
        self.calibration = W.Dropdown(options=list(CALIBRATION_METHODS), value="minmax", description="calibration", style=LABEL)
        self.calibration.observe(lambda ch: self._set_calibration(ch["new"]), names="value")
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
                W.HBox([self.preset, self.acts, self.calibration]),
                W.HBox([self.reset, self.undo, self.redo]),
                header,
                self.rows_box,
            ]
        )
        self.widget.add_class("studio-panel")

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

    def _set_acts(self, bits: int) -> None:
        if self.state.session is None or self._syncing_controls:
            return
        try:
            self.state.set_all(act_bits=bits or None)
        except ValueError as exc:
            self.state.error = str(exc)

    def _set_calibration(self, method: str) -> None:
        if self.state.session is None or self._syncing_controls:
            return
        self.state.set_plan(self.state.plan.replace(calibration=method))

    def build(self, session: Session) -> None:
        self.rows = {
            info.name: LayerRow(i, info, self._on_row_change, self.state.select)
            for i, info in enumerate(session.layers)
        }
        self.rows_box.children = [row.box for row in self.rows.values()]

    def _on_row_change(self, name: str, changes: dict[str, Any]) -> None:
        try:
            self.state.set_layer(name, **changes)
        except ValueError as exc:
            self.state.error = str(exc)

    _syncing_controls = False

    def show(self) -> None:
        plan, report, selected = self.state.plan, self.state.size_report, self.state.selected
        self._syncing_controls = True
        try:
            self.acts.value = plan.default.act_bits or 0
            self.calibration.value = plan.calibration
        finally:
            self._syncing_controls = False
        for name, row in self.rows.items():
            row.show(plan.spec_for(name), report, name == selected)
        self.undo.disabled = not self.state.can_undo
        self.redo.disabled = not self.state.can_redo

"""The Studio's CSS: readable at 1280x800, larger in projector mode. No web fonts."""

CSS = """<style>
.studio-root { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif; font-size: 14px; }
.studio-root h2 { margin: 4px 0; font-size: 1.5em; }
.studio-root h3 { margin: 2px 0; font-size: 1.15em; }
.studio-panel { border: 1px solid #dde1e6; border-radius: 6px; padding: 6px 10px; margin: 4px; background: #fff; }
.studio-hint { color: #52606d; font-size: 0.9em; margin-bottom: 4px; }
.studio-dim { color: #616e7c; font-size: 0.9em; }
.studio-error { color: #b42318; background: #fef3f2; padding: 4px 8px; border-radius: 4px; }
.studio-ok { color: #1e7b34; }
.studio-bad { color: #b42318; }
.studio-size, .studio-metric { font-size: 1.15em; margin: 4px 0; }
.studio-parts { width: 100%; background: #f1f3f5; border-radius: 3px; overflow: hidden; white-space: nowrap; font-size: 0; }
.studio-rowhead { color: #52606d; font-size: 0.9em; }
.studio-row .widget-readout { min-width: 3.2em; }
.studio-row { align-items: center; }
.studio-rowhead > *, .studio-row > * { min-width: 0 !important; }
.studio-col-name { flex: 0 0 155px !important; width: 155px !important; }
.studio-col-bits { flex: 1 1 160px !important; width: auto !important; }
.studio-col-prune { flex: 1 1 140px !important; width: auto !important; }
.studio-col-mode { flex: 0 0 95px !important; width: 95px !important; }
.studio-col-size { flex: 0 0 80px !important; width: 80px !important; }
.studio-col-sqnr { flex: 0 0 70px !important; width: 70px !important; }
.studio-col-name .studio-layer-select { width: auto !important; margin: 0 !important; }
.studio-layer-kind .widget-html-content { color: #52606d; font-size: 0.8em; line-height: 1.2em; height: auto; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.studio-layer-kind { height: auto !important; margin: 0 !important; }
.studio-barrow { display: flex; align-items: center; gap: 6px; margin: 1px 0; }
.studio-barname { width: 150px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; font-size: 0.9em; }
.studio-bartrack { position: relative; flex: 1; height: 12px; background: #f8f9fa; }
.studio-barfloat { position: absolute; left: 0; top: 0; height: 12px; background: #ced4da; }
.studio-barnow { position: absolute; left: 0; top: 2px; height: 8px; background: #1f6fd1; }
.studio-barval { width: 80px; text-align: right; font-size: 0.9em; }
.studio-busy-on { color: #b35c00; font-weight: 600; }
.studio-busy-off { color: #1e7b34; }
.studio-verify { border-collapse: collapse; margin-top: 6px; }
.studio-verify td, .studio-verify th { border: 1px solid #dde1e6; padding: 3px 8px; text-align: left; }
.studio-notes { margin: 2px 0; padding-left: 20px; font-size: 0.9em; }
.studio-column { min-width: 560px; }
.studio-projector { font-size: 20px; }
.studio-projector .studio-column { min-width: 780px; }
.studio-projector .widget-label, .studio-projector .widget-readout, .studio-projector button,
.studio-projector select, .studio-projector .widget-html-content { font-size: 18px; }
.studio-projector .studio-layer-kind .widget-html-content { font-size: 14px; }
.studio-projector .studio-col-name { flex-basis: 230px !important; width: 230px !important; }
.studio-projector .studio-col-mode { flex-basis: 120px !important; width: 120px !important; }
.studio-projector .studio-col-size { flex-basis: 110px !important; width: 110px !important; }
.studio-projector .studio-col-sqnr { flex-basis: 90px !important; width: 90px !important; }
</style>"""

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
.studio-projector { font-size: 20px; }
.studio-projector .widget-label, .studio-projector .widget-readout, .studio-projector button,
.studio-projector select, .studio-projector .widget-html-content { font-size: 18px; }
</style>"""

"""Re-make docs/screenshot.png, the README's picture of the running app.

    .venv/bin/python docs/screenshot.py

Serves the app as `make app` does, loads digits-resnet, applies the full-integer preset,
drops one layer to 4 bits with the keyboard, exports ONNX (which is verified in onnxruntime)
and photographs the whole page at 1280 px wide, scrolled to the top.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from playwright.sync_api import sync_playwright  # noqa: E402
from voila_harness import launch_browser, open_app, voila_server  # noqa: E402


def main() -> None:
    with voila_server() as url, sync_playwright() as p:
        browser = launch_browser(p)
        page = open_app(browser, url, 1280, 800)
        page.select_option(".studio-picker select", "digits-resnet")
        page.wait_for_selector(".studio-row-9", timeout=30_000)
        page.select_option(".studio-preset select", "full-integer")
        page.wait_for_selector(".studio-metric-value[data-state=measured]", timeout=30_000)
        slider = page.query_selector(".studio-row-1 .studio-bits [role=slider]")
        slider.focus()
        for _ in range(4):
            slider.press("ArrowLeft")
            page.wait_for_timeout(200)
        page.wait_for_selector(".studio-busy-off", timeout=30_000)
        page.select_option(".studio-format select", label="ONNX (QDQ)")
        page.click("button:has-text('Export')")
        page.wait_for_selector(".studio-verify", timeout=60_000)
        page.set_viewport_size({"width": 1280, "height": 2000})
        page.evaluate("() => document.querySelectorAll('*').forEach((e) => { if (e.scrollTop) e.scrollTop = 0; })")
        page.wait_for_timeout(1500)  # the figures re-fit the taller page
        page.screenshot(path=str(ROOT / "docs" / "screenshot.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    main()

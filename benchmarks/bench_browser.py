"""Studio responsiveness measured in a real browser (Voilà + Debian's Chromium).

Prints, per sample model, the median time from a bit-slider key press on the first
layer to (a) the updated size on screen and (b) the updated, measured accuracy on
screen; and the time from a cold page load to the first usable slider.

    python benchmarks/bench_browser.py [--trials N] [--samples digits-mlp,...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT))

from voila_harness import launch_browser, voila_server  # noqa: E402

import studio  # noqa: E402

MEASURE_JS = """
async (key) => {
  const handle = document.querySelector('.studio-row-0 .studio-bits [role=slider]');
  const before = document.querySelector('.studio-bytes').dataset.bytes;
  const t0 = performance.now();
  handle.dispatchEvent(new KeyboardEvent('keydown', {key: key, keyCode: key === 'ArrowLeft' ? 37 : 39, bubbles: true}));
  let size = null, metric = null;
  while (performance.now() - t0 < 30000) {
    await new Promise(r => requestAnimationFrame(r));
    const bytes = document.querySelector('.studio-bytes');
    if (bytes && bytes.dataset.bytes !== before) {
      if (size === null) size = performance.now() - t0;
      const m = document.querySelector('.studio-metric-value[data-state=measured]');
      if (m) { metric = performance.now() - t0; break; }
    }
  }
  return [size, metric];
}
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--samples", default=",".join(studio.list_samples()))
    parser.add_argument("--preheat", action="store_true", help="serve with a preheated kernel pool, as `make app` does")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with voila_server(preheat=args.preheat) as url, sync_playwright() as p:
        browser = launch_browser(p)
        if args.preheat:
            time.sleep(20)  # let the pool kernel run the notebook before the first visit
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        start = time.perf_counter()
        page.goto(url, timeout=120_000)
        page.wait_for_selector(".studio-row-0 .studio-bits [role=slider]", timeout=120_000)
        first_slider = time.perf_counter() - start
        page.wait_for_selector(".studio-metric-value[data-state=measured]", timeout=60_000)
        first_accuracy = time.perf_counter() - start
        print(f"cold page load: first usable slider {first_slider:.2f} s, first measured accuracy {first_accuracy:.2f} s")
        print(f"{'sample':<15} {'slider->size ms':>16} {'slider->accuracy ms':>20}")
        for name in args.samples.split(","):
            page.select_option(".studio-picker select", name)
            first_layer = studio.load_sample(name)
            page.wait_for_selector(".studio-model-info:has-text('" + name + "')", timeout=60_000)
            page.wait_for_timeout(300)
            page.wait_for_selector(".studio-busy-off", timeout=60_000)
            page.focus(".studio-row-0 .studio-bits [role=slider]")
            sizes, metrics = [], []
            for i in range(args.trials):
                size_ms, metric_ms = page.evaluate(MEASURE_JS, "ArrowLeft" if i % 2 == 0 else "ArrowRight")
                if size_ms is not None:
                    sizes.append(size_ms)
                if metric_ms is not None:
                    metrics.append(metric_ms)
                page.wait_for_timeout(200)
            del first_layer
            med = lambda xs: f"{statistics.median(xs):.0f}" if xs else "n/a"  # noqa: E731
            print(f"{name:<15} {med(sizes):>16} {med(metrics):>20}")
        browser.close()


if __name__ == "__main__":
    main()

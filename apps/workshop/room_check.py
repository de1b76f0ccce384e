"""Can this machine serve the room? Open N workshop pages at once and measure.

    python apps/workshop/room_check.py --pages 8 --notebook 01-quantization.ipynb

Starts Voilà on apps/workshop with the settings that ``make workshop`` uses (the
test harness's server: same template and flags), opens N pages of one notebook at
once in Chromium (each page view gets its own kernel), waits until every page shows
all of its exercises, then prints each page's load time and each kernel's memory.
Needs Chromium at /usr/bin/chromium and Playwright (the test extras).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKSHOP = ROOT / "apps" / "workshop"
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

EXERCISE = re.compile(r"^(number|choice|text|plan)_exercise\(", re.M)


def exercise_count(notebook: Path) -> int:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return sum(len(EXERCISE.findall("".join(c["source"]))) for c in cells if c["cell_type"] == "code")


def kernel_memory(server_pid: int) -> list[dict[str, float]]:
    """Each kernel under the server: RSS and USS (memory no other process shares) in MB,
    and the CPU seconds it has used (starting up and running its notebook)."""
    import psutil

    rows = []
    for child in psutil.Process(server_pid).children(recursive=True):
        try:
            if "ipykernel" not in " ".join(child.cmdline()):
                continue
            info = child.memory_full_info()
            cpu = child.cpu_times()
            rows.append({"pid": child.pid, "rss_mb": info.rss / 2**20, "uss_mb": info.uss / 2**20, "cpu_s": cpu.user + cpu.system})
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=4, help="pages opened at once (default 4)")
    parser.add_argument("--notebook", default="01-quantization.ipynb", help="a notebook in apps/workshop")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the slowest page")
    parser.add_argument("--preheat", action="store_true", help="serve with one preheated kernel per notebook, and open the pages once it is warm")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    notebook = WORKSHOP / args.notebook
    if not notebook.is_file() or notebook.suffix != ".ipynb":
        parser.error(f"no notebook {args.notebook!r} in {WORKSHOP}; pick one of {sorted(p.name for p in WORKSHOP.glob('*.ipynb'))}")
    if args.pages < 1:
        parser.error("--pages must be at least 1")

    import psutil
    from playwright.sync_api import sync_playwright
    from voila_harness import launch_browser, voila_server

    expected = exercise_count(notebook)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # this checkout's studio
    with voila_server("apps/workshop", preheat=args.preheat) as url, sync_playwright() as p:
        server = next(c for c in psutil.Process().children() if "voila" in " ".join(c.cmdline()))
        warm_s = None
        if args.preheat:  # wait until every notebook's pool kernel has run its notebook (and gone idle)
            begin = time.perf_counter()
            count = len(list(WORKSHOP.glob("*.ipynb")))
            while True:
                kernels = kernel_memory(server.pid)
                idle = len(kernels) >= count and all(psutil.Process(k["pid"]).cpu_percent(interval=0.5) < 5 for k in kernels)
                if idle or time.perf_counter() - begin > args.timeout:
                    break
                time.sleep(2)
            warm_s = time.perf_counter() - begin
        browser = launch_browser(p)
        pages = [browser.new_page(viewport={"width": 1280, "height": 800}) for _ in range(args.pages)]
        start = time.perf_counter()
        for page in pages:  # all requests go out before any page is waited on
            page.goto(f"{url}voila/render/{args.notebook}", wait_until="commit", timeout=args.timeout * 1000)
        loaded = []
        for page in pages:
            left = max(1.0, args.timeout - (time.perf_counter() - start))
            page.wait_for_function(
                "n => document.querySelectorAll('.workshop-check').length >= n", arg=expected, timeout=left * 1000, polling=250
            )
            loaded.append(time.perf_counter() - start)
        kernels = kernel_memory(server.pid)
        server_mb = server.memory_info().rss / 2**20
        browser.close()

    result = {
        "notebook": args.notebook,
        "pages": args.pages,
        "load_s": [round(t, 1) for t in loaded],
        "load_median_s": round(statistics.median(loaded), 1),
        "load_max_s": round(max(loaded), 1),
        "kernels": len(kernels),
        "kernel_rss_mb": [round(k["rss_mb"]) for k in kernels],
        "kernel_uss_mb": [round(k["uss_mb"]) for k in kernels],
        "kernel_cpu_s": [round(k["cpu_s"], 1) for k in kernels],
        "preheat_warm_s": None if warm_s is None else round(warm_s, 1),
        "server_rss_mb": round(server_mb),
        "cpus": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.pages} page(s) of {args.notebook} at once on {result['cpus']} CPUs, {result['memory_gb']} GB")
    print(f"  load time: median {result['load_median_s']} s, slowest {result['load_max_s']} s  ({result['load_s']})")
    rss, uss = result["kernel_rss_mb"], result["kernel_uss_mb"]
    if rss:
        print(f"  kernels: {len(rss)}, RSS median {statistics.median(rss):.0f} MB, USS median {statistics.median(uss):.0f} MB, "
              f"CPU median {statistics.median(result['kernel_cpu_s']):.1f} s")
    if warm_s is not None:
        print(f"  preheated pool warm after {result['preheat_warm_s']} s")
    print(f"  Voilà server RSS: {result['server_rss_mb']} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

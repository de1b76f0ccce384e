"""Serve the app with Voilà on 127.0.0.1 and drive Debian's Chromium with Playwright.

Shared by tests/test_browser.py and benchmarks/bench_browser.py.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def voila_server(notebook: str = "apps/studio.ipynb", timeout: float = 120, preheat: bool = False) -> Iterator[str]:
    """Start Voilà as `make app` does (same template and settings) and yield its URL."""
    port = free_port()
    env = dict(os.environ, JUPYTER_PATH=str(ROOT / "apps" / "jupyter"))
    cmd = [
        sys.executable, "-m", "voila", notebook, "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
        "--template=studio", "--MappingKernelManager.cull_idle_timeout=300",
        "--MappingKernelManager.cull_interval=60",
        "--Voila.tornado_settings={'websocket_max_message_size': 209715200}",
    ]
    if preheat:
        cmd += ["--preheat_kernel=True", "--pool_size=1"]
    log = open(ROOT / "test-artifacts" / "voila.log", "w") if (ROOT / "test-artifacts").is_dir() else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                urllib.request.urlopen(url + "voila/static/voila.js", timeout=2)
                break
            except urllib.error.HTTPError:  # any HTTP answer: the server is up
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("Voilà did not start") from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def launch_browser(playwright):  # type: ignore[no-untyped-def]
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)


def open_app(browser, url: str, width: int = 1280, height: int = 800, attempts: int = 2):  # type: ignore[no-untyped-def]
    """A page with the Studio loaded and its first slider usable; one retry (voila#1395)."""
    for attempt in range(attempts):
        page = browser.new_page(viewport={"width": width, "height": height}, accept_downloads=True)
        try:
            page.goto(url, timeout=90_000)
            page.wait_for_selector(".studio-row-0 .studio-bits [role=slider]", timeout=90_000)
            page.wait_for_selector(".studio-metric-value[data-state=measured]", timeout=60_000)
            return page
        except Exception:
            page.close()
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def shown_bytes(page) -> int:  # type: ignore[no-untyped-def]
    return int(page.get_attribute(".studio-bytes", "data-bytes"))


def shown_metric(page) -> float | None:  # type: ignore[no-untyped-def]
    el = page.query_selector(".studio-metric-value[data-state=measured]")
    return None if el is None else float(el.get_attribute("data-value"))

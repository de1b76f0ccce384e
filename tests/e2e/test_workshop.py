"""The workshop notebooks: each runs top to bottom headless, and in Chromium against
Voilà an exercise is answered through its widgets and shows the ✓.

The kernels import this checkout's ``studio`` (PYTHONPATH), whatever is installed.
"""

import json
import os
import re
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from voila_harness import CHROMIUM, ROOT, launch_browser, voila_server

WORKSHOP = ROOT / "apps" / "workshop"
NOTEBOOKS = sorted(WORKSHOP.glob("*.ipynb"))
ARTIFACTS = ROOT / "test-artifacts"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def this_checkout(monkeypatch):
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT)] + ([path] if path else [])))


def run_notebook(path: Path) -> tuple[nbformat.NotebookNode, float]:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb, time.perf_counter() - start


def outputs(nb: nbformat.NotebookNode) -> list:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]


def test_the_workshop_has_its_notebooks():
    names = [p.name for p in NOTEBOOKS]
    assert {"01-quantization.ipynb", "02-pruning.ipynb", "03-sizes-and-huffman.ipynb", "04-budget.ipynb", "05-deploy.ipynb"} <= set(names)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, this_checkout):
    nb, seconds = run_notebook(path)
    outs = outputs(nb)
    assert not [o for o in outs if o.output_type == "error"]
    assert not [o for o in outs if o.output_type == "stream" and o.name == "stderr" and "Traceback" in o.text]
    # every exercise is a widget, and the notebook has at least three
    code = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    exercises = sum(len(re.findall(r"^(number|choice|text|plan)_exercise\(", src, re.M)) for src in code)
    assert exercises >= 3
    widget_cells = [cell for cell in nb.cells if cell.cell_type == "code" and any(WIDGET_VIEW in o.get("data", {}) for o in cell.outputs)]
    assert len(widget_cells) >= exercises + 1  # the header, and each exercise
    assert seconds < 120, f"{path.name} took {seconds:.0f} s; keep each notebook to tens of seconds"


# -- in a browser -----------------------------------------------------------------------
def chromium_or_skip() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            raise RuntimeError(f"{CHROMIUM} is missing in CI; `make test` should have installed it")
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")


def wait_loaded(page) -> None:  # type: ignore[no-untyped-def]
    """The quantization notebook has run to its last exercise and drawn its figure."""
    page.wait_for_selector(".workshop-exercise-fewest-bits .workshop-check", timeout=180_000)
    page.wait_for_selector(".workshop-lab-quant .js-plotly-plot", timeout=60_000)


def reopen(browser, url: str):  # type: ignore[no-untyped-def]
    """One retry in a fresh page when a first load stalls (voila#1395)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url, timeout=180_000)
    wait_loaded(page)
    return page


@pytest.mark.browser
@pytest.mark.slow
def test_index_open_a_notebook_and_answer_an_exercise(this_checkout):
    chromium_or_skip()
    from playwright.sync_api import sync_playwright

    import studio
    from studio.workshop.measure import granularity_gap

    sample = studio.load_sample("digits-cnn")
    gaps = granularity_gap(studio.Session(sample.model, sample.eval_data), bits=4)
    worst = max(gaps, key=gaps.get)
    wrong = min(gaps, key=gaps.get)

    ARTIFACTS.mkdir(exist_ok=True)
    with voila_server("apps/workshop") as url, sync_playwright() as p:
        browser = launch_browser(p)
        # the index lists every notebook in the folder
        index = browser.new_page(viewport={"width": 1280, "height": 800})
        index_external: list[str] = []
        index.on("request", lambda r: index_external.append(r.url) if not r.url.startswith(("http://127.0.0.1", "data:", "blob:")) else None)
        index.goto(url, timeout=60_000)
        for path in NOTEBOOKS:
            index.wait_for_selector(f"text={path.name}", timeout=30_000)
        index.screenshot(path=str(ARTIFACTS / "workshop-index.png"))
        assert index_external == []  # the page list works offline too (no CDN stylesheet)
        with index.context.expect_page(timeout=30_000) as opened:  # the tree opens notebooks in a new tab
            index.click("text=01-quantization.ipynb")
        page = opened.value
        assert page.url.split("?")[0] == url + "voila/render/01-quantization.ipynb"
        page.set_viewport_size({"width": 1280, "height": 900})
        try:
            wait_loaded(page)
        except Exception:
            page.close()
            page = reopen(browser, url + "voila/render/01-quantization.ipynb")
        external: list[str] = []
        page.on("request", lambda r: external.append(r.url) if not r.url.startswith(("http://127.0.0.1", "data:", "blob:")) else None)
        # every notebook of the folder is in the navigation strip; this one is current
        assert page.locator(".workshop-nav-item").count() == len(NOTEBOOKS)
        assert "Quantization" in page.inner_text(".workshop-nav-current")

        # a dropdown exercise: a wrong answer gets a hint, the right one a ✓
        box = ".workshop-exercise-per-tensor"
        page.select_option(f"{box} select", wrong)
        page.click(f"{box} .workshop-check")
        hint = page.wait_for_selector(f"{box} .workshop-verdict[data-ok=false]", timeout=15_000)
        assert "Not yet" in hint.inner_text() and "per tensor" in hint.inner_text()
        page.select_option(f"{box} select", worst)
        page.wait_for_selector(f"{box} .workshop-verdict", state="detached", timeout=15_000)  # the old hint goes
        page.click(f"{box} .workshop-check")
        tick = page.wait_for_selector(f"{box} .workshop-verdict[data-ok=true]", timeout=15_000)
        assert tick.inner_text().startswith("✓") and worst in tick.inner_text()
        tick.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "workshop-exercise-tick.png"))

        # a slider exercise by keyboard: Home = 2 levels, five steps right = 7
        box = ".workshop-exercise-levels"
        handle = page.locator(f"{box} [role=slider]")
        handle.focus()
        for key in ["Home"] + ["ArrowRight"] * 5:
            handle.press(key)
            page.wait_for_timeout(100)
        page.wait_for_selector(f"{box} .widget-readout:has-text('7')", timeout=10_000)
        page.click(f"{box} .workshop-check")
        page.wait_for_selector(f"{box} .workshop-verdict[data-ok=true]", timeout=15_000)

        # projector size: larger text for the room
        before = page.evaluate("() => parseFloat(getComputedStyle(document.querySelector('.jp-RenderedMarkdown')).fontSize)")
        page.click(".workshop-projector")
        page.wait_for_function(
            "b => parseFloat(getComputedStyle(document.querySelector('.jp-RenderedMarkdown')).fontSize) > b + 4", arg=before, timeout=10_000
        )
        page.locator(".workshop-lab-quant").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "workshop-projector.png"))
        assert external == []
        browser.close()


@pytest.mark.browser
@pytest.mark.slow
def test_budget_notebook_checks_a_hand_made_plan(this_checkout):
    """Notebook 4 in Chromium: a plan picked with the drop-downs gets a hint while it misses
    the budget and the ✓ once it fits; the figure's star follows the picked plan."""
    chromium_or_skip()
    from playwright.sync_api import sync_playwright

    import studio
    from studio.workshop.budget import plan_of

    sample = studio.load_sample("digits-cnn")
    session = studio.Session(sample.model, sample.eval_data)
    good = (8, 4, 3, 4)  # features.0, features.3, features.7, classifier.1
    report = session.evaluate(plan_of(session, good))
    assert report.size_bytes <= 10_000 and -report.delta <= 0.01  # the engine's own verdict on the plan used below

    ARTIFACTS.mkdir(exist_ok=True)
    with voila_server("apps/workshop") as url, sync_playwright() as p:
        browser = launch_browser(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url + "voila/render/04-budget.ipynb", timeout=240_000)
        page.wait_for_selector(".workshop-exercise-per-image .workshop-check", timeout=240_000)
        page.wait_for_selector(".workshop-front .js-plotly-plot", timeout=60_000)
        assert "Finding a plan" in page.inner_text(".workshop-nav-current")
        assert page.locator(".studio-heat td").count() > 0 and page.locator(".workshop-front-table tr").count() > 1

        box = ".workshop-exercise-hand-plan"
        selects = page.locator(f"{box} select")
        assert selects.count() == len(session.layer_names)
        for i in range(selects.count()):  # every layer at 4 bits: over 10 KB and over a point lost
            selects.nth(i).select_option(label="4 bits")
        all_four = session.evaluate(plan_of(session, (4, 4, 4, 4))).size_bytes / 1000
        page.wait_for_selector(f"{box} .workshop-readout:has-text('{all_four:.2f}')", timeout=20_000)
        page.click(f"{box} .workshop-check")
        hint = page.wait_for_selector(f"{box} .workshop-verdict[data-ok=false]", timeout=20_000)
        assert "Too big and too inaccurate" in hint.inner_text() and "features.7 is" in hint.inner_text()
        for i, bits in enumerate(good):
            selects.nth(i).select_option(label=f"{bits} bits")
        page.wait_for_selector(f"{box} .workshop-verdict", state="detached", timeout=15_000)  # the old hint goes
        page.wait_for_selector(f".workshop-front .workshop-readout:has-text('{report.size_bytes / 1000:.2f}')", timeout=20_000)
        page.click(f"{box} .workshop-check")
        tick = page.wait_for_selector(f"{box} .workshop-verdict[data-ok=true]", timeout=20_000)
        assert tick.inner_text().startswith("✓") and f"{report.size_bytes / 1000:.2f} KB" in tick.inner_text()
        page.locator(".workshop-front").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "workshop-budget.png"))
        browser.close()


# -- the room check script ----------------------------------------------------------------
def load_room_check():  # type: ignore[no-untyped-def]
    import importlib.util

    spec = importlib.util.spec_from_file_location("room_check", WORKSHOP / "room_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_room_check_refuses_a_missing_notebook(capsys):
    room_check = load_room_check()
    with pytest.raises(SystemExit) as exit_info:
        room_check.main(["--notebook", "04-missing.ipynb"])
    assert exit_info.value.code == 2 and "no notebook '04-missing.ipynb'" in capsys.readouterr().err
    assert room_check.exercise_count(WORKSHOP / "01-quantization.ipynb") == 5


@pytest.mark.browser
@pytest.mark.slow
def test_room_check_measures_a_page(capsys, this_checkout):
    chromium_or_skip()
    room_check = load_room_check()
    assert room_check.main(["--pages", "1", "--notebook", "03-sizes-and-huffman.ipynb", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["pages"] == 1 and len(result["load_s"]) == 1 and 0 < result["load_s"][0] < 600
    assert result["kernels"] == 1 and 100 < result["kernel_rss_mb"][0] < 5000 and result["kernel_cpu_s"][0] > 0

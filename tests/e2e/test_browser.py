"""A real browser against Voilà: Debian's Chromium driven by Playwright.

Skipped only outside CI when Chromium is missing; in CI (CI=true) a missing
Chromium fails the run, because `make test` installs it.
"""

import json
import os
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from voila_harness import CHROMIUM, ROOT, launch_browser, open_app, shown_bytes, shown_metric, voila_server

import studio
from studio.engine import Plan

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ARTIFACTS = ROOT / "test-artifacts"

# History points by their marker colour (figures.HISTORY_KINDS); Plotly does not name its traces in the page.
MEASURED = ".studio-panel-history .scatterlayer path.point[style*='154, 165, 177']"
SEARCHED = ".studio-panel-history .scatterlayer path.point[style*='112, 72, 232']"
RECOVERED = ".studio-panel-history .scatterlayer path.point[style*='47, 158, 68']"
FRONT = ".studio-panel-history .scatterlayer path.point[style*='31, 111, 209']"
ZOOM_ON_SEARCHED = """() => {
    const gd = document.querySelector('.studio-panel-history .js-plotly-plot');
    const xs = gd.data.filter((t) => t.name === 'search candidates').flatMap((t) => t.x);
    const lo = Math.min(...xs), hi = Math.max(...xs), pad = Math.max(0.05, (hi - lo) * 0.1);
    return window.Plotly.relayout(gd, {'xaxis.range': [lo - pad, hi + pad]});
}"""
RECORD_CLICKS = """() => {
    const gd = document.querySelector('.studio-panel-history .js-plotly-plot');
    window.__clicks = [];
    gd.on('plotly_click', (d) => window.__clicks.push(d.points.map((p) => [p.curveNumber, p.pointNumber, p.customdata])));
}"""
HISTORY_STATE = """() => {  // what the page's History held, for a failed restore's message
    const gd = document.querySelector('.studio-panel-history .js-plotly-plot');
    return {clicks: window.__clicks || null, hovermode: gd._fullLayout.hovermode, range: gd._fullLayout.xaxis.range,
            traces: gd.data.map((t) => [t.name, t.x, t.y, t.customdata]),
            plots: [...document.querySelectorAll('.studio-panel-history .js-plotly-plot')].map((g) => g.data.map((t) => (t.x || []).length))};
}"""
CURVE_LOSS = ".studio-panel-recovery .scatterlayer path.point[style*='134, 142, 150']"
CURVE_METRIC = ".studio-panel-recovery .scatterlayer path.point[style*='47, 158, 68']"

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing in CI; `make test` should have installed it")
    pytest.skip("Chromium is not installed (apt-get install -y chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with voila_server() as url, sync_playwright() as p:
        browser = launch_browser(p)
        external: list[str] = []
        pg = open_app(browser, url)
        pg.on("request", lambda r: external.append(r.url) if not r.url.startswith(("http://127.0.0.1", "data:", "blob:")) else None)
        pg.external_requests = external
        console: list[str] = []  # the page's console, for failure messages
        pg.on("console", lambda m: console.append(f"{m.type}: {m.text}"[:400]))
        pg.on("pageerror", lambda e: console.append(f"pageerror: {e}"[:400]))
        pg.console = console
        pg.studio_url = url
        yield pg
        browser.close()


def wait_measured(page, plan_bytes: int, timeout: int = 30_000) -> None:
    page.wait_for_selector(f".studio-bytes[data-bytes='{plan_bytes}']", state="attached", timeout=timeout)
    page.wait_for_selector(".studio-metric-value[data-state=measured]", timeout=timeout)


def press(handle, *keys: str) -> None:
    """Key presses at a brisk human pace (a few per second)."""
    for key in keys:
        handle.press(key)
        handle.page.wait_for_timeout(150)


def test_pick_move_restore_download(page, tmp_path):
    sample = studio.load_sample("digits-cnn")
    session = studio.Session(sample.model, sample.eval_data)

    # pick a sample
    page.select_option(".studio-picker select", "digits-cnn")
    page.wait_for_selector(".studio-model-info:has-text('digits-cnn')", timeout=30_000)
    page.wait_for_selector(".studio-row-0 .studio-layer-select:has-text('features.0')", timeout=30_000)
    wait_measured(page, session.size(Plan()).size_bytes)
    page.wait_for_selector(".studio-busy-off", timeout=30_000)
    assert shown_metric(page) == pytest.approx(session.baseline_metric, abs=1e-6)

    # move the first layer's bit slider with the keyboard: Home = 2 bits, then two steps right = 4 bits
    handle = page.locator(".studio-row-0 .studio-bits [role=slider]")
    handle.focus()
    press(handle, "Home", "ArrowRight", "ArrowRight")
    page.wait_for_selector(".studio-row-0 .studio-bits .widget-readout:has-text('4')", timeout=10_000)
    plan = Plan().with_layer("features.0", bits=4)
    expected = session.evaluate(plan)
    wait_measured(page, expected.size_bytes)
    page.wait_for_function(
        "v => { const e = document.querySelector('.studio-metric-value[data-state=measured]'); return e && Math.abs(parseFloat(e.dataset.value) - v) < 1e-6 }",
        arg=expected.metric, timeout=30_000,
    )
    assert shown_bytes(page) == expected.size_bytes
    assert shown_metric(page) == pytest.approx(expected.metric, abs=1e-6)
    page.screenshot(path=str(ARTIFACTS / "studio-1280x800.png"), full_page=True)

    # click the float plan's point in the history to restore it
    page.wait_for_selector(MEASURED, timeout=10_000)
    point = page.locator(MEASURED).first
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    float_bytes = session.size(Plan()).size_bytes
    page.wait_for_selector(f".studio-bytes[data-bytes='{float_bytes}']", state="attached", timeout=15_000)
    page.wait_for_selector(".studio-row-0 .studio-bits .widget-readout:has-text('float')", timeout=10_000)

    # restore the 4-bit plan by keyboard again, then download the plan JSON
    handle.focus()
    press(handle, "Home", "ArrowRight", "ArrowRight")
    wait_measured(page, expected.size_bytes)
    page.click(".studio-export")
    link = page.wait_for_selector("a.studio-download", timeout=15_000)
    with page.expect_download() as info:
        link.click()
    target = tmp_path / "plan.json"
    info.value.save_as(target)
    assert Plan.from_json(target.read_text()) == plan
    assert json.loads(target.read_text())["layers"]["features.0"]["bits"] == 4
    assert page.external_requests == []


FIGURES_FILL_PANELS = """() => [...document.querySelectorAll('.studio-panel')].filter(p => p.querySelector('.main-svg')).every(
    p => p.querySelector('.main-svg').getBoundingClientRect().width > p.getBoundingClientRect().width - 60)"""


def test_figures_catch_up_with_updates_sent_while_they_were_first_drawn(page):
    # picking a sample at once sends figure updates while plotly.js still draws the first views;
    # without keep_views_current, three page loads in four kept a stale histogram or History.
    # Two pages must catch up, out of at most three: now and then a History view on a fresh page
    # draws no edit at all after its first state (a front-end fault, see the fit-to-budget test).
    stale: list[str] = []
    for i in range(3):
        fresh = open_app(page.context.browser, page.studio_url)
        try:
            fresh.select_option(".studio-picker select", "digits-resnet")
            fresh.wait_for_selector(".studio-row-9", timeout=30_000)
            fresh.select_option(".studio-preset select", "full-integer")
            fresh.wait_for_selector(".studio-metric-value[data-state=measured]", timeout=30_000)
            fresh.wait_for_selector(".studio-panel-histogram .gtitle:has-text('stem.0: int8')", state="attached", timeout=15_000)
            fresh.wait_for_function("sel => document.querySelectorAll(sel).length >= 2", arg=MEASURED, timeout=15_000)
        except PlaywrightTimeout:
            stale.append(str(fresh.evaluate(HISTORY_STATE)))
        finally:
            fresh.close()
        assert len(stale) < 2, f"two fresh pages kept stale figures: {stale}"
        if i == 1 and not stale:  # two pages caught up
            break


def test_projector_layout_and_figures_follow_their_panels(page):
    page.set_viewport_size({"width": 1920, "height": 1080})
    page.click("text=Projector size")
    page.wait_for_selector(".studio-projector", timeout=10_000)
    page.wait_for_function(FIGURES_FILL_PANELS, timeout=10_000)  # the figures re-fit the wider panels
    page.screenshot(path=str(ARTIFACTS / "studio-projector-1920x1080.png"), full_page=True)
    # a 1280-wide projector: larger text, one column, figures as wide as the page
    page.set_viewport_size({"width": 1280, "height": 800})
    page.wait_for_function("() => document.querySelector('.studio-column:last-child').getBoundingClientRect().top > 300", timeout=10_000)
    page.wait_for_function(FIGURES_FILL_PANELS, timeout=10_000)
    page.screenshot(path=str(ARTIFACTS / "studio-projector-1280x800.png"), full_page=True)
    page.click("text=Projector size")
    page.wait_for_function("() => !document.querySelector('.studio-projector')", timeout=10_000)
    page.wait_for_function(FIGURES_FILL_PANELS, timeout=10_000)


@pytest.mark.parametrize("name", studio.list_samples())
def test_every_sample_in_the_browser(page, name):
    sample = studio.load_sample(name)
    session = studio.Session(sample.model, sample.eval_data)
    first, second = session.layer_names[0], session.layer_names[1]
    page.select_option(".studio-picker select", name)
    page.wait_for_selector(f".studio-row-0 .studio-layer-select:has-text('{first}')", timeout=30_000)
    page.wait_for_selector(f".studio-model-info:has-text('{name}')", timeout=30_000)
    page.wait_for_selector(".studio-busy-off", timeout=30_000)
    # Layers: the second layer to 3 bits by keyboard (Home = 2 bits, one step right)
    handle = page.locator(".studio-row-1 .studio-bits [role=slider]")
    handle.focus()
    press(handle, "Home", "ArrowRight")
    plan = Plan().with_layer(second, bits=3)
    expected = session.evaluate(plan)
    wait_measured(page, expected.size_bytes)
    page.wait_for_function(
        "v => { const e = document.querySelector('.studio-metric-value[data-state=measured]'); return e && Math.abs(parseFloat(e.dataset.value) - v) < 1e-6 }",
        arg=expected.metric, timeout=30_000,
    )
    # Histogram: select the second layer, its title follows
    page.click(".studio-row-1 .studio-layer-select")
    page.wait_for_selector(f".studio-panel-histogram .gtitle:has-text('{second}: int3')", timeout=15_000)
    # Metrics: per-layer bars list every layer; History: the float plan and this one
    assert page.locator(".studio-barrow").count() == len(session.layer_names)
    page.wait_for_function("sel => document.querySelectorAll(sel).length >= 2", arg=MEASURED, timeout=15_000)
    # Export: the studio file, verified in its runtime, is exactly the estimated size
    page.select_option(".studio-format select", label="studio (compressed)")
    page.click(".studio-export")
    page.wait_for_selector(f".studio-verify td[data-bytes='{expected.size_bytes}']", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / f"studio-{name}.png"), full_page=True)
    page.select_option(".studio-format select", label="plan (JSON)")


def _measure_and_fit(page, session) -> bool:
    """Load digits-cnn, measure the heatmap, fit to 8x smaller; whether History then shows the search."""
    page.select_option(".studio-picker select", "digits-cnn")
    page.wait_for_selector(".studio-model-info:has-text('digits-cnn')", timeout=30_000)
    page.wait_for_selector(".studio-busy-off", timeout=30_000)
    # the heatmap: every layer x 5 bit widths, measured
    page.click(".studio-measure")
    page.wait_for_selector(".studio-heat[data-mode=measured]", timeout=120_000)
    assert page.locator(".studio-heat tr").count() == 1 + len(session.layer_names)
    cell = page.locator(".studio-heat tr:has-text('features.7') td").nth(1)  # 3 bits
    expected = session.evaluate(Plan().with_layer("features.7", bits=3))
    assert float(cell.get_attribute("data-value")) == pytest.approx(-(expected.metric - expected.baseline_metric), abs=1e-6)
    assert "saves" in cell.get_attribute("title")
    # Fit to budget: at least 8x smaller; the searched front appears in History
    page.select_option(".studio-panel-guidance .widget-dropdown select", label="size ratio (×)")
    page.fill(".studio-budget input", "8")
    page.press(".studio-budget input", "Enter")
    page.click(".studio-fit")
    page.wait_for_selector(".studio-search", timeout=180_000)
    ratio = float(page.get_attribute(".studio-search", "data-ratio"))
    assert ratio >= 8
    try:
        page.wait_for_function("sel => document.querySelectorAll(sel).length > 3", arg=SEARCHED, timeout=30_000)
    except PlaywrightTimeout:
        return False
    return True


def _fit_and_restore(page, session) -> str:
    """Fit to budget, then restore a searched point by clicking it: "" when both show, else what failed."""
    if not _measure_and_fit(page, session):
        return f"History does not show the searched plans: {page.evaluate(HISTORY_STATE)} {page.inner_text('.studio-search')}"
    page.wait_for_selector(".studio-metric-value[data-state=measured]", timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "studio-guidance.png"), full_page=True)
    # the front now holds searched plans (one may dominate every other point, the float model's too)
    searched_at = [_centre(page.locator(SEARCHED).nth(i)) for i in range(page.locator(SEARCHED).count())]
    front_at = [_centre(page.locator(FRONT).nth(i)) for i in range(page.locator(FRONT).count())]
    assert any(abs(fx - sx) < 1.5 and abs(fy - sy) < 1.5 for fx, fy in front_at for sx, sy in searched_at)
    # restore a searched point: the numbers shown are the engine's for that plan (candidates may share
    # a size, e.g. two clip methods, so a restore shows in the size or in the metric)
    page.wait_for_selector(".studio-busy-off", timeout=60_000)  # History settles before points are clicked
    chosen = (shown_bytes(page), shown_metric(page))
    page.evaluate(RECORD_CLICKS)
    for _attempt in range(2):  # a loaded machine may redraw History between a zoom and a click
        # the candidates lie within a few hundred bytes of each other: zoom History onto them so that
        # each can be clicked on its own (the float model's point keeps the axis 100 KB wide)
        page.evaluate(ZOOM_ON_SEARCHED)
        page.wait_for_timeout(500)
        for i in range(page.locator(SEARCHED).count()):  # the chosen plan's own point lies under the star
            point = page.locator(SEARCHED).nth(i)
            point.scroll_into_view_if_needed()
            box = point.bounding_box()
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            if _shows_other_than(page, chosen, seconds=10):  # the kernel may be slow to answer a click
                return ""
    return f"no click on a searched point restored another plan than {chosen}: {page.evaluate(HISTORY_STATE)}"


def test_sensitivity_and_fit_to_budget_in_the_browser(page):
    sample = studio.load_sample("digits-cnn")
    session = studio.Session(sample.model, sample.eval_data)
    failed = _fit_and_restore(page, session)
    if failed:
        # Now and then, on the first run after this machine was idle, History misbehaves on a freshly
        # loaded page although the kernel is right: its view draws its first state and no edit after
        # it (the kernel sent every edit: seen in the websocket's frames), or plotly reports clicks on
        # searched points and no plan is restored. The cause lies in the front end (plotly's
        # FigureWidget view under anywidget) and was not found. A new page, with a new kernel, must
        # do both.
        page = open_app(page.context.browser, page.studio_url)
        again = _fit_and_restore(page, session)
        assert not again, f"on two pages: {failed} / {again}"
    restored_bytes, restored_metric = shown_bytes(page), shown_metric(page)
    assert any(abs(restored_metric - m) < 1e-6 for m in [session.evaluate(p).metric for p in _searched_plans(session, restored_bytes)])
    page.evaluate("() => window.Plotly.relayout(document.querySelector('.studio-panel-history .js-plotly-plot'), {'xaxis.autorange': true})")


def _shows_other_than(page, shown, seconds):
    """Whether the page comes to show another (bytes, metric) than ``shown`` within ``seconds``."""
    for _ in range(int(seconds * 4)):
        page.wait_for_timeout(250)
        if page.locator(".studio-busy-off").count() and (shown_bytes(page), shown_metric(page)) != shown:
            return True
    return False


def _centre(locator):
    box = locator.bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def _searched_plans(session, size_bytes):
    """Plans of the search that have this size (the GUI ran the same deterministic search)."""
    result = session.search(target_size=8.0)
    return [c.plan for c in result.candidates if c.size_bytes == size_bytes]


def test_recovery_in_the_browser(page, tmp_path):
    page.select_option(".studio-picker select", "digits-mlp")
    page.wait_for_selector(".studio-model-info:has-text('digits-mlp')", timeout=30_000)
    page.wait_for_selector(".studio-busy-off", timeout=30_000)
    page.select_option(".studio-preset select", "16x8")
    handle = page.locator(".studio-all-bits [role=slider]")
    handle.focus()
    press(handle, "Home")  # every layer at 2 bits
    page.wait_for_selector(".studio-row-0 .studio-bits .widget-readout:has-text('2')", timeout=10_000)
    page.wait_for_selector(".studio-busy-off", timeout=30_000)
    before = shown_metric(page)
    page.fill(".studio-epochs input", "60")
    page.press(".studio-epochs input", "Enter")
    page.click(".studio-start-recovery")
    page.wait_for_selector(".studio-panel-recovery .js-plotly-plot", timeout=60_000)
    page.wait_for_function("sel => document.querySelectorAll(sel).length >= 1", arg=CURVE_LOSS, timeout=60_000)
    page.click(".studio-cancel-recovery")
    page.wait_for_selector(".studio-start-recovery:not([disabled])", timeout=30_000)
    assert page.locator(".studio-recovered").count() == 0  # cancelled: nothing changed
    page.fill(".studio-epochs input", "3")
    page.press(".studio-epochs input", "Enter")
    page.click(".studio-start-recovery")
    page.wait_for_selector(".studio-recovered", timeout=120_000)
    page.wait_for_function("sel => document.querySelectorAll(sel).length === 4", arg=CURVE_METRIC, timeout=30_000)
    page.wait_for_selector(".studio-busy-off", timeout=60_000)
    after = shown_metric(page)
    assert after > before
    page.wait_for_selector(RECOVERED, timeout=30_000)  # ▲ recovered
    page.screenshot(path=str(ARTIFACTS / "studio-recovery.png"), full_page=True)
    # the recovered model exports and verifies like any other
    page.select_option(".studio-format select", label="studio (compressed)")
    page.click(".studio-export")
    page.wait_for_selector(".studio-verify td[data-metric]", timeout=60_000)
    assert float(page.get_attribute(".studio-verify td[data-metric]", "data-metric")) == pytest.approx(after, abs=1e-6)
    page.click(".studio-undo-recovery")
    page.wait_for_function("() => !document.querySelector('.studio-recovered')", timeout=30_000)
    page.select_option(".studio-format select", label="plan (JSON)")

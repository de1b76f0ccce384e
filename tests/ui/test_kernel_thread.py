"""Figure edits asked for on other threads reach the page: they run on the kernel's thread."""

import asyncio
import threading

import studio
from studio.engine import Plan
from studio.ui.kernel_thread import KernelThread


def test_an_update_asked_for_elsewhere_runs_once_on_the_kernels_thread():
    async def kernel_side() -> None:
        kernel = KernelThread()
        ran: list[int] = []

        def update() -> None:
            ran.append(threading.get_ident())

        other = threading.Thread(target=lambda: [kernel.run(update) for _ in range(5)])
        other.start()
        other.join()
        assert ran == []  # queued, not run on the other thread
        await asyncio.sleep(0.05)
        assert ran == [threading.get_ident()]  # once: it reads the state when it runs
        kernel.run(update)  # on the kernel's thread: at once
        assert len(ran) == 2
        kernel.later(0.01, update)
        await asyncio.sleep(0.05)
        assert ran == [threading.get_ident()] * 3

    asyncio.run(kernel_side())


def test_without_a_running_loop_updates_run_at_once():
    ran: list[int] = []
    KernelThread().run(lambda: ran.append(1))
    assert ran == [1]


def py2js_updates(sent: list[dict]) -> list[dict | None]:
    return [m["state"]["_py2js_update"] for m in sent if "_py2js_update" in m.get("state", {})]


def test_history_edits_from_the_evaluator_reach_the_page_while_a_views_message_is_applied():
    """ipywidgets holds a figure's notifications while it applies a view's message (a click, a
    zoom, a view's report). Plotly's edit on another thread meanwhile went out as None: History
    stayed on the float model after a search."""

    async def kernel_side() -> None:
        app = studio.Studio()  # made on the kernel's thread, as in a notebook or Voilà
        assert app.state.wait(60)
        sent: list[dict] = []
        app.history._send = lambda msg, buffers=None: sent.append(msg)
        with app.history.hold_trait_notifications():  # what Widget.set_state does
            other = threading.Thread(target=app.state.set_plan, args=(Plan.uniform(4),))
            other.start()
            other.join()
        assert py2js_updates(sent) == []  # the star's move waits for the kernel's thread
        await asyncio.sleep(0.1)
        edits = [u for u in py2js_updates(sent) if u is not None]
        assert edits, "the page never got History's edit"
        app.state.close()

    asyncio.run(kernel_side())


def test_the_hold_loses_an_edit_made_on_another_thread():
    """The hazard itself, so that the test above can fail: the same edit made directly."""
    app = studio.Studio()
    assert app.state.wait(60)
    sent: list[dict] = []
    app.history._send = lambda msg, buffers=None: sent.append(msg)
    with app.history.hold_trait_notifications():
        other = threading.Thread(target=app.state.set_plan, args=(Plan.uniform(4),))
        other.start()
        other.join()
    updates = py2js_updates(sent)
    assert updates and all(u is None for u in updates)
    app.state.close()

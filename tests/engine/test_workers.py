import threading
from concurrent.futures import ProcessPoolExecutor

import pytest
import torch

from studio.engine import Cancelled
from studio.engine.compress import compress_view
from studio.engine.plan import LayerSpec
from studio.engine.workers import on_one_thread, side_by_side


def test_tasks_run_on_one_pytorch_thread_off_the_caller_and_the_callers_count_stays():
    before = torch.get_num_threads()
    seen = side_by_side({str(i): lambda: (torch.get_num_threads(), threading.current_thread().name) for i in range(4)})
    assert sorted(seen) == ["0", "1", "2", "3"]
    assert all(threads == 1 and name.startswith("studio-compress") for threads, name in seen.values())
    assert torch.get_num_threads() == before


def test_results_come_back_by_name_and_match_compressing_in_place():
    torch.manual_seed(0)
    weights = {f"w{i}": torch.randn(64 + i, 300) for i in range(5)}
    spec = LayerSpec(bits=5, prune=0.3, cluster=True)
    made = side_by_side({k: (lambda w=w: compress_view(w, spec, True, 0)) for k, w in weights.items()}, cost={k: w.numel() for k, w in weights.items()})
    for name, w in weights.items():
        alone = compress_view(w, spec, True, 0)
        assert torch.equal(made[name].need_codes(), alone.need_codes()) and made[name].size == alone.size


def test_an_error_in_a_task_reaches_the_caller():
    def fail() -> int:
        raise ValueError("bad layer")

    with pytest.raises(ValueError, match="bad layer"):
        side_by_side({"a": lambda: 1, "b": fail})
    assert on_one_thread(lambda: 7) == 7  # the workers are still there


def test_cancelling_skips_the_tasks_not_started():
    ran = []
    with pytest.raises(Cancelled):
        side_by_side({str(i): (lambda i=i: ran.append(i)) for i in range(8)}, cancel=lambda: True)
    assert ran == []


def _compress_in_child(seed: int) -> int:
    torch.manual_seed(seed)
    return compress_view(torch.randn(32, 64), LayerSpec(bits=4), False, 0).size.total


def _child_compresses(seed: int) -> int:
    return on_one_thread(lambda: _compress_in_child(seed))


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="fork is POSIX")
def test_a_forked_child_gets_workers_of_its_own():
    import multiprocessing

    on_one_thread(lambda: 0)  # the parent's workers exist
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
    try:
        assert pool.submit(_child_compresses, 0).result(timeout=60) == _compress_in_child(0)  # a child waiting on no workers hangs
    finally:
        for process in list(pool._processes.values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)

"""One batch of one incremental pass, and the watch for weights used outside their module.

``BatchPass`` numbers the module calls of one batch, hands back kept outputs for calls that
lie wholly before the boundary, and keeps what the runner chose (see ``replay``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch.overrides import TorchFunctionMode

from .progress import CancelFn, Cancelled

if TYPE_CHECKING:
    from .replay import IncrementalRunner


class WeightUses(TorchFunctionMode):
    """Notes every compressible weight that an op uses outside that layer's own call."""

    def __init__(self, runner: IncrementalRunner) -> None:
        super().__init__()
        self.runner = runner

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        run = self.runner._run
        if run is not None:
            for arg in (*args, *kwargs.values()):
                layer = self.runner._param_layer.get(id(arg)) if isinstance(arg, torch.Tensor) else None
                if layer is not None and run.current_module not in self.runner._layer_mods[layer]:
                    self.runner._outside_uses.add(layer)
        return func(*args, **kwargs)


class BatchPass:
    """One batch of one pass: numbers the calls, replays what it can, keeps what it should."""

    def __init__(self, runner: IncrementalRunner, batch: int, boundary: int, cancel: CancelFn | None, tick: Callable[[int], None]) -> None:
        self.runner = runner
        self.batch = batch
        self.boundary = boundary
        self.prev = runner._traces[batch]
        self.cancel = cancel
        self.tick = tick
        self.counter = 0
        self.mods: list[int] = []
        self.ends: list[int] = []
        self.refreshed: set[int] = set()
        self.computed = 0
        self.replayed = 0
        self.times: list[float] = []
        self.sizes: dict[int, int] = {}  # call index -> output bytes (profiled passes)
        self.keep = True  # keep outputs (False for a pass whose outputs must not be reused)
        self.current_module = -1

    def call(self, idx: int, fwd: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.cancel is not None and self.cancel():
            raise Cancelled("cancelled")
        i, runner, prev = self.counter, self.runner, self.prev
        if i < self.boundary and prev is not None:
            if i < len(prev.mods) and prev.mods[i] == idx:
                end = prev.ends[i]
                entry = runner._store.get((self.batch, i)) if end <= self.boundary else None
                if entry is not None:
                    if entry.intact():
                        self.mods.extend(prev.mods[i:end])
                        self.ends.extend(prev.ends[i:end])
                        self.times.extend([0.0] * (end - i))
                        self.counter = end
                        self.replayed += end - i
                        self.tick(end)
                        return entry.handed()
                    runner._drop((self.batch, i))  # modified in place after it was kept: keep a copy from now on
                    (runner._copied if isinstance(entry.value, torch.Tensor) else runner._blacklist).add(i)
            else:  # the calls differ from the last pass before any change: replay nothing more
                self.boundary = i
                runner.notes.add("the model's module calls differed between identical passes, so this pass ran in full")
        self.counter += 1
        self.mods.append(idx)
        self.ends.append(-1)
        self.times.append(0.0)
        outer, self.current_module = self.current_module, idx
        start = time.perf_counter()
        try:
            out = runner._invoke(idx, fwd, args, kwargs)
        finally:
            self.current_module = outer
        self.times[i] = time.perf_counter() - start
        self.ends[i] = self.counter
        self.computed += 1
        runner._keep(self, i, out)
        self.tick(self.counter)
        return out

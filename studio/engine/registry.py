"""A name -> value registry with a decorator, used where an if/elif ladder would grow."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import StudioError

F = TypeVar("F")


class Registry(dict[str, F], Generic[F]):
    """``@REG.register("name")`` adds a function (or ``REG[name] = value``); ``REG.get_or_raise(name)`` explains a miss."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def register(self, name: str) -> Callable[[F], F]:
        def deco(fn: F) -> F:
            self[name] = fn
            return fn

        return deco

    def get_or_raise(self, name: str) -> F:
        if name not in self:
            raise StudioError(f"unknown {self.what} {name!r}; available: {list(self)}")
        return self[name]

    def names(self) -> list[str]:
        return list(self)

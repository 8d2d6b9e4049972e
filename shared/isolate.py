"""Per-isolate state: one object per Worker env, kept between requests.

Python Workers build a new entrypoint instance per request, so what must outlive a request
(route caches, derived keys, compiled route tables) hangs off the env the isolate was given.
An isolate has one env; the local runtime and tests may run several in one process.
"""
from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class PerEnv(Generic[T]):
    def __init__(self, factory: Callable[[Any], T]) -> None:
        self._factory = factory
        self._items: dict[int, tuple[Any, T]] = {}

    def get(self, env: Any) -> T:
        entry = self._items.get(id(env))
        if entry is None or entry[0] is not env:  # an id can be reused after an env is freed
            entry = self._items[id(env)] = (env, self._factory(env))
        return entry[1]

    def clear(self) -> None:
        """Forget everything, as a fresh isolate would (local runtime: redeploys, purges)."""
        self._items.clear()

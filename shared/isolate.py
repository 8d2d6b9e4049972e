"""Per-isolate state: built once per isolate from the first request's env, kept after.

Python Workers build a new entrypoint instance per request and the SDK wraps `env` anew each
time, so keying anything on the env object would build a new Dispatcher/TenantApp per
request. A Worker's isolate has exactly one env (its bindings, vars and secrets), so the
first one seen is the isolate's. Each build is logged once (`isolate_state_built`), which is
how the tests count them inside workerd.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("cmgsite.isolate")


class PerIsolate(Generic[T]):
    def __init__(self, name: str, factory: Callable[[Any], T]) -> None:
        self._name, self._factory = name, factory
        self._item: T | None = None
        self.builds = 0

    def get(self, env: Any) -> T:
        item = self._item
        if item is None:
            item = self._item = self._factory(env)
            self.builds += 1
            log.warning(json.dumps({"event": "isolate_state_built", "kind": self._name, "builds": self.builds}))
        return item

    def clear(self) -> None:
        """Forget the state, as a fresh isolate would (unit tests)."""
        self._item = None

"""Per-isolate state: built once per isolate from the first request's env, kept after.

Python Workers build a new entrypoint instance per request and the SDK wraps `env` anew each
time, so keying anything on the env object would build a new Dispatcher/TenantApp per
request. A Worker's isolate has exactly one env (its bindings, vars and secrets), so the
first one seen is the isolate's. Each build is logged once (`isolate_state_built`), which is
how the tests count them inside workerd.

A factory that raises ConfigError (a required secret missing, a setting unusable) fails the
isolate's start: the error is logged once for the operator (`config_invalid`, naming the
variables, never a value) and raised again on every later `get`, without rebuilding; the
Worker's entry answers those requests with a 503 that names nothing.

`read_vars(env, names)` is the one place a var or secret is read out of `env` (as plain
strings, "" when unset); the typed configs (dispatcher.config, tenant_worker.config) parse them.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Generic, Iterable, TypeVar

from shared.config import ConfigError

T = TypeVar("T")
log = logging.getLogger("cmgsite.isolate")


class PerIsolate(Generic[T]):
    def __init__(self, name: str, factory: Callable[[Any], T]) -> None:
        self._name, self._factory = name, factory
        self._item: T | None = None
        self._failure: ConfigError | None = None
        self.builds = 0

    def get(self, env: Any) -> T:
        """The isolate's item; raises the isolate's ConfigError when it could not be built."""
        if self._failure is not None:
            raise self._failure
        item = self._item
        if item is None:
            try:
                item = self._item = self._factory(env)
            except ConfigError as exc:
                self._failure = exc
                if not exc.logged:  # a config built by another PerIsolate's factory is logged there
                    exc.logged = True
                    log.error(json.dumps({**exc.log_fields(), "kind": self._name}))
                raise
            self.builds += 1
            log.warning(json.dumps({"event": "isolate_state_built", "kind": self._name, "builds": self.builds}))
        return item

    def clear(self) -> None:
        """Forget the state, as a fresh isolate would (unit tests)."""
        self._item = None
        self._failure = None


def read_vars(env: Any, names: Iterable[str]) -> dict[str, str]:
    """The named vars and secrets of `env` as plain strings ("" when unset): the JS boundary for
    settings (bindings stay on env, behind their adapters)."""
    out: dict[str, str] = {}
    for name in names:
        value = getattr(env, name, None)
        out[name] = value if isinstance(value, str) else ""
    return out

"""Reading a Worker's vars and secrets once per isolate: the shared part of the typed configs
(dispatcher.config.DispatcherConfig, tenant_worker.config.TenantConfig; no `getattr(env, ...)`
anywhere else).

    cfg = TenantConfig.parse(values)        # values: {NAME: str} for TenantConfig.NAMES ("" = unset)
    cfg = DispatcherConfig.parse(values)    # or ConfigError(missing=[...], invalid=[...])

The Worker's JS adapter (shared.isolate.read_vars) copies the named vars and secrets out of
`env` as plain strings; parsing is pure Python, so it runs on CPython in the unit tests. A
required secret that is unset is *missing*; a value that cannot be used (a malformed keyring,
a session secret shorter than 32 characters, a number out of range) is *invalid*. A
ConfigError names the variables and never quotes a value.

Bindings (DB, KV, R2, Durable Objects, AI, METRICS, DISPATCHER) are JS objects, not settings:
they stay on `env` and are reached through their adapters.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping, TypeVar

from shared.keys import Keyring, KeyringError

T = TypeVar("T")


class ConfigError(Exception):
    """The Worker cannot start: the named variables are missing or unusable (names only)."""

    def __init__(self, worker: str, missing: list[str], invalid: list[str]) -> None:
        self.worker, self.missing, self.invalid = worker, sorted(missing), sorted(invalid)
        self.logged = False
        parts = ([f"missing {', '.join(self.missing)}"] if self.missing else []) + (
            [f"invalid {', '.join(self.invalid)}"] if self.invalid else []
        )
        super().__init__(f"{worker} configuration: {'; '.join(parts)}")

    def log_fields(self) -> dict[str, object]:
        return {"event": "config_invalid", "worker": self.worker, "missing": self.missing, "invalid": self.invalid}


class Reader:
    """Collects missing and invalid names while the fields are read, then fails once with all."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values
        self.missing: list[str] = []
        self.invalid: list[str] = []

    def raw(self, name: str) -> str:
        return str(self._values.get(name) or "")

    def required(self, name: str) -> str:
        value = self.raw(name)
        if not value:
            self.missing.append(name)
        return value

    def check(self, name: str, value: str, parse: Callable[[str], T], default: T) -> T:
        """`parse(value)`, or `default` when unset; a parse failure (ValueError) marks it invalid."""
        if not value:
            return default
        try:
            return parse(value)
        except (ValueError, KeyringError):
            self.invalid.append(name)
            return default

    def int_in(self, name: str, default: int, low: int, high: int) -> int:
        return self.check(name, self.raw(name), lambda v: in_range(int(v), low, high), default)

    def fail_if_any(self, worker: str) -> None:
        if self.missing or self.invalid:
            raise ConfigError(worker, self.missing, self.invalid)


def in_range(n: T, low: float, high: float) -> T:
    if not low <= n <= high:  # type: ignore[operator]
        raise ValueError("out of range")
    return n


def keyring(value: str) -> Keyring:
    return Keyring.parse(value)


def http_url(value: str) -> str:
    if not value.startswith(("https://", "http://")):
        raise ValueError("not an http(s) URL")
    return value


def matching(pattern: re.Pattern[str], value: str) -> str:
    if not pattern.fullmatch(value):
        raise ValueError("does not match")
    return value


# The health checks' alert threshold (HEALTH_ALERT_AFTER): here, not in shared.health, so the
# dispatcher's config does not import the probe (and asyncio) at start.
DEFAULT_ALERT_AFTER = 3


def alert_after(value: Any) -> int:
    """HEALTH_ALERT_AFTER from a var: 1..100, else the default."""
    try:
        n = int(str(value))
    except ValueError:
        return DEFAULT_ALERT_AFTER
    return n if 1 <= n <= 100 else DEFAULT_ALERT_AFTER

"""Route resolution: in-isolate cache → KV `TENANT_CACHE` → D1 `DB`.

Unknown hosts are cached negatively in the isolate first. A KV write costs money and
anyone can send a fresh Host header with every request, so a miss reaches KV only when
the same host misses again in this isolate (`NEGATIVE_KV_AFTER_MISSES`), and at most
`NEGATIVE_KV_WRITES_PER_MINUTE` negative entries are written per isolate per minute: a
flood of made-up hosts costs D1 reads, never unbounded KV writes.

Takes the bindings in the shapes the Python Workers SDK gives them (`db.prepare(sql)
.bind(host).first()`, `kv.get(key)`, `kv.put(key, value, {"expirationTtl": n})`), so the
same code runs on Cloudflare, on the local runtime and in tests.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from typing import Any, Awaitable, Callable, Protocol

from shared.models import InvalidModel, TenantRoute

log = logging.getLogger("cmgsite.dispatcher")

KV_PREFIX = "host:"
KV_TTL_SECONDS = 300  # KV's minimum is 60
KV_NEGATIVE_TTL_SECONDS = 60
ISOLATE_TTL_SECONDS = 15  # bounds how long a suspend or removal takes to reach every isolate
ISOLATE_MAX_ENTRIES = 10_000
NEGATIVE_KV_AFTER_MISSES = 2  # the miss that makes a host worth a KV entry
NEGATIVE_KV_WRITES_PER_MINUTE = 60  # per isolate

ROUTE_SQL = (
    "SELECT t.tenant_id AS tenant_id, t.type AS tenant_type, t.subscription_tier AS tier, t.status AS status,"
    " t.script_name AS script_name, json_extract(t.whitelabel_config, '$.brand_name') AS brand_name"
    " FROM tenant_domains AS d JOIN tenants AS t ON t.tenant_id = d.tenant_id WHERE d.domain = ?1"
)


class D1Statement(Protocol):
    def bind(self, *values: Any) -> "D1Statement": ...
    async def first(self) -> Any: ...


class D1Database(Protocol):
    def prepare(self, sql: str) -> D1Statement: ...


class KVNamespace(Protocol):
    async def get(self, key: str) -> str | None: ...
    async def put(self, key: str, value: str, options: dict[str, int]) -> None: ...


Defer = Callable[[Awaitable[Any]], None]


class RouteUnavailable(Exception):
    """The routing database could not answer: the dispatcher must not guess."""


def kv_key(host: str) -> str:
    return KV_PREFIX + host


class RouteResolver:
    """One per isolate: holds the in-isolate cache between requests."""

    def __init__(
        self,
        db: D1Database,
        kv: KVNamespace | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        isolate_ttl: float = ISOLATE_TTL_SECONDS,
    ) -> None:
        self._db = db
        self._kv = kv
        self._clock = clock
        self._isolate_ttl = isolate_ttl
        self._isolate: OrderedDict[str, tuple[float, TenantRoute | None]] = OrderedDict()
        self._misses: OrderedDict[str, int] = OrderedDict()  # unknown host -> misses seen in this isolate
        self._negative_window = (0.0, 0)  # (minute start, negative KV writes in it)

    async def resolve(self, host: str, defer: Defer | None = None) -> TenantRoute | None:
        """The route for a normalised host, or None when no tenant has it.

        `defer` (the request's `ctx.waitUntil`) takes the KV write off the response path.
        """
        now = self._clock()
        hit = self._isolate.get(host)
        if hit is not None and hit[0] > now:
            return hit[1]
        found, route = await self._from_kv(host)
        if not found:
            route = await self._from_d1(host)
            await self._fill_kv(host, route, defer)
        self._remember(host, route, now)
        return route

    def _worth_negative_kv(self, host: str) -> bool:
        """Count a miss; True when this host has missed often enough and the minute's budget allows."""
        misses = self._misses.pop(host, 0) + 1
        self._misses[host] = misses
        while len(self._misses) > ISOLATE_MAX_ENTRIES:
            self._misses.popitem(last=False)
        if misses < NEGATIVE_KV_AFTER_MISSES:
            return False
        now = self._clock()
        start, written = self._negative_window
        if now - start >= 60:
            start, written = now, 0
        if written >= NEGATIVE_KV_WRITES_PER_MINUTE:
            self._negative_window = (start, written)
            return False
        self._negative_window = (start, written + 1)
        self._misses.pop(host, None)
        return True

    def _remember(self, host: str, route: TenantRoute | None, now: float) -> None:
        self._isolate[host] = (now + self._isolate_ttl, route)
        self._isolate.move_to_end(host)
        while len(self._isolate) > ISOLATE_MAX_ENTRIES:
            self._isolate.popitem(last=False)

    async def _from_kv(self, host: str) -> tuple[bool, TenantRoute | None]:
        if self._kv is None:
            return False, None
        try:
            raw = await self._kv.get(kv_key(host))
        except Exception as exc:  # KV down: D1 still knows the answer
            log.warning("kv get failed, falling back to D1: %s", type(exc).__name__)
            return False, None
        if raw is None:
            return False, None
        try:
            data = json.loads(raw)
            if data.get("missing") is True:
                return True, None
            return True, TenantRoute.from_mapping(data)
        except (ValueError, AttributeError, InvalidModel):
            log.warning("ignoring malformed KV route entry")
            return False, None

    async def _from_d1(self, host: str) -> TenantRoute | None:
        try:
            row = await self._db.prepare(ROUTE_SQL).bind(host).first()
        except Exception as exc:
            raise RouteUnavailable(type(exc).__name__) from exc
        if row is None:
            return None
        try:
            return TenantRoute.from_mapping(dict(row))
        except InvalidModel as exc:
            # A bad row is an operator error; refusing beats sending traffic somewhere odd.
            raise RouteUnavailable(f"invalid route row: {exc}") from exc

    async def _fill_kv(self, host: str, route: TenantRoute | None, defer: Defer | None) -> None:
        if self._kv is None:
            return
        if route is None:
            if not self._worth_negative_kv(host):
                return
            value, ttl = json.dumps({"missing": True}), KV_NEGATIVE_TTL_SECONDS
        else:
            self._misses.pop(host, None)
            value, ttl = json.dumps(route.to_mapping()), KV_TTL_SECONDS
        write = self._put_quietly(kv_key(host), value, ttl)
        if defer is not None:
            defer(write)
        else:
            await write

    async def _put_quietly(self, key: str, value: str, ttl: int) -> None:
        try:
            await self._kv.put(key, value, {"expirationTtl": ttl})  # type: ignore[union-attr]
        except Exception as exc:
            log.warning("kv put failed: %s", type(exc).__name__)

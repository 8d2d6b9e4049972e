"""Faults on the request path, on the real workerd: the dispatcher degrades safely and never misroutes.

D1 / KV outages come from the host's test-only wrappers of the dispatcher's real bindings
(localrt/node/binding-faults-plugin.mjs): switched on, every call rejects as a storage outage
does; switched off, calls reach the real local D1 / KV unchanged. Limit hits and crashes of a
tenant Worker come from the local dispatch namespace (`platform.fault`), as Cloudflare reports them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from typing import Any, Iterator

import httpx

from dispatcher.routing import (
    ISOLATE_TTL_SECONDS,
    KV_NEGATIVE_TTL_SECONDS,
    NEGATIVE_KV_AFTER_MISSES,
    NEGATIVE_KV_WRITES_PER_MINUTE,
    RouteResolver,
    kv_key,
)
from tests.support import Platform

P1, SEO, COZY = "partner1.cozyartzmedia.com", "partner-seo.com", "cozyartzmedia.com"


@contextlib.contextmanager
def binding_down(platform: Platform, binding: str) -> Iterator[None]:
    """The dispatcher's `binding` ("DB" or "TENANT_CACHE") throws on every call for the block."""
    platform.host._control("POST", "/faults", {"binding": binding, "fault": "throw"})
    try:
        yield
    finally:
        platform.host._control("POST", "/faults", {"binding": binding, "fault": None})


def test_d1_down_is_503_never_a_guess(platform: Platform) -> None:
    platform.purge(P1)  # not in the route cache: only D1 could answer
    before = len(platform.invocations())
    with binding_down(platform, "DB"):
        r = platform.get(P1)
        assert r.status_code == 503 and r.json()["error"]["code"] == "routing_unavailable"
        assert r.headers["retry-after"] and r.headers["x-request-id"]
        page = platform.get(P1, "/")
        assert page.status_code == 503 and "text/html" in page.headers["content-type"]
        assert "Network connection lost" not in r.text + page.text
    assert len(platform.invocations()) == before  # nothing was forwarded anywhere
    assert platform.kv_get(P1) is None  # and no answer was cached from the outage
    assert platform.get(P1).status_code == 200  # D1 back: routed again


def test_kv_down_falls_back_to_d1(platform: Platform) -> None:
    with binding_down(platform, "TENANT_CACHE"):
        for host, tenant in [(P1, "partner1"), (SEO, "partner-seo")]:
            r = platform.get(host)
            assert r.status_code == 200 and r.json()["tenant_id"] == tenant
        assert platform.get("unknown.example").status_code == 404
    platform.purge("unknown.example")


def test_kv_and_d1_down_together_is_503(platform: Platform) -> None:
    with binding_down(platform, "TENANT_CACHE"), binding_down(platform, "DB"):
        r = platform.get(SEO)
        assert r.status_code == 503 and r.json()["error"]["code"] == "routing_unavailable"


def test_route_is_cached_in_kv_and_unknown_hosts_negatively(platform: Platform) -> None:
    for host in (SEO, "nobody.example"):
        platform.purge(host)
    try:
        assert platform.get(SEO).status_code == 200
        cached = json.loads(platform.kv_get(SEO) or "null")
        assert cached["tenant_id"] == "partner-seo" and cached["script_name"] == "cmgsite-custom-tenant"
        assert platform.get("nobody.example").status_code == 404
        assert platform.kv_get("nobody.example") is None  # one miss: the isolate remembers it, KV does not
        assert platform.get("nobody.example").status_code == 404
        assert json.loads(platform.kv_get("nobody.example") or "null") == {"missing": True}  # repeated: KV too
    finally:
        platform.purge("nobody.example")


def test_made_up_hosts_do_not_drive_kv_writes(platform: Platform) -> None:
    # The attack: a fresh Host per request, each one a paid KV write if every miss were cached.
    hosts = [f"probe-{secrets.token_hex(6)}.example" for _ in range(40)]
    for host in hosts:
        r = platform.get(host)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert [h for h in hosts if platform.kv_get(h) is not None] == []


def test_malformed_kv_entry_is_ignored_not_trusted(platform: Platform) -> None:
    # A poisoned cache entry pointing partner-seo.com at the primary tenant's script.
    poisoned = {
        "tenant_id": "cozyartz",
        "tenant_type": "primary",
        "tier": "enterprise",
        "status": "active",
        "script_name": "../cmgsite-primary-tenant",
    }
    platform.kv_put(SEO, json.dumps(poisoned))
    try:
        r = platform.get(SEO)
        assert r.status_code == 200 and r.json()["tenant_id"] == "partner-seo"
        assert platform.invocations()[-1]["script"] == "cmgsite-custom-tenant"
    finally:
        platform.purge(SEO)


# ---- the resolver's cache layers: pure logic, a unit test with in-test doubles ------------------
class CountingD1:
    """The local D1 (same SQLite file the platform uses), counting prepares."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, 0

    def prepare(self, sql: str) -> Any:
        self.calls += 1
        return self.inner.prepare(sql)


class MemoryKV:
    """Just enough KV for the resolver: get / put with expirationTtl on a test clock."""

    def __init__(self, clock: Any) -> None:
        self.clock, self.items = clock, {}

    async def get(self, key: str) -> str | None:
        value, expires = self.items.get(key, (None, 0.0))
        return value if value is not None and self.clock() < expires else None

    async def put(self, key: str, value: str, options: dict[str, int]) -> None:
        self.items[key] = (value, self.clock() + options["expirationTtl"])


def test_resolver_cache_layers(platform: Platform) -> None:
    now = [1000.0]
    db = CountingD1(platform.d1)
    resolver = RouteResolver(db, MemoryKV(lambda: now[0]), clock=lambda: now[0])

    async def go() -> None:
        route = await resolver.resolve(P1)
        assert route is not None and route.tenant_id == "partner1" and db.calls == 1
        await resolver.resolve(P1)
        assert db.calls == 1  # isolate cache
        now[0] += ISOLATE_TTL_SECONDS + 1
        await resolver.resolve(P1)
        assert db.calls == 1  # KV
        assert await resolver.resolve("ghost.example") is None and db.calls == 2
        assert await resolver.resolve("ghost.example") is None and db.calls == 2  # isolate's negative entry
        now[0] += ISOLATE_TTL_SECONDS + 1
        assert await resolver.resolve("ghost.example") is None and db.calls == 3  # second miss: now in KV
        now[0] += ISOLATE_TTL_SECONDS + 1
        assert await resolver.resolve("ghost.example") is None and db.calls == 3  # negative KV entry
        now[0] += KV_NEGATIVE_TTL_SECONDS + 1
        assert await resolver.resolve("ghost.example") is None and db.calls == 4  # expired: asks D1 again

    asyncio.run(go())


def test_negative_kv_writes_are_bounded_per_isolate(platform: Platform) -> None:
    now = [1000.0]
    kv = MemoryKV(lambda: now[0])
    resolver = RouteResolver(platform.d1, kv, clock=lambda: now[0], isolate_ttl=0)

    async def go() -> None:
        hosts = [f"h{i}.example" for i in range(NEGATIVE_KV_WRITES_PER_MINUTE * 3)]
        for host in hosts:  # every host misses twice: each one is "worth" an entry
            for _ in range(NEGATIVE_KV_AFTER_MISSES):
                assert await resolver.resolve(host) is None
        assert len(kv.items) == NEGATIVE_KV_WRITES_PER_MINUTE  # the minute's budget, no more
        now[0] += 61
        for _ in range(NEGATIVE_KV_AFTER_MISSES):
            assert await resolver.resolve("late.example") is None
        assert kv_key("late.example") in kv.items  # a new minute, a new budget

    asyncio.run(go())


# ---- tenant Worker limits and crashes (the namespace reports them as Cloudflare does) ------------
def test_user_worker_over_cpu_limit_is_503(platform: Platform) -> None:
    with platform.fault("cmgsite-custom-tenant", "cpu"):
        r = platform.get(SEO)
    assert r.status_code == 503 and r.json()["error"]["code"] == "worker_cpu_limit"
    last = platform.invocations()[-1]
    assert last["script"] == "cmgsite-custom-tenant" and last["limits"] == {"cpuMs": 50, "subRequests": 50}
    assert platform.get(SEO).status_code == 200


def test_user_worker_over_subrequest_limit_is_429(platform: Platform) -> None:
    with platform.fault("cmgsite-partner-tenant", "subrequests"):
        r = platform.get(P1)
    assert r.status_code == 429 and r.json()["error"]["code"] == "worker_subrequest_limit"
    assert "subrequest limit (custom limit)" not in r.text


def test_user_worker_exception_is_502_without_leaking_it(platform: Platform) -> None:
    with platform.fault("cmgsite-custom-tenant", "crash"):
        r = platform.get(SEO)
        page = platform.get(SEO, "/")
    assert r.status_code == 502 and r.json()["error"]["code"] == "tenant_worker_error"
    assert page.status_code == 502
    assert "threw exception" not in r.text + page.text
    # The other tenants are untouched by one tenant's crash.
    assert platform.get(P1).status_code == 200


def test_tier_limits_are_passed_to_the_namespace(platform: Platform) -> None:
    expected = {
        COZY: ("cmgsite-primary-tenant", {"cpuMs": 300, "subRequests": 500}),
        P1: ("cmgsite-partner-tenant", {"cpuMs": 100, "subRequests": 100}),
        SEO: ("cmgsite-custom-tenant", {"cpuMs": 50, "subRequests": 50}),
    }
    for host, (script, limits) in expected.items():
        assert platform.get(host).status_code == 200
        assert platform.invocations()[-1] == {"script": script, "limits": limits}


def test_concurrent_requests_to_three_tenants_never_cross(platform: Platform) -> None:
    hosts = {COZY: "cozyartz", P1: "partner1", SEO: "partner-seo"}

    async def go() -> None:
        async with httpx.AsyncClient(base_url=platform.url, timeout=60) as client:
            sent = list(hosts) * 30
            answers = await asyncio.gather(*(client.get("/api/health", headers={"Host": h}) for h in sent))
            for host, resp in zip(sent, answers, strict=True):  # each answer against the Host it was sent with
                assert resp.status_code == 200, (host, resp.text)
                assert (resp.json()["tenant_id"], resp.json()["host"]) == (hosts[host], host)

    asyncio.run(go())

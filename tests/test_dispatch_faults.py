"""Faults on the request path: the dispatcher degrades safely and never misroutes."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from dispatcher.routing import ISOLATE_TTL_SECONDS, KV_NEGATIVE_TTL_SECONDS, RouteResolver, kv_key
from localrt.dispatch import ScriptSpec
from localrt.kv import KVNamespace
from localrt.platform import Platform
from pyodide.ffi import JsException
from tests.support import LiveServer, serve


class BrokenD1:
    def prepare(self, sql: str) -> Any:
        raise JsException("D1_ERROR: Network connection lost.")


class BrokenKV:
    async def get(self, key: str) -> str | None:
        raise JsException("KV GET failed: 500 Internal Server Error")

    async def put(self, key: str, value: str, options: dict[str, int]) -> None:
        raise JsException("KV PUT failed: 500 Internal Server Error")


def health(server: LiveServer, host: str) -> httpx.Response:
    return httpx.get(server.url + "/api/health", headers={"Host": host})


def test_d1_down_is_503_never_a_guess(platform: Platform) -> None:
    platform.dispatcher_env.DB = BrokenD1()
    with serve(platform) as server:
        r = health(server, "partner1.cozyartzmedia.com")
        assert r.status_code == 503 and r.json()["error"]["code"] == "routing_unavailable"
        assert r.headers["retry-after"] and r.headers["x-request-id"]
        page = httpx.get(server.url + "/", headers={"Host": "partner1.cozyartzmedia.com"})
        assert page.status_code == 503 and "text/html" in page.headers["content-type"]
    assert platform.namespace.invocations == []  # nothing was forwarded anywhere


def test_kv_down_falls_back_to_d1(platform: Platform) -> None:
    platform.dispatcher_env.TENANT_CACHE = BrokenKV()
    with serve(platform) as server:
        for host, tenant in [("partner1.cozyartzmedia.com", "partner1"), ("partner-seo.com", "partner-seo")]:
            r = health(server, host)
            assert r.status_code == 200 and r.json()["tenant_id"] == tenant
        assert health(server, "unknown.example").status_code == 404


def test_route_is_cached_in_kv_and_unknown_hosts_negatively(platform: Platform, live: LiveServer) -> None:
    assert health(live, "partner-seo.com").status_code == 200
    assert health(live, "nobody.example").status_code == 404
    live.call(platform.drain)
    cached = json.loads(asyncio.run(platform.kv.get(kv_key("partner-seo.com"))))
    assert cached["tenant_id"] == "partner-seo" and cached["script_name"] == "cmgsite-custom-tenant"
    assert json.loads(asyncio.run(platform.kv.get(kv_key("nobody.example")))) == {"missing": True}


def test_malformed_kv_entry_is_ignored_not_trusted(platform: Platform, live: LiveServer) -> None:
    # A poisoned cache entry pointing partner-seo.com at the primary tenant's script.
    poisoned = {"tenant_id": "cozyartz", "tenant_type": "primary", "tier": "enterprise", "status": "active",
                "script_name": "../cmgsite-primary-tenant"}
    asyncio.run(platform.kv.put(kv_key("partner-seo.com"), json.dumps(poisoned), {"expirationTtl": 300}))
    r = health(live, "partner-seo.com")
    assert r.status_code == 200 and r.json()["tenant_id"] == "partner-seo"


class CountingD1:
    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, 0

    def prepare(self, sql: str) -> Any:
        self.calls += 1
        return self.inner.prepare(sql)


def test_resolver_cache_layers(platform: Platform) -> None:
    now = [1000.0]
    db = CountingD1(platform.d1)
    kv = KVNamespace(clock=lambda: now[0])
    resolver = RouteResolver(db, kv, clock=lambda: now[0])

    async def go() -> None:
        route = await resolver.resolve("partner1.cozyartzmedia.com")
        assert route is not None and route.tenant_id == "partner1" and db.calls == 1
        await resolver.resolve("partner1.cozyartzmedia.com")
        assert db.calls == 1  # isolate cache
        now[0] += ISOLATE_TTL_SECONDS + 1
        await resolver.resolve("partner1.cozyartzmedia.com")
        assert db.calls == 1  # KV
        assert await resolver.resolve("ghost.example") is None and db.calls == 2
        now[0] += ISOLATE_TTL_SECONDS + 1
        assert await resolver.resolve("ghost.example") is None and db.calls == 2  # negative KV entry
        now[0] += KV_NEGATIVE_TTL_SECONDS + 1
        assert await resolver.resolve("ghost.example") is None and db.calls == 3  # expired: asks D1 again

    asyncio.run(go())


def test_user_worker_over_cpu_limit_is_503(platform: Platform) -> None:
    platform.namespace.cpu_limit_scale = 1.0
    platform.namespace.deploy(ScriptSpec("cmgsite-custom-tenant", module="tests.workers.burner",
                                         vars={"TENANT_ID": "partner-seo"}))
    with serve(platform) as server:
        r = health(server, "partner-seo.com")
    assert r.status_code == 503 and r.json()["error"]["code"] == "worker_cpu_limit"
    name, options = platform.namespace.invocations[-1]
    assert name == "cmgsite-custom-tenant" and options["limits"] == {"cpuMs": 50, "subRequests": 50}


def test_user_worker_exception_is_502_without_leaking_it(platform: Platform) -> None:
    platform.namespace.deploy(ScriptSpec("cmgsite-custom-tenant", module="tests.workers.crasher",
                                         vars={"TENANT_ID": "partner-seo"}))
    with serve(platform) as server:
        r = health(server, "partner-seo.com")
    assert r.status_code == 502 and r.json()["error"]["code"] == "tenant_worker_error"
    assert "database password" not in r.text


def test_tier_limits_are_passed_to_the_namespace(platform: Platform, live: LiveServer) -> None:
    health(live, "cozyartzmedia.com")
    assert platform.namespace.invocations[-1] == ("cmgsite-primary-tenant", {"limits": {"cpuMs": 300, "subRequests": 500}})


def test_oversized_body_is_413(live: LiveServer) -> None:
    r = httpx.post(live.url + "/api/health", headers={"Host": "cozyartzmedia.com"}, content=b"x" * (11 * 1024 * 1024))
    assert r.status_code == 413


def test_concurrent_requests_to_three_tenants_never_cross(live: LiveServer) -> None:
    hosts = {"cozyartzmedia.com": "cozyartz", "partner1.cozyartzmedia.com": "partner1", "partner-seo.com": "partner-seo"}

    async def go() -> None:
        async with httpx.AsyncClient(base_url=live.url) as client:
            tasks = [client.get("/api/health", headers={"Host": h}) for h in list(hosts) * 30]
            for resp in await asyncio.gather(*tasks):
                body = resp.json()
                assert resp.status_code == 200 and hosts[body["host"]] == body["tenant_id"]

    asyncio.run(go())

"""Usage against the real Supabase stack (PostgREST + gateway): the flush, and domain quotas.

The flush tests count in far-future periods (an injected clock) and the domain tests use
unique names; both delete what they wrote, so the shared seeded database stays as seeded.
"""
from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from localrt.demo import seed_demo
from localrt.dispatch import Env
from localrt.durable_objects import DurableObjects
from localrt.platform import Platform
from localrt.postgres import PgCluster
from localrt.supabase_stack import SupabaseStack
from shared.session import issue_session
from tenant_worker.auth import SESSION_COOKIE
from tenant_worker.usage_meter import UsageMeter
from tests.support import LiveServer, fresh_platform, free_port, serve

SCRIPT = "cmgsite-custom-tenant"


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2031, 3, 15, 12, 0, tzinfo=timezone.utc).timestamp()

    def __call__(self) -> float:
        return self.t


CLOCK = Clock()


class FutureMeter(UsageMeter):
    """The real meter, real HTTP edge; only the clock is injected (periods nobody else uses)."""

    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self.clock = CLOCK


class SupabaseSwitch:
    """A loopback HTTP hop in front of the gateway: down (nothing listens), up, or
    `drop` (the upsert reaches PostgREST but its answer is lost on the way back)."""

    def __init__(self, upstream: str) -> None:
        self.upstream, self.port = upstream, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.mode = "down"
        self.forwarded: list[bytes] = []
        self._server: asyncio.base_events.Server | None = None
        self._client: httpx.AsyncClient | None = None

    async def set(self, mode: str) -> None:
        self.mode = mode
        if mode == "down" and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        elif mode != "down" and self._server is None:
            self._client = self._client or httpx.AsyncClient()
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = [tuple(h.split(":", 1)) for h in lines[1:] if h]
            length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
            body = await reader.readexactly(length) if length else b""
            send = {k.strip(): v.strip() for k, v in headers if k.lower() not in ("host", "content-length", "connection")}
            assert self._client is not None
            resp = await self._client.request(method, self.upstream + target, headers=send, content=body)
            self.forwarded.append(body)
            if self.mode == "up":
                out = resp.content
                writer.write(f"HTTP/1.1 {resp.status_code} X\r\ncontent-type: application/json\r\n"
                             f"content-length: {len(out)}\r\nconnection: close\r\n\r\n".encode() + out)
                await writer.drain()
        finally:
            writer.close()

    async def close(self) -> None:
        await self.set("down")
        if self._client is not None:
            await self._client.aclose()


def usage_rows(pg: PgCluster, tenant_id: str, period: str) -> dict[str, int]:
    with pg.connect() as conn:
        rows = conn.execute("select usage_type, usage_count from public.tenant_usage where tenant_id = %s and period = %s",
                            (tenant_id, period)).fetchall()
    return {kind: count for kind, count in rows}


@pytest.fixture
def future_periods(pg_cluster: PgCluster) -> Iterator[None]:
    yield
    with pg_cluster.connect() as conn:
        conn.execute("delete from public.tenant_usage where period >= '2031-01'")


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def runtime(root: Path, stack: SupabaseStack, url: str) -> DurableObjects:
    env = Env({"TENANT_ID": "partner-seo", "SUPABASE_URL": url, "SUPABASE_SERVICE_ROLE_KEY": stack.service_role_key,
               "USAGE_FLUSH_DELAY_MS": "30", "USAGE_FLUSH_RETRY_BASE_MS": "40", "USAGE_FLUSH_RETRY_CAP_MS": "200"})
    return DurableObjects(root, lambda name: env if name == SCRIPT else None, clock=CLOCK)


async def test_flush_survives_an_outage_and_a_lost_answer_without_losing_or_doubling(
        tmp_path: Path, supabase_stack: SupabaseStack, pg_cluster: PgCluster, future_periods: None) -> None:
    CLOCK.t = datetime(2031, 3, 15, 12, 0, tzinfo=timezone.utc).timestamp()
    switch = SupabaseSwitch(supabase_stack.url)
    rt = runtime(tmp_path, supabase_stack, switch.url)
    ns = rt.namespace(SCRIPT, "FutureMeter", __name__)
    stub = ns.getByName("partner-seo")
    key = ns.key(stub.id)
    try:
        for _ in range(5):
            assert (await stub.consume("ai_calls", 1, "partner-seo", "starter"))["allowed"]
        await stub.seed_level("domains", 1, "partner-seo", "starter")
        await stub.consume("storage", 4096, "partner-seo", "starter")

        await asyncio.sleep(0.5)  # Supabase down: every attempt fails and is re-armed with backoff
        assert usage_rows(pg_cluster, "partner-seo", "2031-03") == {}
        assert rt.alarms.get(key) is not None or rt.alarm_tasks  # re-armed (or retrying right now)

        await switch.set("drop")  # the upsert lands, the answer is lost: the meter must send it again
        await wait_for(lambda: len(switch.forwarded) >= 2)
        assert usage_rows(pg_cluster, "partner-seo", "2031-03") == {"ai_calls": 5, "domains": 1, "storage": 4096}

        await switch.set("up")
        await wait_for(lambda: rt.alarms.get(key) is None and not rt.alarm_tasks)  # flushed and clean: no alarm left
        sent = len(switch.forwarded)
        assert usage_rows(pg_cluster, "partner-seo", "2031-03") == {"ai_calls": 5, "domains": 1, "storage": 4096}

        for _ in range(3):
            await stub.consume("ai_calls", 1, "partner-seo", "starter")
        await wait_for(lambda: len(switch.forwarded) > sent and rt.alarms.get(key) is None and not rt.alarm_tasks)
        assert usage_rows(pg_cluster, "partner-seo", "2031-03")["ai_calls"] == 8  # 5 + 3, never 5 + 8

        # Another flush with nothing new sends nothing and changes nothing.
        sent = len(switch.forwarded)
        await ns._deliver(stub.id, "alarm", [{"retryCount": 0, "isRetry": False}])
        assert len(switch.forwarded) == sent
        assert usage_rows(pg_cluster, "partner-seo", "2031-03")["ai_calls"] == 8
    finally:
        rt.close()
        await switch.close()


async def test_a_month_counted_before_the_rollover_is_flushed_under_its_own_period(
        tmp_path: Path, supabase_stack: SupabaseStack, pg_cluster: PgCluster, future_periods: None) -> None:
    CLOCK.t = datetime(2031, 3, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp()
    rt = runtime(tmp_path, supabase_stack, supabase_stack.url)
    stub = rt.namespace(SCRIPT, "FutureMeter", __name__).getByName("partner1")
    try:
        await stub.consume("ai_calls", 4, "partner1", "growth")
        CLOCK.t += 1
        await stub.consume("ai_calls", 2, "partner1", "growth")
        await wait_for(lambda: usage_rows(pg_cluster, "partner1", "2031-04") != {})
        assert usage_rows(pg_cluster, "partner1", "2031-03") == {"ai_calls": 4}
        assert usage_rows(pg_cluster, "partner1", "2031-04") == {"ai_calls": 2}
        with pg_cluster.connect() as conn:
            limit = conn.execute("select usage_limit from public.tenant_usage where tenant_id = 'partner1'"
                                 " and period = '2031-04'").fetchone()
        assert limit == (250,)
    finally:
        rt.close()


# ---- domains over HTTP, recorded in Supabase under RLS -------------------------------------
SESSION_SECRET = secrets.token_urlsafe(48)
P1, SEO = "partner1.cozyartzmedia.com", "partner-seo.com"
USERS = {("partner1", "admin"): "00000000-0000-4000-8000-000000000011",
         ("partner1", "client"): "00000000-0000-4000-8000-000000000012",
         ("partner-seo", "admin"): "00000000-0000-4000-8000-000000000021"}


def session(tenant_id: str, role: str = "admin") -> dict[str, str]:
    token = issue_session(SESSION_SECRET, tenant_id=tenant_id, user_id=USERS[(tenant_id, role)], role=role,  # type: ignore[arg-type]
                          now=time.time())
    return {"cookie": f"{SESSION_COOKIE}={token}"}


@pytest.fixture
def domain_site(d1_template: Path, tmp_path: Path, supabase_stack: SupabaseStack,
                pg_cluster: PgCluster) -> Iterator[LiveServer]:
    p: Platform = fresh_platform(d1_template, tmp_path / "platform")
    asyncio.run(seed_demo(p, extra_secrets={
        "SESSION_SECRET": SESSION_SECRET, "SUPABASE_URL": supabase_stack.url, "SUPABASE_ANON_KEY": supabase_stack.anon_key,
        "SUPABASE_JWT_SECRET": supabase_stack.jwt_secret, "SUPABASE_SERVICE_ROLE_KEY": supabase_stack.service_role_key,
    }, extra_vars={"USAGE_FLUSH_DELAY_MS": "3600000"}))  # no flush: the seeded usage rows stay as seeded
    with serve(p) as server:
        yield server
    with pg_cluster.connect() as conn:
        conn.execute("delete from public.tenant_domains where domain like '%.usage-test.example'")


def add(site: LiveServer, host: str, domain: str, auth: dict[str, str]) -> httpx.Response:
    return httpx.post(site.url + "/api/domains", json={"domain": domain}, headers={"Host": host, **auth}, timeout=15)


def remove(site: LiveServer, host: str, domain: str, auth: dict[str, str]) -> httpx.Response:
    return httpx.delete(f"{site.url}/api/domains/{domain}", headers={"Host": host, **auth}, timeout=15)


def domains_of(pg: PgCluster, tenant_id: str) -> set[str]:
    with pg.connect() as conn:
        rows = conn.execute("select domain from public.tenant_domains where tenant_id = %s", (tenant_id,)).fetchall()
    return {r[0] for r in rows}


def test_domain_quota_counts_the_tenants_own_domain_and_gives_slots_back(
        domain_site: LiveServer, pg_cluster: PgCluster) -> None:
    tag = uuid.uuid4().hex[:8]
    names = [f"shop{i}-{tag}.usage-test.example" for i in range(5)]
    admin = session("partner1")
    for i, name in enumerate(names[:4]):  # growth: 5 domains, one is partner1.cozyartzmedia.com
        r = add(domain_site, P1, name.upper() + ".", admin)
        assert r.status_code == 201, r.text
        assert r.json()["domain"] == name and r.json()["usage"]["used"] == i + 2
    refused = add(domain_site, P1, names[4], admin)
    assert refused.status_code == 429 and "retry-after" not in refused.headers
    error = refused.json()["error"]
    assert (error["code"], error["kind"], error["limit"], error["used"], error["resets_at"]) == (
        "usage_limit_exceeded", "domains", 5, 5, None)
    assert domains_of(pg_cluster, "partner1") == {P1, *names[:4]}

    gone = remove(domain_site, P1, names[0], admin)
    assert gone.status_code == 200 and gone.json()["usage"]["used"] == 4
    assert add(domain_site, P1, names[4], admin).status_code == 201
    assert domains_of(pg_cluster, "partner1") == {P1, *names[1:]}


def test_starter_tenant_already_uses_its_one_domain(domain_site: LiveServer, pg_cluster: PgCluster) -> None:
    r = add(domain_site, SEO, f"extra-{uuid.uuid4().hex[:8]}.usage-test.example", session("partner-seo"))
    assert r.status_code == 429 and r.json()["error"]["limit"] == 1 and r.json()["error"]["used"] == 1
    assert domains_of(pg_cluster, "partner-seo") == {SEO}


def test_a_taken_domain_is_409_and_costs_no_slot(domain_site: LiveServer, pg_cluster: PgCluster) -> None:
    admin = session("partner1")
    r = add(domain_site, P1, SEO, admin)  # partner-seo's domain
    assert r.status_code == 409 and r.json()["error"]["code"] == "domain_taken"
    usage = httpx.get(domain_site.url + "/api/usage", headers={"Host": P1, **admin}).json()["usage"]
    assert usage["domains"]["used"] == 1
    assert domains_of(pg_cluster, "partner-seo") == {SEO}


def test_one_tenant_cannot_delete_another_tenants_domain(domain_site: LiveServer, pg_cluster: PgCluster) -> None:
    r = remove(domain_site, P1, SEO, session("partner1"))
    assert r.status_code == 404
    assert domains_of(pg_cluster, "partner-seo") == {SEO}


def test_domains_need_an_admin(domain_site: LiveServer, pg_cluster: PgCluster) -> None:
    name = f"c-{uuid.uuid4().hex[:8]}.usage-test.example"
    assert add(domain_site, P1, name, session("partner1", "client")).status_code == 403
    assert add(domain_site, P1, name, {}).status_code == 401
    assert remove(domain_site, P1, name, session("partner1", "client")).status_code == 403
    assert name not in domains_of(pg_cluster, "partner1")


@pytest.mark.parametrize("domain", ["localhost", "1.2.3.4", "shop.example.com:443", "bad domain.com", "a..b.com",
                                    "evil.cozyartzmedia.com", "cozyartzmedia.com", "-x.example.com", "x" * 300])
def test_bad_domains_are_422(domain_site: LiveServer, domain: str) -> None:
    r = add(domain_site, P1, domain, session("partner1"))
    assert r.status_code == 422 and r.json()["error"]["code"] in ("invalid_domain", "invalid_request")


def test_usage_counts_the_domain_the_tenant_already_has(domain_site: LiveServer) -> None:
    r = httpx.get(domain_site.url + "/api/usage", headers={"Host": SEO, **session("partner-seo")})
    assert r.status_code == 200
    assert r.json()["usage"]["domains"] == {"used": 1, "limit": 1, "remaining": 0, "period": "level", "resets_at": None}

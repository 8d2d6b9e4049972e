"""Subrequests per request type, counted by the local platform's bindings (the host's ledger):
what each Worker asks of KV, D1, the namespace, Supabase (outbound fetch), the UsageMeter
Durable Object and the AI binding. Cloudflare bills and limits these per request."""

from __future__ import annotations

import time
from typing import Any, Iterator

import pytest

from tests.support import Platform
from tests.usage_support import UsageTenant, usage_tenant

DISPATCHER = "cmgsite-tenant-dispatcher"
SEO, SEO_SCRIPT = "partner-seo.com", "cmgsite-custom-tenant"


@pytest.fixture
def growth(platform: Platform, pg_cluster: Any) -> Iterator[UsageTenant]:
    with usage_tenant(platform, pg_cluster, "growth") as t:
        yield t


def settled(platform: Platform) -> None:
    """Let deferred work (a KV write in waitUntil) land, then zero the ledger."""
    time.sleep(0.5)
    platform.subrequests()


def test_health_through_a_kv_cached_route(platform: Platform) -> None:
    assert platform.get(SEO).status_code == 200
    settled(platform)
    assert platform.get(SEO).status_code == 200
    time.sleep(0.5)
    counts = platform.subrequests()
    # The tests run the dispatcher with no isolate cache (ROUTE_ISOLATE_TTL_SECONDS=0), so the
    # route comes from KV: one get and the dispatch. /api/health itself asks nothing.
    assert counts.get(DISPATCHER) == {"kv": 1, "dispatch": 1}
    assert counts.get(SEO_SCRIPT, {}) == {}


def test_a_cold_route_reads_d1_once_and_fills_kv(platform: Platform) -> None:
    platform.purge(SEO)
    settled(platform)
    assert platform.get(SEO).status_code == 200
    time.sleep(0.5)
    assert platform.subrequests().get(DISPATCHER) == {"kv": 2, "d1": 1, "dispatch": 1}  # get, D1, put


def test_me_makes_at_most_one_supabase_call(growth: UsageTenant) -> None:
    r = growth.get("/api/me")
    assert r.status_code == 200, r.text
    settled(growth.platform)
    r = growth.get("/api/me")
    assert r.status_code == 200, r.text
    counts = growth.platform.subrequests().get(growth.script, {})
    assert counts.get("fetch", 0) <= 1 and set(counts) <= {"fetch"}, counts  # the session carries the claims


def test_a_data_read_is_one_supabase_call(growth: UsageTenant) -> None:
    assert growth.get("/api/tenant").status_code == 200
    settled(growth.platform)
    r = growth.get("/api/tenant")
    assert r.status_code == 200 and r.json()["tenant"]["tenant_id"] == growth.tenant_id, r.text
    assert growth.platform.subrequests().get(growth.script, {}) == {"fetch": 1}


def test_a_metered_ai_call_is_one_durable_object_call_and_one_ai_call(growth: UsageTenant) -> None:
    assert growth.generate().status_code == 200  # the meter's first call in a period may load history
    settled(growth.platform)
    assert growth.generate().status_code == 200
    counts = growth.platform.subrequests().get(growth.script, {})
    assert (counts.get("do"), counts.get("ai")) == (1, 1), counts
    assert counts.get("fetch", 0) == 0, counts

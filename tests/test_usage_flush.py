"""Usage against the real Supabase stack on the real workerd: the UsageMeter's alarm flush to
`tenant_usage`, and domain quotas recorded under RLS. Throwaway tenants (tests/usage_support.py),
deleted with their rows after each test; the seeded demo rows stay as seeded."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import httpx
import pytest

from tests.support import Platform, free_port
from tests.usage_support import UsageTenant, usage_tenant

FAST_FLUSH = {"USAGE_FLUSH_DELAY_MS": "200", "USAGE_FLUSH_RETRY_BASE_MS": "300", "USAGE_FLUSH_RETRY_CAP_MS": "1000"}
SEO = "partner-seo.com"


def month() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m")


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)
    return value


def test_flush_writes_absolute_counts_and_never_doubles(platform: Platform, pg_cluster: Any) -> None:
    with usage_tenant(platform, pg_cluster, "starter", vars_=FAST_FLUSH) as t:
        for _ in range(5):
            assert t.generate().status_code == 200
        wait_for(lambda: t.usage_rows().get(("ai_calls", month())) == 5)
        for _ in range(3):
            assert t.generate().status_code == 200
        wait_for(lambda: t.usage_rows().get(("ai_calls", month())) == 8)  # 5 + 3, never 5 + 8
        with pg_cluster.connect() as conn:
            limit = conn.execute(
                "select usage_limit from public.tenant_usage where tenant_id = %s and usage_type = 'ai_calls'",
                (t.tenant_id,),
            ).fetchone()
        assert limit == (100,)
        time.sleep(1.0)  # clean counters are not sent again: nothing changes
        assert t.usage_rows()[("ai_calls", month())] == 8


def test_flush_survives_an_outage_and_a_restart_without_losing_counts(platform: Platform, pg_cluster: Any) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens: every flush attempt fails
    with usage_tenant(platform, pg_cluster, "growth", vars_=FAST_FLUSH) as t:
        real = t.platform.registry.secrets_of(t.script)["SUPABASE_URL"]
        # The month's history is read (and the first call flushed) while Supabase is up ...
        assert t.generate().status_code == 200
        wait_for(lambda: t.usage_rows().get(("ai_calls", month())) == 1)
        # ... so counting goes on through the outage (a new workerd, same Durable Object storage).
        t.platform.set_secret(t.script, "SUPABASE_URL", down)
        for _ in range(4):
            assert t.generate().status_code == 200
        wait_for(lambda: t.platform.log_text().count(f'"usage_flush_failed", "tenant_id": "{t.tenant_id}"') >= 2)
        assert t.usage_rows() == {("ai_calls", month()): 1}
        t.platform.set_secret(t.script, "SUPABASE_URL", real)  # a new workerd: the persisted alarm fires there
        wait_for(lambda: t.usage_rows().get(("ai_calls", month())) == 5, timeout=30)


# ---- domains over HTTP, recorded in Supabase under RLS -------------------------------------
@pytest.fixture
def growth(platform: Platform, pg_cluster: Any) -> Iterator[UsageTenant]:
    with usage_tenant(platform, pg_cluster, "growth") as t:
        yield t


def add(t: UsageTenant, domain: str, role: str | None = "admin") -> httpx.Response:
    return t.post("/api/domains", json={"domain": domain}, auth=t.session(role) if role else {})


def remove(t: UsageTenant, domain: str, role: str | None = "admin") -> httpx.Response:
    return httpx.delete(
        f"{t.platform.url}/api/domains/{domain}",
        timeout=60,
        headers={"Host": t.host, **(t.session(role) if role else {})},
    )


def domains_of(pg: Any, tenant_id: str) -> set[str]:
    with pg.connect() as conn:
        rows = conn.execute("select domain from public.tenant_domains where tenant_id = %s", (tenant_id,)).fetchall()
    return {r[0] for r in rows}


def test_domain_quota_counts_the_tenants_own_domain_and_gives_slots_back(growth: UsageTenant, pg_cluster: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    names = [f"shop{i}-{tag}.usage-test.example" for i in range(5)]
    for i, name in enumerate(names[:4]):  # growth: 5 domains, one is the tenant's own
        r = add(growth, name.upper() + ".")
        assert r.status_code == 201, r.text
        assert r.json()["domain"] == name and r.json()["usage"]["used"] == i + 2
    refused = add(growth, names[4])
    assert refused.status_code == 429 and "retry-after" not in refused.headers
    error = refused.json()["error"]
    assert (error["code"], error["kind"], error["limit"], error["used"], error["resets_at"]) == (
        "usage_limit_exceeded",
        "domains",
        5,
        5,
        None,
    )
    assert domains_of(pg_cluster, growth.tenant_id) == {growth.host, *names[:4]}

    gone = remove(growth, names[0])
    assert gone.status_code == 200 and gone.json()["usage"]["used"] == 4
    assert add(growth, names[4]).status_code == 201
    assert domains_of(pg_cluster, growth.tenant_id) == {growth.host, *names[1:]}


def test_starter_tenant_already_uses_its_one_domain(platform: Platform, pg_cluster: Any) -> None:
    with usage_tenant(platform, pg_cluster, "starter") as t:
        r = add(t, f"extra-{uuid.uuid4().hex[:8]}.usage-test.example")
        assert r.status_code == 429 and r.json()["error"]["limit"] == 1 and r.json()["error"]["used"] == 1
        assert domains_of(pg_cluster, t.tenant_id) == {t.host}
        assert t.usage("admin")["domains"] == {
            "used": 1,
            "limit": 1,
            "remaining": 0,
            "period": "level",
            "resets_at": None,
        }


def test_a_taken_domain_is_409_and_costs_no_slot(growth: UsageTenant, pg_cluster: Any) -> None:
    r = add(growth, SEO)  # partner-seo's domain
    assert r.status_code == 409 and r.json()["error"]["code"] == "domain_unavailable"
    assert growth.usage("admin")["domains"]["used"] == 1
    assert domains_of(pg_cluster, "partner-seo") == {SEO}


def test_one_tenant_cannot_delete_another_tenants_domain(growth: UsageTenant, pg_cluster: Any) -> None:
    r = remove(growth, SEO)
    assert r.status_code == 404
    assert domains_of(pg_cluster, "partner-seo") == {SEO}


def test_domains_need_an_admin(growth: UsageTenant, pg_cluster: Any) -> None:
    name = f"c-{uuid.uuid4().hex[:8]}.usage-test.example"
    assert add(growth, name, "client").status_code == 403
    assert add(growth, name, None).status_code == 401
    assert remove(growth, name, "client").status_code == 403
    assert name not in domains_of(pg_cluster, growth.tenant_id)


@pytest.mark.parametrize(
    "domain",
    [
        "localhost",
        "1.2.3.4",
        "shop.example.com:443",
        "bad domain.com",
        "a..b.com",
        "evil.cozyartzmedia.com",
        "cozyartzmedia.com",
        "-x.example.com",
        "x" * 300,
    ],
)
def test_bad_domains_are_422(growth: UsageTenant, domain: str) -> None:
    r = add(growth, domain)
    assert r.status_code == 422 and r.json()["error"]["code"] in ("invalid_domain", "invalid_body", "platform_zone")

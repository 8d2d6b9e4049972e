"""The dashboards: the tenant admin's at the tenant's own host and the platform's at the primary
tenant, as JSON and as white-labelled pages checked in headless Chromium (the rendered DOM, at
390 px and 1280 px, screenshots kept in build/test-artifacts/screenshots/). A page of tenant A
never shows tenant B's name, colours or data; the platform view costs the same number of
queries for 1,000 tenants as for 10."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from decimal import Decimal
from typing import Any, Iterator

import httpx
import pytest

from localrt.http_client import HttpxClient
from localrt.workerd import ROOT
from shared.jwt import HS256Signer, mint_tenant_jwt
from shared.platform_report import (
    DashboardAnswer,
    DashboardQueryError,
    PageQuery,
    page_query,
    platform_report,
    risk_view,
)
from shared.supabase import SupabaseClient
from shared.tiers import PARTNER_MARKUP, Tier, plan_for
from tests.browser import CHROMIUM, Chromium
from tests.support import Platform
from tests.test_support_e2e import PRIMARY_ADMIN, PRIMARY_HOST, call, open_ticket, staff
from tests.usage_support import UsageTenant, usage_tenant

ARTIFACTS = ROOT / "build" / "test-artifacts"
BRAND_A = {
    "brand_name": "Alpha <Bakery> & Co",
    "primary_color": "#0a7d33",
    "secondary_color": "#f59e0b",
    "logo_url": "https://cdn.alpha.example/logo.png",
    "support_email": "help@alpha.example",
}
BRAND_B = {
    "brand_name": "Beta Plumbing",
    "primary_color": "#5b21b6",
    "secondary_color": "#db2777",
    "support_email": "care@beta.example",
}


@pytest.fixture
def a(platform: Platform, pg_cluster: Any) -> Iterator[UsageTenant]:
    with usage_tenant(platform, pg_cluster, "growth") as t:
        yield t


@pytest.fixture
def b(platform: Platform, pg_cluster: Any) -> Iterator[UsageTenant]:
    with usage_tenant(platform, pg_cluster, "starter") as t:
        yield t


def brand(t: UsageTenant, values: dict[str, Any]) -> httpx.Response:
    return call(t.platform, "PATCH", t.host, "/api/tenant/branding", t.session("admin"), json=values)


def risk_order(rows: list[dict[str, Any]]) -> bool:
    keys = [(-len(x["churn_risk"]["reasons"]), -Decimal(x["monthly_price"]), x["tenant_id"]) for x in rows]
    return keys == sorted(keys)


def all_rows(p: Platform, sort: str) -> list[dict[str, Any]]:
    """Every tenant row of the platform view, page by page along `next` (each page checked)."""
    rows: list[dict[str, Any]] = []
    url: str | None = f"/api/platform/dashboard?sort={sort}"
    while url:
        r = call(p, "GET", PRIMARY_HOST, url, staff(p))
        assert r.status_code == 200, r.text
        d = r.json()
        assert d["sort"] == sort and len(d["tenants"]) <= d["per_page"] == 50
        assert d["next"] is None or len(d["tenants"]) == 50
        rows += d["tenants"]
        url = d["next"]
    assert len(rows) == d["total"] and len({x["tenant_id"] for x in rows}) == len(rows)  # no overlap, none missed
    return rows


def test_the_admin_dashboard_as_json(a: UsageTenant, b: UsageTenant) -> None:
    p = a.platform
    assert a.get("/api/health").status_code == 200
    open_ticket(a)
    r = call(p, "GET", a.host, "/api/admin/dashboard", a.session("admin"))
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["tenant"]["tenant_id"] == a.tenant_id and d["tenant"]["subscription_tier"] == "growth"
    usage = {u["kind"]: u for u in d["usage"]}
    assert usage["ai_calls"]["limit"] == 250 and usage["domains"] == {"kind": "domains", "used": 1, "limit": 5}
    assert [x["domain"] for x in d["domains"]] == [a.host] and d["domains"][0]["ssl_status"] == "active"
    assert d["users"]["by_role"] == {"admin": 1, "client": 1}
    assert d["tickets"]["open"] == 1 and d["audit"][0]["action"] == "support.ticket_opened"
    assert d["traffic"] is not None and len(d["traffic"]["series"]) >= 24
    assert call(p, "GET", a.host, "/api/admin/dashboard", a.session("client")).status_code == 403
    assert call(p, "GET", b.host, "/api/admin/dashboard", a.session("admin")).status_code == 401  # A's session at B
    body = json.dumps(call(p, "GET", b.host, "/api/admin/dashboard", b.session("admin")).json())
    assert a.tenant_id not in body and a.host not in body


@pytest.mark.parametrize(
    "values, field",
    [
        ({"primary_color": "red"}, "primary_color"),
        ({"secondary_color": "#12345"}, "secondary_color"),
        ({"logo_url": "javascript:alert(1)"}, "logo_url"),
        ({"logo_url": "http://cdn.example/x.png"}, "logo_url"),
        ({"logo_url": 'https://cdn.example/x.png" onerror="alert(1)'}, "logo_url"),
        ({"support_email": "not-an-address"}, "support_email"),
        ({"brand_name": ""}, "brand_name"),
        ({"tenant_id": "other"}, "tenant_id"),
        ({"primary_color": 123}, "primary_color"),
    ],
)
def test_branding_is_validated(a: UsageTenant, values: dict[str, Any], field: str) -> None:
    r = brand(a, values)
    assert (
        r.status_code == 422 and r.json()["error"]["code"] == "invalid_body" and field in r.json()["error"]["fields"]
    ), r.text


def test_branding_is_the_admins_and_audited(a: UsageTenant) -> None:
    r = call(a.platform, "PATCH", a.host, "/api/tenant/branding", a.session("client"), json={"brand_name": "Mine"})
    assert r.status_code == 403
    r = brand(a, BRAND_A)
    assert r.status_code == 200 and r.json()["branding"] == BRAND_A
    r = brand(a, {"logo_url": None})
    assert r.json()["branding"]["logo_url"] is None and r.json()["branding"]["brand_name"] == BRAND_A["brand_name"]
    with a.pg.connect() as conn:
        n = conn.execute(
            "select count(*) from public.audit_log where tenant_id = %s and action = 'tenant.branding_changed'",
            (a.tenant_id,),
        ).fetchone()[0]
    assert n == 2


def test_the_platform_dashboard_as_json(a: UsageTenant, b: UsageTenant) -> None:
    p = a.platform
    ticket = open_ticket(b)
    with b.pg.connect() as conn:  # b's ticket missed its first response; b used AI less than last month
        conn.execute(
            "update public.support_tickets set first_response_due_at = now() - interval '1 hour' where id = %s",
            (ticket["id"],),
        )
        last = time.strftime("%Y-%m", time.gmtime(time.time() - 32 * 86400))
        conn.execute(
            "insert into public.tenant_usage (tenant_id, usage_type, period, usage_count) values"
            " (%s, 'ai_calls', %s, 40)",
            (b.tenant_id, last),
        )
    r = call(p, "GET", PRIMARY_HOST, "/api/platform/dashboard", staff(p))
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["sort"] == "risk" and risk_order(d["tenants"])  # the default sort: churn risk, then revenue
    rows = {t["tenant_id"]: t for t in all_rows(p, "tenant")}
    assert rows["cozyartz"]["monthly_price"] == "0.00"  # the platform itself
    assert (rows[a.tenant_id]["monthly_price"], rows[a.tenant_id]["customer_price"]) == ("1500.00", "1800.00")
    assert (rows[b.tenant_id]["monthly_price"], rows[b.tenant_id]["customer_price"]) == ("1000.00", "1200.00")
    assert rows[b.tenant_id]["sla_breaches"] == 1 and rows[b.tenant_id]["open_tickets"] == 1
    assert rows[b.tenant_id]["churn_risk"] == {
        "level": "high",
        "reasons": ["usage falling month over month", "open SLA breaches"],
    }
    assert d["totals"]["sla_breaches"] >= 1 and float(d["totals"]["mrr"]) >= 2500
    assert set(d["adoption"]) == {"ai", "custom_domains", "files"}
    assert call(p, "GET", PRIMARY_HOST, "/api/platform/dashboard", staff(p, PRIMARY_ADMIN, "admin")).status_code == 403
    assert call(p, "GET", a.host, "/api/platform/dashboard", a.session("admin")).status_code == 404


def test_the_platform_view_costs_the_same_queries_for_1000_tenants_as_for_10(
    platform: Platform, pg_cluster: Any
) -> None:
    def measure() -> tuple[dict[str, int], float, int]:
        call(platform, "GET", PRIMARY_HOST, "/api/platform/dashboard", staff(platform))  # warm
        time.sleep(0.3)
        platform.subrequests()
        times = []
        for _ in range(3):
            began = time.perf_counter()
            r = call(platform, "GET", PRIMARY_HOST, "/api/platform/dashboard", staff(platform))
            times.append(time.perf_counter() - began)
            assert r.status_code == 200, r.text
        time.sleep(0.3)
        counts = platform.subrequests().get("cmgsite-primary-tenant", {})
        assert len(r.json()["tenants"]) == min(r.json()["total"], 50)
        return counts, sorted(times)[1], r.json()["total"]

    def grow_to(total: int) -> None:
        with pg_cluster.connect() as conn:
            have = conn.execute("select count(*) from public.tenants").fetchone()[0]
            first = conn.execute("select count(*) from public.tenants where tenant_id like 'scale-%%'").fetchone()[0]
            conn.execute(
                "insert into public.tenants (tenant_id, name, domain, type, subscription_tier, script_name)"
                " select 'scale-' || i, 'Scale ' || i, 'scale-' || i || '.example.com', 'custom-domain',"
                " (array['starter','growth','enterprise'])[1 + i %% 3], 'cmgsite-scale-' || i"
                " from generate_series(%s::int, %s::int) i",
                (first + 1, first + total - have),
            )
            conn.execute(
                "insert into public.tenant_usage (tenant_id, usage_type, period, usage_count)"
                " select 'scale-' || i, 'ai_calls', to_char(now(), 'YYYY-MM'), i %% 7"
                " from generate_series(%s::int, %s::int) i",
                (first + 1, first + total - have),
            )

    with pg_cluster.connect() as conn:
        conn.execute("delete from public.tenants where tenant_id like 'scale-%'")
    try:
        grow_to(10)
        small_counts, small_s, small_n = measure()
        grow_to(1000)
        big_counts, big_s, big_n = measure()
    finally:
        with pg_cluster.connect() as conn:
            conn.execute("delete from public.tenants where tenant_id like 'scale-%'")
    assert (small_n, big_n) == (10, 1000)
    assert big_counts == small_counts, (small_counts, big_counts)  # one Supabase query + the metrics queries (one page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "platform-dashboard-scale.json").write_text(
        json.dumps(
            {
                "tenants_small": small_n,
                "median_s_small": round(small_s, 4),
                "tenants_big": big_n,
                "median_s_big": round(big_s, 4),
                "ratio": round(big_s / small_s, 2),
                "subrequests": big_counts,
            },
            indent=2,
        )
    )


DASH = "dash-"


def seed_many(pg: Any, n: int) -> None:
    """n tenants straight in SQL, of every status, tier and partner type, with usage falling or not,
    open alerts, open (breached) and closed tickets, domains and stored bytes."""
    this = time.strftime("%Y-%m", time.gmtime())
    last = time.strftime("%Y-%m", time.gmtime(time.time() - 32 * 86400))
    span = (1, n)
    with pg.connect() as conn:
        conn.execute(
            "insert into public.tenants (tenant_id, name, domain, type, subscription_tier, status, script_name)"
            " select 'dash-' || i, 'Dash ' || i, 'dash-' || i || '.dash-test.example', 'custom-domain',"
            " (array['starter','growth','enterprise'])[1 + i %% 3],"
            " case when i %% 10 = 0 then 'suspended' when i %% 15 = 0 then 'inactive' else 'active' end,"
            " 'cmgsite-dash-' || i from generate_series(%s::int, %s::int) i",
            span,
        )
        conn.execute(
            "insert into public.tenant_usage (tenant_id, usage_type, period, usage_count)"
            " select 'dash-' || i, 'ai_calls', %s, i %% 5 from generate_series(%s::int, %s::int) i"
            " union all select 'dash-' || i, 'ai_calls', %s, 20 from generate_series(%s::int, %s::int) i"
            " where i %% 4 = 0"
            " union all select 'dash-' || i, 'storage', %s, 1000 * i from generate_series(%s::int, %s::int) i"
            " where i %% 6 = 0",
            (this, *span, last, *span, this, *span),
        )
        conn.execute(
            "insert into public.tenant_domains (tenant_id, domain, domain_type, ssl_status, dns_configured)"
            " select 'dash-' || i, 'shop.dash-' || i || '.dash-test.example', 'custom', 'active', true"
            " from generate_series(%s::int, %s::int) i where i %% 7 = 0",
            span,
        )
        conn.execute(
            "insert into public.health_alerts (tenant_id, failures, detail)"
            " select 'dash-' || i, 3, 'down' from generate_series(%s::int, %s::int) i where i %% 12 = 0",
            span,
        )
        conn.execute(
            "insert into public.support_tickets (tenant_id, opened_by, subject, body, tier, status,"
            " first_response_due_at)"
            " select 'dash-' || i, gen_random_uuid(), 'Help', 'Please', 'starter',"
            " case when i %% 18 = 0 then 'closed' else 'open' end,"
            " now() from generate_series(%s::int, %s::int) i where i %% 9 = 0",
            span,
        )
        conn.execute(
            "update public.support_tickets set first_response_due_at = now() - interval '1 hour'"  # missed
            " where tenant_id in (select 'dash-' || i from generate_series(%s::int, %s::int) i"
            " where i %% 2 = 1)",
            span,
        )


def drop_many(pg: Any) -> None:
    with pg.connect() as conn:
        conn.execute("delete from public.tenants where tenant_id like 'dash-%'")  # cascades


@pytest.fixture
def many(platform: Platform, pg_cluster: Any) -> Iterator[int]:
    drop_many(pg_cluster)
    seed_many(pg_cluster, 120)
    try:
        yield 120
    finally:
        drop_many(pg_cluster)


def test_the_platform_totals_are_over_every_tenant_and_the_table_is_paged(
    platform: Platform, pg_cluster: Any, many: int
) -> None:
    p = platform
    d = call(p, "GET", PRIMARY_HOST, "/api/platform/dashboard", staff(p)).json()
    totals = d["totals"]
    with pg_cluster.connect() as conn:
        tenants = conn.execute("select tenant_id, type, subscription_tier, status from public.tenants").fetchall()
        open_alerts = conn.execute("select count(*) from public.health_alerts where status = 'open'").fetchone()[0]
        open_tickets = conn.execute("select count(*) from public.support_tickets where status <> 'closed'").fetchone()[
            0
        ]
    assert d["total"] == totals["tenants"] == len(tenants) >= many + 3
    assert (d["page"], d["per_page"], d["pages"]) == (1, 50, -(-len(tenants) // 50)) and len(d["tenants"]) == 50
    assert d["next"] == "/api/platform/dashboard?page=2&sort=risk" and d["prev"] is None
    # Counts and revenue, recomputed here from the tables and shared.tiers (not from the SQL's rules)
    paying = [t for t in tenants if t[1] != "primary" and t[3] == "active"]
    assert totals["by_status"] == dict(Counter(t[3] for t in tenants))
    assert totals["by_tier"] == dict(Counter(t[2] for t in tenants))
    assert totals["active_customers"] == len(paying)
    mrr = sum((plan_for(t[2]).monthly_price_usd for t in paying), Decimal(0))
    partner = sum(
        (
            plan_for(t[2]).monthly_price_usd * PARTNER_MARKUP
            for t in paying
            if t[1] in ("partner-subdomain", "custom-domain")
        ),
        Decimal(0),
    )
    assert Decimal(totals["mrr"]) == mrr and Decimal(totals["customer_mrr"]) == mrr + partner
    assert (totals["open_alerts"], totals["open_tickets"]) == (open_alerts, open_tickets)
    # ... and the totals are the sums over every row of every page
    rows = all_rows(p, "tenant")
    assert [x["tenant_id"] for x in rows] == sorted(t[0] for t in tenants)
    assert Decimal(totals["mrr"]) == sum((Decimal(x["monthly_price"]) for x in rows), Decimal(0))
    for key in ("open_alerts", "open_tickets", "tickets_this_month", "sla_breaches"):
        assert totals[key] == sum(x[key] for x in rows), key
    customers = [x for x in rows if x["type"] != "primary" and x["status"] == "active"]
    assert totals["at_risk"] == sum(1 for x in customers if x["churn_risk"]["reasons"])
    assert totals["at_risk"] > 0 and totals["sla_breaches"] > 0
    for key, pred in (
        ("ai", lambda x: x["ai_calls"] > 0),
        ("custom_domains", lambda x: x["custom_domains"] > 0),
        ("files", lambda x: x["storage_bytes"] > 0),
    ):
        assert d["adoption"][key] == round(sum(1 for x in customers if pred(x)) / len(customers), 4), key
    dash = {x["tenant_id"]: x for x in rows if x["tenant_id"].startswith(DASH)}
    assert dash["dash-12"]["churn_risk"] == {
        "level": "high",
        "reasons": ["usage falling month over month", "failing health checks"],
    }
    assert dash["dash-10"]["monthly_price"] == "0.00" and dash["dash-10"]["status"] == "suspended"
    assert (dash["dash-1"]["tier"], dash["dash-1"]["monthly_price"], dash["dash-1"]["customer_price"]) == (
        "growth",
        "1500.00",
        "1800.00",
    )
    # every sort walks the same tenants, in its own order
    assert risk_order(all_rows(p, "risk"))
    by_revenue = all_rows(p, "revenue")
    assert [Decimal(x["monthly_price"]) for x in by_revenue] == sorted(
        (Decimal(x["monthly_price"]) for x in by_revenue), reverse=True
    )
    assert [x["name"].lower() for x in all_rows(p, "name")] == sorted(x["name"].lower() for x in rows)
    last = call(p, "GET", PRIMARY_HOST, f"/api/platform/dashboard?page={d['pages']}&sort=name", staff(p)).json()
    assert last["next"] is None and last["prev"] == f"/api/platform/dashboard?page={d['pages'] - 1}&sort=name"
    past = call(p, "GET", PRIMARY_HOST, f"/api/platform/dashboard?page={d['pages'] + 5}", staff(p)).json()
    assert past["tenants"] == [] and past["next"] is None and past["totals"] == totals


@pytest.mark.parametrize(
    "query",
    [
        "page=0",
        "page=-1",
        "page=abc",
        "page=1.5",
        "page=%201",
        "page=",
        "page=1000001",
        "sort=evil",
        "sort=",
        "sort=RISK",
        "sort=risk&sort=name",
        "page=1&page=2",
        "limit=500",
        "offset=50",
    ],
)
def test_a_bad_page_or_sort_is_a_clear_400(platform: Platform, query: str) -> None:
    r = call(platform, "GET", PRIMARY_HOST, f"/api/platform/dashboard?{query}", staff(platform))
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_query", (query, r.text)
    page = call(platform, "GET", PRIMARY_HOST, f"/platform?{query}", staff(platform))
    assert page.status_code == 400 and page.headers["content-type"].startswith("text/html"), (query, page.text[:200])
    assert "<header" in page.text and 'href="/"' in page.text and r.json()["error"]["message"][:20] in page.text


def test_a_tenant_admin_never_sees_the_platform_view(a: UsageTenant, supabase_stack: Any) -> None:
    p = a.platform
    for path in ("/api/platform/dashboard", "/platform", "/api/platform/dashboard?page=0", "/platform?sort=evil"):
        r = call(p, "GET", a.host, path, a.session("admin"))  # at the tenant's own host: nothing is there
        assert r.status_code == 404, (path, r.status_code)
        assert "MRR" not in r.text and "cozyartz" not in r.text
        r = call(p, "GET", PRIMARY_HOST, path, a.session("admin"))  # A's session is not valid at the primary
        assert r.status_code == 401, (path, r.status_code)
        r = call(p, "GET", PRIMARY_HOST, path, staff(p, PRIMARY_ADMIN, "admin"))  # the primary's admin is not staff
        assert r.status_code == 403, (path, r.status_code)

    async def rpc_as_a() -> Any:  # straight at PostgREST with A's admin JWT: RLS shows A alone
        token = mint_tenant_jwt(
            HS256Signer(supabase_stack.jwt_secret),
            user_id=a.users["admin"],
            tenant_id=a.tenant_id,
            tenant_role="admin",
            is_primary=False,
            now=time.time(),
            ttl_seconds=300,
        )
        async with HttpxClient() as http:
            db = SupabaseClient(http, url=supabase_stack.url, api_key=supabase_stack.anon_key, access_token=token)
            return await db.rpc(
                "platform_dashboard",
                {
                    "p_this": time.strftime("%Y-%m"),
                    "p_last": "2000-01",
                    "p_sort": "revenue",
                    "p_limit": 200,
                    "p_offset": 0,
                },
            )

    d = asyncio.run(rpc_as_a())
    anon = httpx.post(
        f"{supabase_stack.rest_url}/rpc/platform_dashboard",
        timeout=30,
        headers={"apikey": supabase_stack.anon_key, "authorization": f"Bearer {supabase_stack.anon_key}"},
        json={"p_this": "2026-01", "p_last": "2025-12"},
    )
    assert anon.status_code in (401, 403) and "totals" not in anon.text, anon.text  # no JWT, no dashboard
    assert d["total"] == d["totals"]["tenants"] == 1 and [x["tenant_id"] for x in d["tenants"]] == [a.tenant_id]
    assert d["by_status"] == {"active": 1} and d["totals"]["mrr"] == "1500.00"  # A alone (growth)


# ---- the logic, on CPython -----------------------------------------------------------------------


def test_page_query_takes_a_page_and_a_sort_and_nothing_else() -> None:
    assert page_query({}) == PageQuery(1, "risk")
    assert page_query({"page": ["3"], "sort": ["name"]}).offset == 100
    for bad in (
        {"page": ["0"]},
        {"page": ["٣"]},
        {"page": [" 1"]},
        {"page": ["1_0"]},
        {"sort": ["Risk"]},
        {"page": ["1", "2"]},
        {"size": ["10"]},
    ):
        with pytest.raises(DashboardQueryError):
            page_query(bad)


def test_the_report_pages_along_next_and_prev() -> None:
    answer = DashboardAnswer.model_validate(
        {
            "total": 120,
            "by_status": {"active": 120},
            "by_tier": {"growth": 120},
            "totals": {
                "tenants": 120,
                "active_customers": 120,
                "mrr": "180000.00",
                "customer_mrr": "216000.00",
                "open_alerts": 0,
                "open_tickets": 0,
                "tickets_this_month": 0,
                "sla_breaches": 0,
                "at_risk": 1,
            },
            "adoption": {"ai": 0.5, "custom_domains": None, "files": 0},
            "tenants": [
                {
                    "tenant_id": "t1",
                    "name": "T",
                    "type": "custom-domain",
                    "tier": "growth",
                    "status": "active",
                    "monthly_price": "1500.00",
                    "customer_price": "1800.00",
                    "uptime_percent": None,
                    "open_alerts": 0,
                    "open_tickets": 0,
                    "tickets_this_month": 0,
                    "sla_breaches": 1,
                    "ai_calls": 0,
                    "custom_domains": 0,
                    "storage_bytes": 0,
                    "risk": ["sla_breaches"],
                }
            ],
        }
    )
    r = platform_report(answer, {"t1": {"requests": 7, "error_rate": 0.0}}, PageQuery(2, "revenue"))
    assert (r["pages"], r["next"], r["prev"]) == (
        3,
        "/api/platform/dashboard?page=3&sort=revenue",
        "/api/platform/dashboard?page=1&sort=revenue",
    )
    assert r["tenants"][0]["churn_risk"] == {"level": "medium", "reasons": ["open SLA breaches"]}
    assert r["tenants"][0]["requests_24h"] == 7 and r["totals"]["by_tier"] == {"growth": 120}
    assert platform_report(answer, {}, PageQuery(3))["next"] is None
    assert risk_view(["usage_falling", "failing_health"])["level"] == "high"


def test_the_sql_price_table_is_shared_tiers(pg_cluster: Any) -> None:
    with pg_cluster.connect() as conn:
        for tier in Tier:
            got = conn.execute("select private.tier_monthly_price(%s)", (tier.value,)).fetchone()[0]
            assert Decimal(got) == plan_for(tier).monthly_price_usd, tier
        assert conn.execute("select private.tier_monthly_price('platinum')").fetchone() == (None,)
    assert PARTNER_MARKUP == Decimal("0.20")  # the SQL's 1.20


# ---- in Chromium ---------------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/bootstrap.sh)")

PAGE_FACTS = """(() => {
  const header = document.querySelector('header');
  return {
    title: document.title,
    brand: header ? (header.querySelector('.brand') || header).textContent : null,
    headerColor: header ? getComputedStyle(header).backgroundColor : null,
    accent: header ? getComputedStyle(header).borderBottomColor : null,
    logo: header && header.querySelector('img') ? header.querySelector('img').getAttribute('src') : null,
    h1: document.querySelector('h1') ? document.querySelector('h1').textContent : null,
    overflow: document.documentElement.scrollWidth > window.innerWidth + 1,
    bars: document.querySelectorAll('svg.chart rect.req').length,
    progress: [...document.querySelectorAll('[role=progressbar]')].map(e => e.getAttribute('aria-valuenow')),
    sections: [...document.querySelectorAll('section.card')].map(s => s.id),
    scripts: document.querySelectorAll('script').length,
    text: document.body.innerText,
    html: document.documentElement.outerHTML,
    links: [...document.querySelectorAll('a')].map(a => a.getAttribute('href')),
  };
})()"""


def rgb(hex_color: str) -> str:
    return "rgb({}, {}, {})".format(*(int(hex_color[i : i + 2], 16) for i in (1, 3, 5)))


@needs_chromium
def test_the_admin_pages_render_white_labelled_and_apart(a: UsageTenant, b: UsageTenant) -> None:
    p = a.platform
    assert brand(a, BRAND_A).status_code == 200 and brand(b, BRAND_B).status_code == 200
    for t in (a, b):
        assert t.get("/api/health").status_code == 200
    with Chromium(p.port) as browser:
        for t, mine, other in ((a, BRAND_A, BRAND_B), (b, BRAND_B, BRAND_A)):
            for width in (390, 1280):
                cookie = t.session("admin")["cookie"]
                tab = browser.tab(width=width, height=900, headers={"Cookie": cookie})
                assert tab.open(f"http://{t.host}/admin") == 200
                f = tab.evaluate(PAGE_FACTS)
                tab.screenshot(ARTIFACTS / "screenshots" / f"admin-{t.tier}-{width}.png")
                tab.close()
                assert f["brand"] == mine["brand_name"] and f["headerColor"] == rgb(mine["primary_color"])
                assert f["h1"] == "Dashboard" and f["title"] == f"Dashboard · {mine['brand_name']}"
                assert not f["overflow"], f"page wider than {width} px"
                assert f["bars"] >= 24 and len(f["progress"]) == 3 and f["scripts"] == 0
                assert {"usage", "traffic", "domains", "users", "audit", "tickets", "health", "files"} <= set(
                    f["sections"]
                )
                assert mine["support_email"] in f["text"] and t.host in f["text"]
                assert other["brand_name"] not in f["text"] and other["primary_color"] not in f["html"]
                other_t = b if t is a else a
                assert other_t.tenant_id not in f["html"] and other_t.host not in f["html"]
                if t is a:
                    assert f["logo"] == BRAND_A["logo_url"] and "<Bakery>" not in f["html"]  # escaped, not markup


@needs_chromium
def test_error_pages_say_what_happened_with_a_way_back_and_the_support_contact(a: UsageTenant) -> None:
    assert brand(a, BRAND_A).status_code == 200
    with Chromium(a.platform.port) as browser:
        tab = browser.tab(width=390, height=800)
        assert tab.open(f"http://{a.host}/admin") == 401  # not signed in
        f = tab.evaluate(PAGE_FACTS)
        tab.screenshot(ARTIFACTS / "screenshots" / "error-401-390.png")
        assert "Sign in first." in f["text"] and "/" in f["links"] and "/auth/login/github" in f["links"]
        assert "mailto:help@alpha.example" in f["links"] and not f["overflow"]
        tab = browser.tab(width=1280, height=800, headers={"Cookie": a.session("client")["cookie"]})
        assert tab.open(f"http://{a.host}/admin") == 403
        f = tab.evaluate(PAGE_FACTS)
        assert "admin role" in f["text"] and "/" in f["links"]


@needs_chromium
def test_home_and_error_pages_carry_the_tenants_own_branding_and_nobody_elses(a: UsageTenant, b: UsageTenant) -> None:
    assert brand(a, BRAND_A).status_code == 200 and brand(b, BRAND_B).status_code == 200
    for t, mine in ((a, BRAND_A), (b, BRAND_B)):
        r = httpx.get(f"{t.platform.url}/", headers={"Host": t.host}, timeout=30)
        csp = r.headers["content-security-policy"]
        assert ("https://cdn.alpha.example" in csp) == ("logo_url" in mine) and "script-src 'none'" in csp
        admin = call(t.platform, "GET", t.host, "/admin", t.session("admin"))
        assert ("https://cdn.alpha.example" in admin.headers["content-security-policy"]) == ("logo_url" in mine)
    with Chromium(a.platform.port) as browser:
        for t, mine, other in ((a, BRAND_A, BRAND_B), (b, BRAND_B, BRAND_A)):
            for path, status in (("/", 200), ("/no-such-page", 404)):
                for width in (390, 1280):
                    tab = browser.tab(width=width, height=800)
                    assert tab.open(f"http://{t.host}{path}") == status
                    f = tab.evaluate(PAGE_FACTS)
                    kind = "home" if status == 200 else "error"
                    tab.screenshot(ARTIFACTS / "screenshots" / f"{kind}-{t.tier}-{width}.png")
                    tab.close()
                    assert f["brand"] == mine["brand_name"], f
                    assert f["headerColor"] == rgb(mine["primary_color"]) and f["accent"] == rgb(
                        mine["secondary_color"]
                    )
                    assert f["logo"] == mine.get("logo_url") and f["scripts"] == 0 and not f["overflow"]
                    assert f"mailto:{mine['support_email']}" in f["links"] and mine["support_email"] in f["text"]
                    assert other["brand_name"] not in f["text"] and other["support_email"] not in f["html"]
                    assert other["primary_color"] not in f["html"] and other["secondary_color"] not in f["html"]
                    assert "cdn.alpha.example" not in f["html"] or t is a
                    assert "<Bakery>" not in f["html"]  # escaped, never markup
                    if status == 404:
                        assert "/auth/login/github" in f["links"] and "/" in f["links"]


def test_branding_written_around_the_api_never_reaches_a_page_unchecked(b: UsageTenant) -> None:
    """A value stored without the API's checks (straight into the table) is checked again when drawn."""
    hostile = {
        "brand_name": "Beta",
        "logo_url": 'https://cdn.example/x.png" onerror="alert(1)',
        "primary_color": "red;}body{display:none",
        "secondary_color": "#12345g",
        "support_email": 'x@y.example"><script>alert(1)</script>',
    }
    with b.pg.connect() as conn:
        conn.execute(
            "update public.tenants set whitelabel_config = %s::jsonb where tenant_id = %s",
            (json.dumps(hostile), b.tenant_id),
        )
    for path in ("/", "/no-such-page"):
        r = httpx.get(f"{b.platform.url}{path}", headers={"Host": b.host}, timeout=30)
        page = r.text
        assert '<span class="brand">Beta</span>' in page, page  # the stored config was read, not a cached default
        assert "<img" not in page and "onerror" not in page and "<script" not in page, page
        assert "display:none" not in page and "#12345g" not in page
        assert "cdn.example" not in r.headers["content-security-policy"]


@needs_chromium
def test_the_platform_page_in_chromium(a: UsageTenant, b: UsageTenant, many: int) -> None:
    p = a.platform
    api = call(p, "GET", PRIMARY_HOST, "/api/platform/dashboard?sort=tenant&page=2", staff(p)).json()
    with Chromium(p.port) as browser:
        for width in (390, 1280):
            tab = browser.tab(width=width, height=900, headers={"Cookie": staff(p)["cookie"]})
            assert tab.open(f"http://{PRIMARY_HOST}/platform?sort=tenant") == 200
            f = tab.evaluate(PAGE_FACTS + ".text")
            facts = tab.evaluate(PAGE_FACTS)
            tab.screenshot(ARTIFACTS / "screenshots" / f"platform-{width}.png")
            assert "Monthly recurring revenue" in f and f"${api['totals']['mrr']}" in f
            assert f"page 1 of {api['pages']}" in f and f"1–50 of {api['total']}" in f
            assert not facts["overflow"] and facts["scripts"] == 0
            assert {"mrr", "counts", "adoption", "ops", "tenants"} <= set(facts["sections"])
            assert tab.evaluate("document.querySelectorAll('#tenants tbody tr').length") == 50
            nxt = tab.evaluate("document.querySelector('a[rel=next]').getAttribute('href')")
            assert nxt == "/platform?page=2&sort=tenant"
            tab.close()
        tab = browser.tab(width=1280, height=900, headers={"Cookie": staff(p)["cookie"]})
        assert tab.open(f"http://{PRIMARY_HOST}/platform?page=2&sort=tenant") == 200  # the page is a client of the API
        shown = tab.evaluate("[...document.querySelectorAll('#tenants tbody tr')].map(r => r.cells[0].textContent)")
        assert shown == [x["tenant_id"] for x in api["tenants"]]
        tab.close()
        tab = browser.tab(width=390, height=900, headers={"Cookie": staff(p)["cookie"]})
        assert tab.open(f"http://{PRIMARY_HOST}/platform?sort=nonsense") == 400
        f = tab.evaluate(PAGE_FACTS)
        assert "sort must be one of" in f["text"] and "/" in f["links"] and not f["overflow"]
        tab.close()
        tab = browser.tab(width=1280, height=900, headers={"Cookie": a.session("admin")["cookie"]})
        assert tab.open(f"http://{a.host}/platform") == 404  # only on the primary tenant


def test_the_operator_sets_branding_with_the_same_rules(a: UsageTenant, supabase_stack: Any) -> None:
    from tests.test_health_e2e import run_cli

    env = {"SUPABASE_URL": supabase_stack.url, "SUPABASE_SERVICE_ROLE_KEY": supabase_stack.service_role_key}
    code, out, err = run_cli(
        a.platform,
        env,
        "branding",
        a.tenant_id,
        "--primary-color",
        "#112233",
        "--support-email",
        "ops@alpha.example",
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["branding"]["primary_color"] == "#112233"
    for bad in (["--primary-color", "blue"], ["--logo-url", "http://x.example/l.png"], ["--clear", "tenant_id"], []):
        code, _, err = run_cli(a.platform, env, "branding", a.tenant_id, *bad)
        assert code == 2, (bad, err)
    d = call(a.platform, "GET", a.host, "/api/admin/dashboard", a.session("admin")).json()
    assert d["branding"]["primary_color"] == "#112233" and d["branding"]["support_email"] == "ops@alpha.example"
    code, out, err = run_cli(a.platform, env, "branding", a.tenant_id, "--clear", "support_email", "--json")
    assert code == 0 and json.loads(out)["branding"]["support_email"] is None, err

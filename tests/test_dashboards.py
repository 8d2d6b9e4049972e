"""The dashboards: the tenant admin's at the tenant's own host and the platform's at the primary
tenant, as JSON and as white-labelled pages checked in headless Chromium (the rendered DOM, at
390 px and 1280 px, screenshots kept in build/test-artifacts/screenshots/). A page of tenant A
never shows tenant B's name, colours or data; the platform view costs the same number of
queries for 1,000 tenants as for 10."""
from __future__ import annotations

import json
import time
from typing import Any, Iterator

import httpx
import pytest

from localrt.workerd import ROOT
from tests.browser import CHROMIUM, Chromium
from tests.support import Platform
from tests.test_support_e2e import PRIMARY_ADMIN, PRIMARY_HOST, call, open_ticket, staff
from tests.usage_support import UsageTenant, usage_tenant

ARTIFACTS = ROOT / "build" / "test-artifacts"
BRAND_A = {"brand_name": "Alpha <Bakery> & Co", "primary_color": "#0a7d33", "secondary_color": "#f59e0b",
           "logo_url": "https://cdn.alpha.example/logo.png", "support_email": "help@alpha.example"}
BRAND_B = {"brand_name": "Beta Plumbing", "primary_color": "#5b21b6", "secondary_color": "#db2777",
           "support_email": "care@beta.example"}


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


@pytest.mark.parametrize("values, field", [
    ({"primary_color": "red"}, "primary_color"), ({"secondary_color": "#12345"}, "secondary_color"),
    ({"logo_url": "javascript:alert(1)"}, "logo_url"), ({"logo_url": "http://cdn.example/x.png"}, "logo_url"),
    ({"logo_url": 'https://cdn.example/x.png" onerror="alert(1)'}, "logo_url"),
    ({"support_email": "not-an-address"}, "support_email"), ({"brand_name": ""}, "brand_name"),
    ({"tenant_id": "other"}, "tenant_id"), ({"primary_color": 123}, "primary_color"),
])
def test_branding_is_validated(a: UsageTenant, values: dict[str, Any], field: str) -> None:
    r = brand(a, values)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_body" and field in r.json()["error"]["fields"], r.text


def test_branding_is_the_admins_and_audited(a: UsageTenant) -> None:
    r = call(a.platform, "PATCH", a.host, "/api/tenant/branding", a.session("client"), json={"brand_name": "Mine"})
    assert r.status_code == 403
    r = brand(a, BRAND_A)
    assert r.status_code == 200 and r.json()["branding"] == BRAND_A
    r = brand(a, {"logo_url": None})
    assert r.json()["branding"]["logo_url"] is None and r.json()["branding"]["brand_name"] == BRAND_A["brand_name"]
    with a.pg.connect() as conn:
        n = conn.execute("select count(*) from public.audit_log where tenant_id = %s and action = 'tenant.branding_changed'",
                         (a.tenant_id,)).fetchone()[0]
    assert n == 2


def test_the_platform_dashboard_as_json(a: UsageTenant, b: UsageTenant) -> None:
    p = a.platform
    ticket = open_ticket(b)
    with b.pg.connect() as conn:  # b's ticket missed its first response; b used AI less than last month
        conn.execute("update public.support_tickets set first_response_due_at = now() - interval '1 hour'"
                     " where id = %s", (ticket["id"],))
        last = time.strftime("%Y-%m", time.gmtime(time.time() - 32 * 86400))
        conn.execute("insert into public.tenant_usage (tenant_id, usage_type, period, usage_count) values"
                     " (%s, 'ai_calls', %s, 40)", (b.tenant_id, last))
    r = call(p, "GET", PRIMARY_HOST, "/api/platform/dashboard", staff(p))
    assert r.status_code == 200, r.text
    d = r.json()
    rows = {t["tenant_id"]: t for t in d["tenants"]}
    assert rows["cozyartz"]["monthly_price"] == "0.00"  # the platform itself
    assert (rows[a.tenant_id]["monthly_price"], rows[a.tenant_id]["customer_price"]) == ("1500.00", "1800.00")
    assert (rows[b.tenant_id]["monthly_price"], rows[b.tenant_id]["customer_price"]) == ("1000.00", "1200.00")
    assert rows[b.tenant_id]["sla_breaches"] == 1 and rows[b.tenant_id]["open_tickets"] == 1
    assert rows[b.tenant_id]["churn_risk"] == {"level": "high",
                                               "reasons": ["usage falling month over month", "open SLA breaches"]}
    assert d["totals"]["sla_breaches"] >= 1 and float(d["totals"]["mrr"]) >= 2500
    assert set(d["adoption"]) == {"ai", "custom_domains", "files"}
    assert call(p, "GET", PRIMARY_HOST, "/api/platform/dashboard", staff(p, PRIMARY_ADMIN, "admin")).status_code == 403
    assert call(p, "GET", a.host, "/api/platform/dashboard", a.session("admin")).status_code == 404


def test_the_platform_view_costs_the_same_queries_for_1000_tenants_as_for_10(platform: Platform,
                                                                               pg_cluster: Any) -> None:
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
        return counts, sorted(times)[1], len(r.json()["tenants"])

    def grow_to(total: int) -> None:
        with pg_cluster.connect() as conn:
            have = conn.execute("select count(*) from public.tenants").fetchone()[0]
            first = conn.execute("select count(*) from public.tenants where tenant_id like 'scale-%%'").fetchone()[0]
            conn.execute("insert into public.tenants (tenant_id, name, domain, type, subscription_tier, script_name)"
                         " select 'scale-' || i, 'Scale ' || i, 'scale-' || i || '.example.com', 'custom-domain',"
                         " (array['starter','growth','enterprise'])[1 + i %% 3], 'cmgsite-scale-' || i"
                         " from generate_series(%s::int, %s::int) i", (first + 1, first + total - have))
            conn.execute("insert into public.tenant_usage (tenant_id, usage_type, period, usage_count)"
                         " select 'scale-' || i, 'ai_calls', to_char(now(), 'YYYY-MM'), i %% 7"
                         " from generate_series(%s::int, %s::int) i", (first + 1, first + total - have))

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
    assert big_counts == small_counts, (small_counts, big_counts)  # one Supabase query + the metrics queries
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "platform-dashboard-scale.json").write_text(json.dumps({
        "tenants_small": small_n, "median_s_small": round(small_s, 4), "tenants_big": big_n,
        "median_s_big": round(big_s, 4), "ratio": round(big_s / small_s, 2), "subrequests": big_counts}, indent=2))


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
    return "rgb({}, {}, {})".format(*(int(hex_color[i:i + 2], 16) for i in (1, 3, 5)))


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
                assert {"usage", "traffic", "domains", "users", "audit", "tickets", "health", "files"} <= set(f["sections"])
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
                    assert f["headerColor"] == rgb(mine["primary_color"]) and f["accent"] == rgb(mine["secondary_color"])
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
    hostile = {"brand_name": "Beta", "logo_url": 'https://cdn.example/x.png" onerror="alert(1)',
               "primary_color": "red;}body{display:none", "secondary_color": "#12345g",
               "support_email": "x@y.example\"><script>alert(1)</script>"}
    with b.pg.connect() as conn:
        conn.execute("update public.tenants set whitelabel_config = %s::jsonb where tenant_id = %s",
                     (json.dumps(hostile), b.tenant_id))
    for path in ("/", "/no-such-page"):
        r = httpx.get(f"{b.platform.url}{path}", headers={"Host": b.host}, timeout=30)
        page = r.text
        assert "<span class=\"brand\">Beta</span>" in page, page  # the stored config was read, not a cached default
        assert "<img" not in page and "onerror" not in page and "<script" not in page, page
        assert "display:none" not in page and "#12345g" not in page
        assert "cdn.example" not in r.headers["content-security-policy"]


@needs_chromium
def test_the_platform_page_in_chromium(a: UsageTenant, b: UsageTenant) -> None:
    p = a.platform
    with Chromium(p.port) as browser:
        for width in (390, 1280):
            tab = browser.tab(width=width, height=900, headers={"Cookie": staff(p)["cookie"]})
            assert tab.open(f"http://{PRIMARY_HOST}/platform") == 200
            f = tab.evaluate(PAGE_FACTS + ".text")
            facts = tab.evaluate(PAGE_FACTS)
            tab.screenshot(ARTIFACTS / "screenshots" / f"platform-{width}.png")
            assert a.tenant_id in f and b.tenant_id in f and "Monthly recurring revenue" in f
            assert not facts["overflow"] and facts["scripts"] == 0
            assert {"mrr", "adoption", "ops", "tenants"} <= set(facts["sections"])
        tab = browser.tab(width=1280, height=900, headers={"Cookie": a.session("admin")["cookie"]})
        assert tab.open(f"http://{a.host}/platform") == 404  # only on the primary tenant


def test_the_operator_sets_branding_with_the_same_rules(a: UsageTenant, supabase_stack: Any) -> None:
    from tests.test_health_e2e import run_cli

    env = {"SUPABASE_URL": supabase_stack.url, "SUPABASE_SERVICE_ROLE_KEY": supabase_stack.service_role_key}
    code, out, err = run_cli(a.platform, env, "branding", a.tenant_id, "--primary-color", "#112233",
                             "--support-email", "ops@alpha.example", "--json")
    assert code == 0, err
    assert json.loads(out)["branding"]["primary_color"] == "#112233"
    for bad in (["--primary-color", "blue"], ["--logo-url", "http://x.example/l.png"], ["--clear", "tenant_id"], []):
        code, _, err = run_cli(a.platform, env, "branding", a.tenant_id, *bad)
        assert code == 2, (bad, err)
    d = call(a.platform, "GET", a.host, "/api/admin/dashboard", a.session("admin")).json()
    assert d["branding"]["primary_color"] == "#112233" and d["branding"]["support_email"] == "ops@alpha.example"
    code, out, err = run_cli(a.platform, env, "branding", a.tenant_id, "--clear", "support_email", "--json")
    assert code == 0 and json.loads(out)["branding"]["support_email"] is None, err

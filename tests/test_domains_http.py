"""Issue 10's domain attacks, end to end: the tenant API on the real workerd (dispatcher → tenant
Worker → PostgREST → PostgreSQL) and the operator's CLI (`scripts/tenants.py --local`) on the same
platform, with a loopback DNS-over-HTTPS resolver (tests/fake_doh.py) the Worker and the CLI query.

  1. quota bypass: operator adds + tenant adds (sequential and concurrent) stop at the tier;
  3. squatting: a name under, above or equal to another tenant's is refused with one answer, a
     partner-subdomain tenant adds no custom domain, a claim is routed only once its token is
     seen (DoH, from the Worker through the runtime's fetch; or the operator's verify);
  4. the primary domain cannot be deleted through the API;
  9. `domains status` is read only, and no routing write routes a tenant whose Worker is missing.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any, Iterator

import httpx
import pytest

from shared.session import issue_session
from tenant_worker.sessions import SESSION_COOKIE
from tests.fake_doh import FakeDoh
from tests.support import Platform
from tests.test_tenant_cli import Cli, _cleanup, health
from tests.usage_support import UsageTenant, usage_tenant

PARTNER1_ADMIN = "00000000-0000-4000-8000-000000000011"  # seed.sql


@pytest.fixture(scope="module")
def doh() -> Iterator[FakeDoh]:
    with FakeDoh() as fake:
        yield fake


@pytest.fixture
def cli(platform: Platform, supabase_stack: Any, pg_cluster: Any, doh: FakeDoh) -> Iterator[Cli]:
    env = {
        "SUPABASE_URL": supabase_stack.url,
        "SUPABASE_SERVICE_ROLE_KEY": supabase_stack.service_role_key,
        "SUPABASE_ANON_KEY": supabase_stack.anon_key,
        "SUPABASE_JWT_SECRET": supabase_stack.jwt_secret,
        "DOH_RESOLVER_URL": doh.url,
    }
    runner = Cli(platform, env)
    try:
        yield runner
    finally:
        _cleanup(runner, pg_cluster)


@pytest.fixture
def growth(platform: Platform, pg_cluster: Any, doh: FakeDoh) -> Iterator[UsageTenant]:
    with usage_tenant(platform, pg_cluster, "growth", vars_={"DOH_RESOLVER_URL": doh.url}) as t:
        yield t


def name(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}.domains-test.example"


def add(t: UsageTenant, domain: str, role: str = "admin") -> httpx.Response:
    return t.post("/api/domains", json={"domain": domain}, auth=t.session(role))


def call(t: UsageTenant, method: str, path: str, role: str = "admin") -> httpx.Response:
    return httpx.request(method, t.platform.url + path, headers={"Host": t.host, **t.session(role)}, timeout=60)


def rows(pg: Any, tenant_id: str) -> dict[str, str]:
    with pg.connect() as conn:
        return dict(
            conn.execute(
                "select domain, verification_status from public.tenant_domains where tenant_id = %s", (tenant_id,)
            ).fetchall()
        )


def d1_domains(platform: Platform, tenant_id: str) -> set[str]:
    return {r["domain"] for r in platform.rows("SELECT domain FROM tenant_domains WHERE tenant_id = ?1", tenant_id)}


def without_request_id(r: httpx.Response) -> dict[str, Any]:
    error = dict(r.json()["error"])
    error.pop("request_id")
    return error


# ---- 1. one quota, whichever path adds ---------------------------------------------------------
def test_operator_adds_then_tenant_adds_stop_at_the_tier(growth: UsageTenant, cli: Cli, pg_cluster: Any) -> None:
    """The reported bypass: growth (5), the operator adds 3 with the CLI, the admin then tries 4."""
    for i in range(3):
        code, _, err = cli("add-domain", growth.tenant_id, name(f"op{i}"))
        assert code == 0, err
    assert growth.usage("admin")["domains"] == {
        "used": 4,
        "limit": 5,
        "remaining": 1,
        "period": "level",
        "resets_at": None,
    }  # Supabase's count, not a stale meter
    results = [add(growth, name(f"api{i}")) for i in range(4)]
    assert [r.status_code for r in results] == [201, 429, 429, 429]
    assert results[0].json()["usage"]["used"] == 5
    refused = results[1]
    assert refused.json()["error"] == {
        "code": "usage_limit_exceeded",
        "message": refused.json()["error"]["message"],
        "kind": "domains",
        "limit": 5,
        "used": 5,
        "resets_at": None,
        "request_id": refused.headers["x-request-id"],
    }
    assert "retry-after" not in refused.headers
    assert len(rows(pg_cluster, growth.tenant_id)) == 5
    code, _, err = cli("add-domain", growth.tenant_id, name("op9"))
    assert code == 2 and "tier growth allows 5 domain(s)" in err
    assert len(rows(pg_cluster, growth.tenant_id)) == 5


def test_concurrent_api_and_cli_adds_cannot_pass_the_quota(growth: UsageTenant, cli: Cli, pg_cluster: Any) -> None:
    """Eight API adds and three CLI adds at once for the 4 free slots: exactly 4 land."""
    cli_codes: list[int] = []

    def operator(i: int) -> None:
        cli_codes.append(cli("add-domain", growth.tenant_id, name(f"cop{i}"), "--quiet")[0])

    async def tenant() -> list[httpx.Response]:
        headers = {"Host": growth.host, **growth.session("admin")}
        async with httpx.AsyncClient(base_url=growth.platform.url, timeout=120) as client:
            return await asyncio.gather(
                *(client.post("/api/domains", json={"domain": name(f"cap{i}")}, headers=headers) for i in range(8))
            )

    threads = [threading.Thread(target=operator, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    api = asyncio.run(tenant())
    for t in threads:
        t.join(120)
    assert all(r.status_code in (201, 429) for r in api), [r.text for r in api]
    assert all(c in (0, 2) for c in cli_codes) and len(cli_codes) == 3
    landed = sum(r.status_code == 201 for r in api) + cli_codes.count(0)
    assert landed == 4
    assert len(rows(pg_cluster, growth.tenant_id)) == 5
    assert growth.usage("admin")["domains"]["used"] == 5


# ---- 3. squatting -------------------------------------------------------------------------------
def test_a_name_under_above_or_equal_to_another_tenants_is_refused_alike(
    growth: UsageTenant, platform: Platform, pg_cluster: Any, cli: Cli, doh: FakeDoh
) -> None:
    with usage_tenant(platform, pg_cluster, "growth") as victim:
        attempts = {
            "under partner-seo": "login.partner-seo.com",
            "equal": "partner-seo.com",
            "under a tenant": f"login.{victim.host}",
            "above a tenant": victim.host.split(".", 1)[1],
        }
        answers = {what: add(growth, domain) for what, domain in attempts.items()}
        assert {r.status_code for r in answers.values()} == {409}
        bodies = [without_request_id(r) for r in answers.values()]
        assert all(b == {"code": "domain_unavailable", "message": "That domain is not available."} for b in bodies)
        for r in answers.values():  # nothing names the holder
            assert "partner-seo" not in r.json()["error"]["message"] and victim.tenant_id not in r.text
        assert set(rows(pg_cluster, growth.tenant_id)) == {growth.host}
        # Even if someone publishes a token, there is nothing to verify and nothing for repair to route.
        assert cli("verify", "--repair")[0] == 0
        r = health(platform, "login.partner-seo.com")
        assert r.status_code == 404
        assert health(platform, "partner-seo.com").json()["tenant_id"] == "partner-seo"


def test_platform_names_are_refused_through_the_api(growth: UsageTenant) -> None:
    for domain in (
        "cozyartzmedia.com",
        "www.cozyartzmedia.com",
        "partner9.cozyartzmedia.com",
        "login.partner1.cozyartzmedia.com",
    ):
        r = add(growth, domain)
        assert r.status_code == 422 and r.json()["error"]["code"] == "platform_zone", r.text


def test_a_partner_subdomain_tenant_adds_no_custom_domain_through_the_api(platform: Platform, pg_cluster: Any) -> None:
    secret = platform.registry.secrets_of("cmgsite-partner-tenant")["SESSION_SECRET"]
    token = issue_session(
        secret,
        tenant_id="partner1",
        user_id=PARTNER1_ADMIN,
        role="admin",  # type: ignore[arg-type]
        now=time.time(),
    )
    r = httpx.post(
        platform.url + "/api/domains",
        json={"domain": name("p1shop")},
        timeout=60,
        headers={"Host": "partner1.cozyartzmedia.com", "cookie": f"{SESSION_COOKIE}={token}"},
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "custom_domains_not_allowed", r.text
    assert set(rows(pg_cluster, "partner1")) == {"partner1.cozyartzmedia.com"}


def test_a_claim_is_routed_only_after_the_worker_sees_its_txt_record(
    growth: UsageTenant, cli: Cli, doh: FakeDoh, platform: Platform, pg_cluster: Any
) -> None:
    domain = name("shop")
    r = add(growth, domain)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["verification"]["status"] == "pending"
    txt, http = body["verification"]["methods"]
    token = txt["value"]
    assert txt == {"type": "dns-txt", "name": f"_cmgsite-challenge.{domain}", "value": token} and len(token) == 64
    assert http == {"type": "http", "url": f"http://{domain}/.well-known/cmgsite-challenge/{token}", "body": token}
    assert call(growth, "GET", f"/api/domains/{domain}").json()["verification"]["methods"][0]["value"] == token
    assert call(growth, "GET", f"/api/domains/{domain}", role="client").status_code == 403

    # Not proven: refused with the instructions again, and never routed, whatever the operator runs.
    doh.txt(f"_cmgsite-challenge.{domain}", "0" * 64)  # someone else's guess
    r = call(growth, "POST", f"/api/domains/{domain}/verify")
    assert r.status_code == 422 and r.json()["error"]["code"] == "verification_failed", r.text
    assert r.json()["error"]["verification"]["methods"][0]["value"] == token
    assert (f"_cmgsite-challenge.{domain}", "TXT") in doh.queries  # asked by the Worker, through its fetch
    assert cli("verify", "--repair")[0] == 0
    code, _, _ = cli("domains", "status", growth.tenant_id, "--refresh")
    assert code == 0
    assert domain not in d1_domains(platform, growth.tenant_id)
    assert health(platform, domain).status_code == 404
    assert rows(pg_cluster, growth.tenant_id)[domain] == "pending"

    doh.txt(f"_cmgsite-challenge.{domain}", token)
    r = call(growth, "POST", f"/api/domains/{domain}/verify")
    assert r.status_code == 200, r.text
    assert r.json()["verification"]["status"] == "verified" and "methods" not in r.json()["verification"]
    assert rows(pg_cluster, growth.tenant_id)[domain] == "verified"
    assert domain not in d1_domains(platform, growth.tenant_id)  # the Worker never writes routing
    assert cli("verify", "--repair")[0] == 0
    assert health(platform, domain).json()["tenant_id"] == growth.tenant_id
    platform.purge(domain)


def test_the_operator_verifies_a_claim_with_the_same_check(
    growth: UsageTenant, cli: Cli, doh: FakeDoh, platform: Platform
) -> None:
    domain = name("opv")
    token = add(growth, domain).json()["verification"]["methods"][0]["value"]
    code, _, err = cli("domains", "verify", growth.tenant_id, domain)
    assert code == 2 and f"not verified yet: no TXT record _cmgsite-challenge.{domain}" in err
    code, _, err = cli("add-domain", growth.tenant_id, domain)  # no approving a claim by re-adding it
    assert code == 2 and "pending proof of ownership" in err
    code, out, _ = cli("domains", "status", growth.tenant_id, "--json")
    row = next(r for r in json.loads(out) if r["domain"] == domain)
    assert (row["verification_status"], row["routed"]) == ("pending", False)
    assert row["verification_detail"] and "no TXT record" in row["verification_detail"]
    doh.txt(f"_cmgsite-challenge.{domain}", token)
    code, _, err = cli("domains", "verify", growth.tenant_id, domain)
    assert code == 0, err
    assert health(platform, domain).json()["tenant_id"] == growth.tenant_id
    platform.purge(domain)


# ---- 4. the primary domain -----------------------------------------------------------------------
def test_an_admin_cannot_delete_the_sites_primary_domain(
    growth: UsageTenant, platform: Platform, pg_cluster: Any
) -> None:
    r = call(growth, "DELETE", f"/api/domains/{growth.host}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "primary_domain", r.text
    assert call(growth, "DELETE", f"/api/domains/{growth.host}", role="client").status_code == 403
    assert set(rows(pg_cluster, growth.tenant_id)) == {growth.host}
    assert growth.usage("admin")["domains"]["used"] == 1
    assert health(platform, growth.host).status_code == 200
    extra = name("extra")
    assert add(growth, extra).status_code == 201
    gone = call(growth, "DELETE", f"/api/domains/{extra}")
    assert gone.status_code == 200 and gone.json()["usage"]["used"] == 1
    assert call(growth, "DELETE", "/api/domains/partner-seo.com").status_code == 404  # another tenant's: unseen


# ---- 9. status is read only; never route to a missing Worker --------------------------------------
def test_domains_status_writes_nothing_and_no_route_reaches_a_missing_worker(
    cli: Cli, platform: Platform, pg_cluster: Any
) -> None:
    host = name("noworker").replace("domains-test.example", "cli-test.example")
    code, _, err = cli(
        "add",
        "cli-nowk",
        "--name",
        "No Worker",
        "--type",
        "custom-domain",
        "--domain",
        host,
        "--tier",
        "starter",
        "--no-deploy",
    )
    assert code == 0, err
    assert "not deployed" in err
    assert d1_domains(platform, "cli-nowk") == set()
    assert health(platform, host).status_code == 404  # not routed: never a 502 from a missing Worker

    with pg_cluster.connect() as conn:  # Cloudflare (locally: always active) and Supabase now disagree
        conn.execute("update public.tenant_domains set ssl_status = 'pending' where domain = %s", (host,))

    def state() -> tuple[Any, ...]:
        with pg_cluster.connect() as conn:
            sb = conn.execute(
                "select domain, ssl_status, dns_configured, verification_status, updated_at"
                " from public.tenant_domains order by domain"
            ).fetchall()
        return (
            sb,
            platform.rows("SELECT * FROM tenant_domains ORDER BY domain"),
            platform.rows("SELECT * FROM tenants ORDER BY tenant_id"),
        )

    before = state()
    for argv in (("domains", "status"), ("domains", "status", "cli-nowk"), ("domains", "status", "--json")):
        assert cli(*argv)[0] == 0
    assert state() == before  # read only

    code, _, err = cli("domains", "status", "cli-nowk", "--refresh")  # writes SSL state, still routes nothing
    assert code == 0, err
    with pg_cluster.connect() as conn:
        assert conn.execute("select ssl_status from public.tenant_domains where domain = %s", (host,)).fetchone() == (
            "active",
        )
    assert d1_domains(platform, "cli-nowk") == set() and health(platform, host).status_code == 404
    code, out, _ = cli("verify", "--json")
    assert code == 3 and "Worker cmgsite-cli-nowk is missing" in out

    assert cli("deploy", "cli-nowk")[0] == 0  # the Worker exists now: its hosts are routed
    assert health(platform, host).json()["tenant_id"] == "cli-nowk"

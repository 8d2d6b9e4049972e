"""Per-tenant metrics on workerd: one data point per request from the dispatcher and from the
tenant Worker, through the METRICS binding into the local Analytics Engine store, read back with
the shared queries (from the file, and by the Worker itself over the SQL API)."""

from __future__ import annotations

import secrets
import time
from typing import Any, Callable, Iterator

import httpx
import pytest

from localrt.metrics_store import SqliteMetricsSource
from tests.auth_support import AuthWorld, Browser
from tests.support import Platform
from tests.usage_support import UsageTenant, usage_tenant

SEO = "partner-seo.com"


def rows(platform: Platform, sql: str) -> list[dict[str, Any]]:
    import asyncio

    return asyncio.run(SqliteMetricsSource(platform.host.metrics_store).query(sql))


def points(platform: Platform, tenant_id: str) -> list[dict[str, Any]]:
    return rows(
        platform,
        "SELECT index1, blob1 AS source, blob2 AS route, blob3 AS method, blob4 AS class,"
        " blob5 AS code, blob6 AS feature, blob7 AS provider, blob8 AS outcome, double1 AS latency,"
        f" double2 AS status FROM cmgsite_metrics WHERE index1 = '{tenant_id}' ORDER BY timestamp",
    )


def served(platform: Platform, tenant_id: str) -> list[dict[str, Any]]:
    """The tenant's points without the host's warm-up request (it reaches the Worker directly)."""
    return [r for r in points(platform, tenant_id) if r["code"] != "context_refused"]


def eventually(
    fetch: Callable[[], list[dict[str, Any]]], ready: Callable[[list[dict[str, Any]]], bool], timeout: float = 20.0
) -> list[dict[str, Any]]:
    """Points are written in waitUntil, after the response: wait until they have landed."""
    deadline = time.monotonic() + timeout
    found = fetch()
    while not ready(found) and time.monotonic() < deadline:
        time.sleep(0.2)
        found = fetch()
    return found


@pytest.fixture
def tenant(platform: Platform, pg_cluster: Any) -> Iterator[UsageTenant]:
    with usage_tenant(platform, pg_cluster, "starter") as t:
        yield t


def test_each_request_records_one_point_from_each_worker(tenant: UsageTenant) -> None:
    p = tenant.platform
    assert tenant.get("/api/health").status_code == 200
    assert tenant.get("/api/no-such-thing").status_code == 404
    assert tenant.generate().status_code == 200
    got = eventually(lambda: points(p, tenant.tenant_id), lambda r: len(r) >= 7)
    # The host's warm-up request reached the new Worker directly, not through the dispatcher: refused,
    # and recorded as such (on Cloudflare nothing but the dispatcher can reach a tenant Worker).
    warmup = [r for r in got if r["code"] == "context_refused"]
    assert len(warmup) == 1 and warmup[0]["status"] == 403
    got = [r for r in got if r["code"] != "context_refused"]
    by_source: dict[str, list[dict[str, Any]]] = {}
    for r in got:
        by_source.setdefault(r["source"], []).append(r)
    assert len(by_source["dispatcher"]) == 3 and len(by_source["tenant"]) == 3, got
    assert sorted((r["route"], r["class"]) for r in by_source["dispatcher"]) == [
        ("api", "2xx"),
        ("api", "2xx"),
        ("api", "4xx"),
    ]
    tenant_rows = {r["route"]: r for r in by_source["tenant"]}
    assert set(tenant_rows) == {"health", "-", "ai_generate"}  # route names, never raw paths
    assert tenant_rows["-"]["code"] == "not_found" and tenant_rows["-"]["status"] == 404
    ai = tenant_rows["ai_generate"]
    assert (ai["method"], ai["feature"], ai["outcome"], ai["class"]) == ("POST", "ai", "success", "2xx")
    assert all(r["latency"] >= 0 for r in got)
    assert not any("/" in r["route"] for r in got)


def test_errors_are_recorded_by_code_and_the_usage_limit_is_a_failed_ai_call(tenant: UsageTenant) -> None:
    p = tenant.platform
    r = tenant.post("/api/ai/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    got = eventually(lambda: served(p, tenant.tenant_id), lambda rs: any(x["source"] == "tenant" for x in rs))
    row = next(x for x in got if x["source"] == "tenant")
    assert (row["code"], row["feature"], row["outcome"]) == ("invalid_json", "ai", "failure")


def test_unknown_hosts_are_recorded_without_any_tenant(platform: Platform) -> None:
    before = rows(platform, "SELECT COUNT(*) AS n FROM cmgsite_metrics WHERE index1 = '-' AND blob5 = 'not_found'")
    host = f"nobody-{secrets.token_hex(4)}.example"
    assert platform.get(host).status_code == 404
    after = eventually(
        lambda: rows(platform, "SELECT COUNT(*) AS n FROM cmgsite_metrics WHERE index1 = '-' AND blob5 = 'not_found'"),
        lambda r: r[0]["n"] > before[0]["n"],
    )
    assert after[0]["n"] == before[0]["n"] + 1
    # The made-up host itself is stored nowhere.
    assert rows(platform, f"SELECT COUNT(*) AS n FROM cmgsite_metrics WHERE index1 = '{host}'")[0]["n"] == 0


def test_sign_ins_are_recorded_by_provider_and_outcome(auth_world: AuthWorld) -> None:
    p = auth_world.platform
    host, tid = "partner1.cozyartzmedia.com", "partner1"

    def signins() -> list[dict[str, Any]]:
        return rows(
            p,
            "SELECT blob7 AS provider, blob8 AS outcome, blob5 AS code, COUNT(*) AS n FROM cmgsite_metrics"
            f" WHERE index1 = '{tid}' AND blob6 = 'signin' GROUP BY provider, outcome, code",
        )

    before = {(r["provider"], r["outcome"], r["code"]): r["n"] for r in signins()}
    b = Browser(auth_world)
    url = b.start(host, "github")
    nonce = b.cookies(host)["__Host-cmg_oauth"]
    callback = b.at_provider(url, "github", auth_world.new_user())
    assert b.callback(host, callback).status_code == 302
    b.cookies(host).clear()
    b.cookies(host)["__Host-cmg_oauth"] = nonce  # an attacker kept the cookie and the URL
    assert b.callback(host, callback).status_code == 400  # the same state again: refused
    want = {
        ("github", "success", ""): before.get(("github", "success", ""), 0) + 1,
        ("github", "failure", "state_replayed"): before.get(("github", "failure", "state_replayed"), 0) + 1,
    }

    def now() -> dict[tuple[str, str, str], int]:
        return {(r["provider"], r["outcome"], r["code"]): r["n"] for r in signins()}

    eventually(lambda: [now()], lambda r: all(r[0].get(k, 0) >= v for k, v in want.items()))
    got = now()
    assert {k: got.get(k) for k in want} == want


def test_a_failing_metrics_sink_never_fails_or_slows_a_request(platform: Platform) -> None:
    platform.host.set_metrics_fault("throw")
    try:
        for _ in range(3):
            assert platform.get(SEO).status_code == 200
        eventually(lambda: [{"log": platform.log_text()}], lambda r: "metrics_dropped" in r[0]["log"])
        assert "metrics_dropped" in platform.log_text()
    finally:
        platform.host.set_metrics_fault(None)
    assert platform.get(SEO).status_code == 200


def test_tenant_admins_read_their_metrics_and_staff_read_every_tenants(
    tenant: UsageTenant, auth_world: AuthWorld
) -> None:
    p = tenant.platform
    assert tenant.get("/api/health").status_code == 200
    eventually(lambda: served(p, tenant.tenant_id), lambda r: len(r) >= 2)
    r = tenant.get("/api/metrics?window=1h", role="admin")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["metrics"]["tenant_id"] == tenant.tenant_id and body["metrics"]["requests"] >= 1
    assert body["metrics"]["p50_ms"] is not None and len(body["series"]) >= 12
    assert tenant.get("/api/metrics", role="client").status_code == 403
    assert tenant.get("/api/metrics?window=forever", role="admin").json()["error"]["code"] == "invalid_query"
    # The platform view exists on the primary tenant only, for its super admin.
    assert tenant.get("/api/platform/metrics", role="admin").status_code == 404
    b = Browser(auth_world)
    root = "cozyartzmedia.com"
    staff = _session_for(auth_world, "cozyartz", "00000000-0000-4000-8000-000000000001", "super_admin")
    r = b.get(root, "/api/platform/metrics?window=1h", headers=staff)
    assert r.status_code == 200, r.text
    tenants = {t["tenant_id"]: t for t in r.json()["tenants"]}
    assert tenants[tenant.tenant_id]["requests"] >= 1
    admin = _session_for(auth_world, "cozyartz", "00000000-0000-4000-8000-000000000002", "admin")
    assert b.get(root, "/api/platform/metrics", headers=admin).status_code == 403


def _session_for(world: AuthWorld, tenant_id: str, user_id: str, role: str) -> dict[str, str]:
    from shared.session import issue_session
    from tenant_worker.sessions import SESSION_COOKIE

    secret = world.secrets_of(tenant_id)["SESSION_SECRET"]
    token = issue_session(secret, tenant_id=tenant_id, user_id=user_id, role=role, now=time.time())  # type: ignore[arg-type]
    return {"cookie": f"{SESSION_COOKIE}={token}"}


def test_the_sql_api_refuses_without_the_token_and_serves_only_selects(platform: Platform) -> None:
    url = platform.host.metrics_sql_url
    assert httpx.post(url, content=b"SELECT 1").status_code == 401
    auth = {"authorization": f"Bearer {platform.host.metrics_token}"}
    ok = httpx.post(url, content=b"SELECT COUNT(*) AS n FROM cmgsite_metrics FORMAT JSON", headers=auth)
    assert ok.status_code == 200 and ok.json()["meta"] == [{"name": "n", "type": "UInt64"}]
    assert isinstance(ok.json()["data"][0]["n"], str)  # 64-bit integers quoted, as Cloudflare's
    for bad in (b"DELETE FROM cmgsite_metrics", b"SELECT 1; DELETE FROM cmgsite_metrics", b"SELECT 1 FORMAT CSV"):
        assert httpx.post(url, content=bad, headers=auth).status_code == 400

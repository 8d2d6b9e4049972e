"""The audit trail over HTTP on the workerd platform: every tenant action leaves one chained
row (who, what, on what, request id, time, outcome), tenant admins page through their own
tenant's trail with a cursor and filters, and a super admin reads every tenant's trail on the
primary tenant only. Tenant admins never see another tenant's row, whatever they send."""

from __future__ import annotations

import base64
import time
from typing import Any
from urllib.parse import quote

import pytest

from controlplane.audit_chain import AuditChainRow, verify_chain
from tests.auth_support import HOSTS, SEEDED, AuthWorld, Browser
from tests.fake_oauth import FakeOAuth
from tests.support import Platform
from tests.test_api_data import new_client, signed_in_as
from tests.usage_support import usage_tenant

CHAIN_COLUMNS = (
    "id, tenant_id, seq, at_text, actor, action, target, request_id, outcome, details_text, prev_hash, row_hash"
)


def chain(pg: Any, tenant: str) -> list[AuditChainRow]:
    with pg.connect() as conn:
        cur = conn.execute(f"select {CHAIN_COLUMNS} from public.audit_chain_rows(%s, 0, 5000)", (tenant,))
        names = [d.name for d in cur.description or []]
        return [AuditChainRow.model_validate(dict(zip(names, r, strict=True))) for r in cur.fetchall()]


def rows_for(pg: Any, tenant: str, target: str) -> list[AuditChainRow]:
    return [r for r in chain(pg, tenant) if r.target == target]


def test_sign_in_profile_changes_and_sign_out_leave_chained_rows(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    host = HOSTS["partner1"]
    client, uid = new_client(auth_world, "partner1")
    admin = signed_in_as(auth_world, "admin@partner1.example")
    admin_id = SEEDED["admin@partner1.example"][2]
    assert admin.request("PATCH", host, f"/api/profiles/{uid}", json={"display_name": "Renamed"}).status_code == 200
    r = admin.request("PATCH", host, f"/api/profiles/{uid}", json={"tenant_role": "admin"})
    assert r.status_code == 200
    role_request = r.headers["x-request-id"]
    out = client.request("POST", host, "/auth/logout", headers={"Origin": f"https://{host}"})
    assert out.status_code == 303
    rows = rows_for(auth_world.pg, "partner1", uid)
    actions = [(r.action, r.actor, r.outcome) for r in rows]
    assert actions == [
        ("auth.signin.success", uid, "success"),
        ("profile.updated", admin_id, "success"),
        ("profile.role_changed", admin_id, "success"),
        ("auth.signout", uid, "success"),
    ]
    assert all(r.request_id for r in rows)
    assert next(r for r in rows if r.action == "profile.role_changed").request_id == role_request
    assert "Renamed" not in next(r for r in rows if r.action == "profile.updated").details_text  # names only
    assert verify_chain("partner1", chain(auth_world.pg, "partner1")).ok


def test_a_failed_sign_in_is_recorded_as_a_failure(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    b = Browser(auth_world)
    r = b.get(HOSTS["partner-seo"], "/auth/callback?code=x&state=forged")
    assert r.status_code == 400
    failures = [row for row in chain(auth_world.pg, "partner-seo") if row.action == "auth.signin.failure"]
    assert failures and failures[-1].outcome == "failure" and failures[-1].request_id == r.headers["x-request-id"]


def test_admin_pages_the_whole_trail_with_a_cursor(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    for _ in range(3):
        new_client(auth_world, "partner-seo")
    admin = signed_in_as(auth_world, "admin@partner-seo.example")
    host = HOSTS["partner-seo"]
    seen: list[dict[str, Any]] = []
    url = "/api/audit?limit=2"
    while url:
        r = admin.get(host, url)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["entries"]) <= 2 and body["limit"] == 2
        seen += body["entries"]
        url = f"/api/audit?limit=2&cursor={body['next_cursor']}" if body["next_cursor"] else ""
    db = chain(auth_world.pg, "partner-seo")
    assert [e["seq"] for e in seen] == sorted((r.seq for r in db), reverse=True)  # all of them, newest first
    assert [e["row_hash"] for e in seen] == [r.row_hash for r in reversed(db)]
    assert all("tenant_id" not in e for e in seen)
    assert {"seq", "actor", "action", "target", "request_id", "outcome", "at", "details", "prev_hash"} <= set(seen[0])


def test_admin_filters_by_action_actor_and_time(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    _, uid = new_client(auth_world, "partner1")
    admin = signed_in_as(auth_world, "admin@partner1.example")
    host = HOSTS["partner1"]
    mine = admin.get(host, f"/api/audit?actor={uid}").json()["entries"]
    assert [e["action"] for e in mine] == ["auth.signin.success"] and mine[0]["target"] == uid
    signins = admin.get(host, "/api/audit?action=auth.signin.*&limit=200").json()["entries"]
    assert signins and all(e["action"].startswith("auth.signin.") for e in signins)
    exact = admin.get(host, "/api/audit?action=auth.signin.success&limit=200").json()["entries"]
    assert exact and all(e["action"] == "auth.signin.success" for e in exact)
    at = mine[0]["at"]
    assert admin.get(host, f"/api/audit?actor={uid}&since={quote(at)}").json()["entries"] == mine
    assert admin.get(host, f"/api/audit?actor={uid}&until={quote(at)}").json()["entries"] == []
    assert admin.get(host, "/api/audit?since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z").json()["entries"] == []


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=ten",
        "cursor=garbage",
        "cursor=" + base64.urlsafe_b64encode(b"id:5").decode(),
        "action=DROP%20TABLE",
        "action=*",
        "since=yesterday",
        "since=2026-11-01T00:00:00",
        "offset=5",
        "limit=5&limit=6",
        "tenant=partner-seo",
        "actor=" + "x" * 201,
    ],
)
def test_bad_audit_queries_get_a_clear_400(auth_world: AuthWorld, fake: FakeOAuth, query: str) -> None:
    admin = signed_in_as(auth_world, "admin@partner1.example")
    r = admin.get(HOSTS["partner1"], f"/api/audit?{query}")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_query", r.text


def test_an_admin_never_sees_another_tenants_rows(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    new_client(auth_world, "partner1")
    admin = signed_in_as(auth_world, "admin@partner-seo.example")
    host = HOSTS["partner-seo"]
    own = {r.row_hash for r in chain(auth_world.pg, "partner-seo")}
    big = base64.urlsafe_b64encode(b"seq:999999999").decode().rstrip("=")
    for query in (
        "limit=200",
        f"limit=200&cursor={big}",
        "limit=200&action=auth.signin.*",
        f"limit=200&actor={SEEDED['admin@partner1.example'][2]}",
    ):
        entries = admin.get(host, f"/api/audit?{query}").json()["entries"]
        assert {e["row_hash"] for e in entries} <= own, query
    # And the platform listing is not theirs: 404 off the primary tenant.
    assert admin.get(host, "/api/platform/audit?tenant=partner1").status_code == 404


def test_super_admin_reads_every_tenants_trail_on_the_primary_only(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    new_client(auth_world, "partner1")
    root = signed_in_as(auth_world, "root@cozyartzmedia.com", "google")
    host = HOSTS["cozyartz"]
    r = root.get(host, "/api/platform/audit?limit=200")
    assert r.status_code == 200, r.text
    assert {"cozyartz", "partner1"} <= {e["tenant_id"] for e in r.json()["entries"]}
    page = root.get(host, "/api/platform/audit?tenant=partner1&limit=3").json()
    assert len(page["entries"]) == 3 and {e["tenant_id"] for e in page["entries"]} == {"partner1"}
    after = root.get(host, f"/api/platform/audit?tenant=partner1&limit=3&cursor={page['next_cursor']}").json()
    assert max(e["id"] for e in after["entries"]) < min(e["id"] for e in page["entries"])
    assert root.get(host, "/api/platform/audit?tenant=NOT_AN_ID").status_code == 400
    admin = signed_in_as(auth_world, "admin@cozyartzmedia.com")
    assert admin.get(host, "/api/platform/audit").status_code == 403


def test_a_domain_quota_hit_and_domain_changes_are_audited(platform: Platform, pg_cluster: Any) -> None:
    with usage_tenant(platform, pg_cluster, tier="growth") as t:
        admin = t.session("admin")
        assert t.post("/api/domains", json={"domain": f"shop.{t.tenant_id}.example"}, auth=admin).status_code == 201
        r = httpx_delete(t, f"/api/domains/shop.{t.tenant_id}.example", admin)
        assert r.status_code == 200, r.text
        t.set_tier("starter")
        with pg_cluster.connect() as conn:
            conn.execute("update public.tenants set subscription_tier = 'starter' where tenant_id = %s", (t.tenant_id,))
        refused = [
            t.post("/api/domains", json={"domain": f"more{i}.{t.tenant_id}.example"}, auth=admin) for i in range(3)
        ]
        assert [r.status_code for r in refused] == [429, 429, 429]
        rows = chain(pg_cluster, t.tenant_id)
        acts = [(r.action, r.target, r.outcome) for r in rows]
        assert ("domain.added", f"shop.{t.tenant_id}.example", "success") in acts
        assert ("domain.removed", f"shop.{t.tenant_id}.example", "success") in acts
        hits = [r for r in rows if r.action == "usage.limit_exceeded"]
        # One row for the first refusal; retries within the minute are not a stream of writes.
        assert 1 <= len(hits) < 3 and hits[0].target == "domains" and hits[0].outcome == "denied"
        assert hits[0].actor == t.users["admin"] and hits[0].request_id == refused[0].headers["x-request-id"]
        assert verify_chain(t.tenant_id, rows).ok


def httpx_delete(t: Any, path: str, auth: dict[str, str]) -> Any:
    import httpx

    return httpx.delete(t.platform.url + path, headers={"Host": t.host, **auth}, timeout=60)


def test_an_ai_call_limit_hit_is_audited_as_denied(platform: Platform, pg_cluster: Any) -> None:
    with usage_tenant(platform, pg_cluster, tier="starter") as t:
        period = time.strftime("%Y-%m", time.gmtime())
        with pg_cluster.connect() as conn:  # the month's history says the plan is used up (starter: 100)
            conn.execute(
                "insert into public.tenant_usage (tenant_id, usage_type, period, usage_count, usage_limit)"
                " values (%s, 'ai_calls', %s, 100, 100)",
                (t.tenant_id, period),
            )
        r = t.generate()
        assert r.status_code == 429, r.text
        hits = [row for row in chain(pg_cluster, t.tenant_id) if row.action == "usage.limit_exceeded"]
        assert [(h.target, h.outcome, h.actor, h.request_id) for h in hits] == [
            ("ai_calls", "denied", t.users["client"], r.headers["x-request-id"])
        ]
        assert '"period": "%s"' % period in hits[0].details_text

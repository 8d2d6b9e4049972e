"""The support desk end to end on workerd: members open tickets, admins answer them within the
tier's first-response SLA, platform staff (the primary tenant's super_admin) see every tenant's
tickets with the tenant's metrics, errors, uptime and alerts beside them, and escalate. Written
as attacks too: another tenant's ticket, a colleague's ticket, spoofed fields, the wrong host."""

from __future__ import annotations

import time
import uuid
from typing import Any, Iterator

import httpx
import pytest

from shared.session import issue_session
from tenant_worker.sessions import SESSION_COOKIE
from tests.support import Platform
from tests.usage_support import UsageTenant, usage_tenant

PRIMARY_HOST, PRIMARY_SCRIPT = "cozyartzmedia.com", "cmgsite-primary-tenant"
STAFF = "00000000-0000-4000-8000-000000000001"  # seed.sql: super_admin of the primary tenant
PRIMARY_ADMIN = "00000000-0000-4000-8000-000000000002"


@pytest.fixture
def a(platform: Platform, pg_cluster: Any) -> Iterator[UsageTenant]:
    with usage_tenant(platform, pg_cluster, "growth") as t:
        yield t


@pytest.fixture
def b(platform: Platform, pg_cluster: Any) -> Iterator[UsageTenant]:
    with usage_tenant(platform, pg_cluster, "enterprise") as t:
        yield t


def cookie(secret: str, tenant_id: str, user_id: str, role: str) -> dict[str, str]:
    token = issue_session(secret, tenant_id=tenant_id, user_id=user_id, role=role, now=time.time())  # type: ignore[arg-type]
    return {"cookie": f"{SESSION_COOKIE}={token}"}


def staff(platform: Platform, user: str = STAFF, role: str = "super_admin") -> dict[str, str]:
    return cookie(platform.registry.secrets_of(PRIMARY_SCRIPT)["SESSION_SECRET"], "cozyartz", user, role)


def call(platform: Platform, method: str, host: str, path: str, auth: dict[str, str], **kw: Any) -> httpx.Response:
    return httpx.request(
        method, platform.url + path, headers={"Host": host, **auth, **kw.pop("headers", {})}, timeout=60, **kw
    )


def as_(t: UsageTenant, role: str) -> dict[str, str]:
    return t.session(role)


def colleague(t: UsageTenant) -> dict[str, str]:
    """A second client of the same tenant."""
    uid = str(uuid.uuid4())
    with t.pg.connect() as conn:
        conn.execute(
            "insert into public.profiles (id, tenant_id, tenant_role, email) values (%s, %s, 'client', %s)",
            (uid, t.tenant_id, f"colleague-{uid[:8]}@usage-test.example"),
        )
    return cookie(t.session_secret, t.tenant_id, uid, "client")


def open_ticket(t: UsageTenant, role: str = "client", **body: Any) -> dict[str, Any]:
    r = call(
        t.platform,
        "POST",
        t.host,
        "/api/support/tickets",
        as_(t, role),
        json={"subject": "The site is slow", "body": "Pages take ten seconds.", "priority": "high", **body},
    )
    assert r.status_code == 201, r.text
    return dict(r.json()["ticket"])


def audit_actions(t: UsageTenant, tenant_id: str | None = None) -> list[str]:
    with t.pg.connect() as conn:
        return [
            r[0]
            for r in conn.execute(
                "select action from public.audit_log where tenant_id = %s order by id", (tenant_id or t.tenant_id,)
            )
        ]


def test_a_member_opens_a_ticket_and_an_admin_answers_it_within_the_sla(a: UsageTenant) -> None:
    p = a.platform
    ticket = open_ticket(a)
    assert (ticket["status"], ticket["tier"], ticket["priority"], ticket["opened_by"]) == (
        "open",
        "growth",
        "high",
        a.users["client"],
    )
    assert ticket["sla"]["state"] == "pending" and ticket["sla"]["breached"] is False
    assert call(p, "GET", a.host, "/api/support/tickets", as_(a, "client")).json()["tickets"][0]["id"] == ticket["id"]

    r = call(
        p, "POST", a.host, f"/api/support/tickets/{ticket['id']}/messages", as_(a, "admin"), json={"body": "On it."}
    )
    assert r.status_code == 201 and r.json()["message"]["author_role"] == "admin", r.text
    got = call(p, "GET", a.host, f"/api/support/tickets/{ticket['id']}", as_(a, "client")).json()
    assert got["ticket"]["status"] == "answered" and got["ticket"]["sla"]["state"] == "met"
    assert [m["author_role"] for m in got["messages"]] == ["admin"]

    r = call(p, "PATCH", a.host, f"/api/support/tickets/{ticket['id']}", as_(a, "client"), json={"status": "closed"})
    assert r.status_code == 403  # clients do not close tickets
    r = call(p, "PATCH", a.host, f"/api/support/tickets/{ticket['id']}", as_(a, "admin"), json={"status": "closed"})
    assert r.status_code == 200 and r.json()["ticket"]["status"] == "closed"
    assert [x for x in audit_actions(a) if x.startswith("support.")] == [
        "support.ticket_opened",
        "support.ticket_answered",
        "support.ticket_status",
    ]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"body": "no subject"}, "subject"),
        ({"subject": "", "body": "x"}, "subject"),
        ({"subject": "x" * 201, "body": "x"}, "subject"),
        ({"subject": "s", "body": "x", "priority": "critical"}, "priority"),
        ({"subject": "s", "body": "x", "priority": 1}, "priority"),
        ({"subject": "s", "body": "x", "tenant_id": "someone-else"}, "tenant_id"),
        ({"subject": "s", "body": "x", "opened_by": STAFF}, "opened_by"),
        ({"subject": "s", "body": "x", "tier": "enterprise"}, "tier"),
    ],
)
def test_bad_tickets_get_clear_json_errors(a: UsageTenant, body: dict[str, Any], field: str) -> None:
    r = call(a.platform, "POST", a.host, "/api/support/tickets", as_(a, "client"), json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_body" and field in err["fields"] and err["request_id"]


def test_bad_requests_to_the_desk(a: UsageTenant) -> None:
    p = a.platform
    r = call(
        p,
        "POST",
        a.host,
        "/api/support/tickets",
        as_(a, "client"),
        content=b"subject=x",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    assert (
        call(p, "GET", a.host, "/api/support/tickets/not-a-uuid", as_(a, "client")).json()["error"]["code"]
        == "invalid_id"
    )
    assert call(p, "GET", a.host, f"/api/support/tickets/{uuid.uuid4()}", as_(a, "client")).status_code == 404
    assert call(p, "GET", a.host, "/api/support/tickets?status=lost", as_(a, "client")).status_code == 400
    assert call(p, "GET", a.host, "/api/support/tickets", {}).status_code == 401
    ticket = open_ticket(a)
    r = call(p, "PATCH", a.host, f"/api/support/tickets/{ticket['id']}", as_(a, "admin"), json={"escalated": True})
    assert r.status_code == 422 and "escalated" in r.json()["error"]["fields"]  # tenants never escalate
    r = call(p, "POST", a.host, f"/api/support/tickets/{ticket['id']}/messages", as_(a, "client"), json={"body": ""})
    assert r.status_code == 422


def test_tickets_stay_in_their_tenant(a: UsageTenant, b: UsageTenant) -> None:
    p = a.platform
    ticket = open_ticket(a)
    path = f"/api/support/tickets/{ticket['id']}"
    for who in (as_(b, "admin"), as_(b, "client")):  # B's people, on B's host, with A's ticket id
        assert call(p, "GET", b.host, path, who).status_code == 404
        assert call(p, "POST", b.host, path + "/messages", who, json={"body": "hi"}).status_code == 404
        assert call(p, "PATCH", b.host, path, as_(b, "admin"), json={"status": "closed"}).status_code == 404
        assert all(
            t["id"] != ticket["id"] for t in call(p, "GET", b.host, "/api/support/tickets", who).json()["tickets"]
        )
    unknown = f"/api/support/tickets/{uuid.uuid4()}"
    r1, r2 = call(p, "GET", b.host, path, as_(b, "admin")), call(p, "GET", b.host, unknown, as_(b, "admin"))
    assert (r1.status_code, r1.json()["error"]["message"]) == (r2.status_code, r2.json()["error"]["message"])
    # A's session is no key to B's host, nor to A's ticket there.
    assert call(p, "GET", b.host, path, as_(a, "admin")).status_code == 401
    # A colleague of the opener sees none of it; A's admin sees it.
    mate = colleague(a)
    assert call(p, "GET", a.host, path, mate).status_code == 404
    assert call(p, "POST", a.host, path + "/messages", mate, json={"body": "me too"}).status_code == 404
    assert call(p, "GET", a.host, "/api/support/tickets", mate).json()["tickets"] == []
    assert call(p, "GET", a.host, path, as_(a, "admin")).status_code == 200
    # The platform desk is the primary tenant's, for its super admin only.
    for host, who in ((a.host, as_(a, "admin")), (b.host, as_(b, "admin"))):
        assert call(p, "GET", host, "/api/platform/tickets", who).status_code == 404
    assert call(p, "GET", PRIMARY_HOST, "/api/platform/tickets", staff(p, PRIMARY_ADMIN, "admin")).status_code == 403
    assert (
        call(
            p, "GET", PRIMARY_HOST, f"/api/platform/tickets/{ticket['id']}", staff(p, PRIMARY_ADMIN, "admin")
        ).status_code
        == 403
    )


def test_staff_see_every_tenants_tickets_with_context_and_escalate(a: UsageTenant, b: UsageTenant) -> None:
    p = a.platform
    assert a.get("/api/health").status_code == 200
    assert a.get("/api/nothing-here").status_code == 404
    assert p.host.trigger_scheduled() == "ok"  # a health check this month
    ta, tb = open_ticket(a), open_ticket(b, "admin", priority="urgent")
    assert tb["tier"] == "enterprise"
    listed = call(p, "GET", PRIMARY_HOST, "/api/platform/tickets", staff(p)).json()["tickets"]
    assert {ta["id"], tb["id"]} <= {t["id"] for t in listed}
    only_a = call(p, "GET", PRIMARY_HOST, f"/api/platform/tickets?tenant_id={a.tenant_id}", staff(p)).json()["tickets"]
    assert [t["id"] for t in only_a] == [ta["id"]]
    assert call(p, "GET", PRIMARY_HOST, "/api/platform/tickets?tenant_id=x'--", staff(p)).status_code == 400

    deadline = time.monotonic() + 20
    while True:  # the metrics points land in waitUntil
        r = call(p, "GET", PRIMARY_HOST, f"/api/platform/tickets/{ta['id']}", staff(p))
        assert r.status_code == 200, r.text
        ctx = r.json()["context"]
        if (ctx["metrics"] or {}).get("requests", 0) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert ctx["tenant_id"] == a.tenant_id and ctx["metrics"]["requests"] >= 2
    assert any(e["code"] == "not_found" for e in ctx["recent_errors"])
    assert ctx["uptime"]["checks"] >= 1 and ctx["open_alerts"] == []
    assert r.json()["ticket"]["opened_by"] == a.users["client"]

    r = call(p, "POST", PRIMARY_HOST, f"/api/platform/tickets/{ta['id']}/escalate", staff(p), json={})
    assert r.status_code == 200 and r.json()["ticket"]["escalated"] is True
    r = call(
        p,
        "POST",
        PRIMARY_HOST,
        f"/api/platform/tickets/{ta['id']}/messages",
        staff(p),
        json={"body": "We are looking at your Worker."},
    )
    assert r.status_code == 201 and r.json()["message"]["author_role"] == "staff"
    seen = call(p, "GET", a.host, f"/api/support/tickets/{ta['id']}", as_(a, "client")).json()
    assert seen["ticket"]["escalated"] is True and seen["messages"][-1]["author_role"] == "staff"
    assert seen["ticket"]["sla"]["state"] == "met"
    assert {"support.ticket_escalated", "support.ticket_answered"} <= set(audit_actions(a, "cozyartz"))
    escalated = call(p, "GET", PRIMARY_HOST, "/api/platform/tickets?escalated=true", staff(p)).json()["tickets"]
    assert ta["id"] in {t["id"] for t in escalated} and tb["id"] not in {t["id"] for t in escalated}


def test_a_missed_first_response_is_flagged(a: UsageTenant) -> None:
    p = a.platform
    ticket = open_ticket(a)
    with a.pg.connect() as conn:  # as if it had been opened two days ago
        conn.execute(
            "update public.support_tickets set first_response_due_at = now() - interval '1 hour',"
            " created_at = now() - interval '25 hours' where id = %s",
            (ticket["id"],),
        )
    got = call(p, "GET", a.host, f"/api/support/tickets/{ticket['id']}", as_(a, "admin")).json()["ticket"]
    assert got["sla"] == {**got["sla"], "state": "breached", "breached": True}
    waiting = call(
        p, "GET", PRIMARY_HOST, f"/api/platform/tickets?tenant_id={a.tenant_id}&awaiting=true", staff(p)
    ).json()
    assert [t["id"] for t in waiting["tickets"]] == [ticket["id"]] and waiting["breached"] == 1
    # Answered late stays breached: the SLA is about the first response.
    call(p, "POST", a.host, f"/api/support/tickets/{ticket['id']}/messages", as_(a, "admin"), json={"body": "Sorry!"})
    got = call(p, "GET", a.host, f"/api/support/tickets/{ticket['id']}", as_(a, "admin")).json()["ticket"]
    assert got["status"] == "answered" and got["sla"]["state"] == "breached"

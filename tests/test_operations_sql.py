"""20261126235519_operations.sql in SQL, the way PostgREST drives it (role + JWT claims, rolled back):
health checks and alerts (N failures in a row, one open alert, the webhook outbox, uptime), and
the support desk's rules as attacks: escalation, spoofed authors, other tenants' tickets, the SLA."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import psycopg
import pytest

from localrt.postgres import PgCluster
from shared.support import FIRST_RESPONSE_HOURS, sla_state
from shared.tiers import Tier
from tests.fixtures.rls_matrix import World, create_world, drop_world, ticket_id, user_id

WORLD = World(a="ops-sql-a", b="ops-sql-b")
SA = "00000000-0000-4000-8000-000000000001"


@pytest.fixture(scope="module")
def conn(pg_cluster: PgCluster) -> Iterator[psycopg.Connection]:
    c = pg_cluster.connect(autocommit=True)
    drop_world(c, WORLD)
    create_world(c, WORLD)
    c.autocommit = False
    try:
        yield c
    finally:
        c.rollback()
        c.autocommit = True
        drop_world(c, WORLD)
        c.close()


def become(conn: psycopg.Connection, role: str, claims: dict[str, Any] | None = None) -> None:
    conn.execute(f"set local role {role}")
    conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims or {"role": role}),))


def as_member(conn: psycopg.Connection, tenant: str, role: str, sub: str | None = None) -> str:
    sub = sub or user_id(tenant, role)
    become(
        conn,
        "authenticated",
        {"sub": sub, "role": "authenticated", "aud": "authenticated", "tenant_id": tenant, "tenant_role": role},
    )
    return sub


def as_staff(conn: psycopg.Connection) -> None:
    become(
        conn,
        "authenticated",
        {
            "sub": SA,
            "role": "authenticated",
            "aud": "authenticated",
            "tenant_id": "cozyartz",
            "tenant_role": "super_admin",
        },
    )


def refused(conn: psycopg.Connection, statement: str, params: tuple[Any, ...] = ()) -> str:
    """The SQLSTATE a statement fails with (the transaction is rolled back after)."""
    try:
        conn.execute(statement, params)
    except psycopg.Error as exc:
        return str(exc.sqlstate)
    finally:
        conn.rollback()
    return "ok"


# ---- health ---------------------------------------------------------------------------------------


def record(conn: psycopg.Connection, *checks: dict[str, Any], n: int = 3) -> list[dict[str, Any]]:
    become(conn, "service_role")
    out = conn.execute("select public.record_health_checks(%s::jsonb, %s)", (json.dumps(list(checks)), n)).fetchone()
    return list(out[0])


def check(tenant: str, ok: bool) -> dict[str, Any]:
    return {
        "tenant_id": tenant,
        "ok": ok,
        "source": "cron",
        "health_status": 200 if ok else 502,
        "page_status": 200 if ok else None,
        "latency_ms": 12,
        "detail": "" if ok else "health: HTTP 502",
    }


def open_alerts(conn: psycopg.Connection, tenant: str) -> list[tuple[Any, ...]]:
    conn.execute("reset role")
    return conn.execute(
        "select id, failures, status from public.health_alerts where tenant_id = %s and status = 'open'", (tenant,)
    ).fetchall()


def test_n_consecutive_failures_open_one_alert_and_a_good_check_resolves_it(conn: psycopg.Connection) -> None:
    t = WORLD.b
    try:
        conn.execute("delete from public.health_alerts where tenant_id = %s", (t,))
        conn.execute("delete from public.health_checks where tenant_id = %s", (t,))  # the world's failed check
        assert record(conn, check(t, False)) == [] and record(conn, check(t, False)) == []
        assert record(conn, check(t, True)) == []  # the streak is broken
        assert record(conn, check(t, False)) == [] and record(conn, check(t, False)) == []
        opened = record(conn, check(t, False))
        assert [(e["event"], e["tenant_id"]) for e in opened] == [("alert.opened", t)]
        assert record(conn, check(t, False)) == []  # still failing: the same alert, counting
        alerts = open_alerts(conn, t)
        assert len(alerts) == 1 and alerts[0][1] == 4 and alerts[0][0] == opened[0]["alert_id"]
        resolved = record(conn, check(t, True))
        assert resolved == [{"event": "alert.resolved", "alert_id": opened[0]["alert_id"], "tenant_id": t}]
        assert open_alerts(conn, t) == []
        # Unknown tenants (removed meanwhile) are skipped, not an error for the whole run.
        assert record(conn, check("no-such-tenant", False), check(t, True)) == []
    finally:
        conn.rollback()


def test_at_most_one_open_alert_per_tenant_whoever_writes(conn: psycopg.Connection) -> None:
    try:
        conn.execute("reset role")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("insert into public.health_alerts (tenant_id, status) values (%s, 'open')", (WORLD.a,))
    finally:
        conn.rollback()


def test_the_webhook_outbox(conn: psycopg.Connection) -> None:
    t = WORLD.b
    try:
        conn.execute("delete from public.health_alerts where tenant_id in (%s, %s)", (WORLD.a, t))
        for _ in range(3):
            record(conn, check(t, False))
        record(conn, check(t, True))

        def due() -> list[tuple[str, str]]:
            become(conn, "service_role")
            rows = conn.execute("select public.alert_notifications_due()").fetchone()[0]
            return [(e["event"], e["tenant_id"]) for e in rows if e["tenant_id"] == t]

        assert due() == [("alert.opened", t), ("alert.resolved", t)]  # opened first, both pending
        alert = conn.execute("select id from public.health_alerts where tenant_id = %s", (t,)).fetchone()[0]
        conn.execute("select public.mark_alert_notified(%s, 'alert.opened', false, 'HTTP 500')", (alert,))
        conn.execute("reset role")
        assert conn.execute(
            "select notify_attempts, last_notify_error from public.health_alerts where id = %s", (alert,)
        ).fetchone() == (1, "HTTP 500")
        assert due() == [("alert.opened", t), ("alert.resolved", t)]  # still due: tried again next run
        conn.execute("select public.mark_alert_notified(%s, 'alert.opened', true)", (alert,))
        assert due() == [("alert.resolved", t)]
        conn.execute("select public.mark_alert_notified(%s, 'alert.resolved', true)", (alert,))
        assert due() == []
        conn.execute("reset role")
        conn.execute(
            "update public.health_alerts set notify_attempts = 10, resolved_notified_at = null,"
            " opened_notified_at = null where id = %s",
            (alert,),
        )
        assert due() == []  # given up after 10 attempts
    finally:
        conn.rollback()


@pytest.mark.parametrize(
    "fn",
    [
        "public.record_health_checks('[]'::jsonb, 3)",
        "public.alert_notifications_due()",
        "public.mark_alert_notified(1, 'alert.opened', true)",
    ],
)
@pytest.mark.parametrize("who", ["anon", "admin", "staff"])
def test_only_the_service_role_runs_the_health_functions(conn: psycopg.Connection, fn: str, who: str) -> None:
    if who == "anon":
        become(conn, "anon")
    elif who == "admin":
        as_member(conn, WORLD.a, "admin")
    else:
        as_staff(conn)
    assert refused(conn, f"select {fn}") == "42501"


def test_uptime_per_month_through_rls(conn: psycopg.Connection) -> None:
    try:
        conn.execute("delete from public.health_checks where tenant_id in (%s, %s)", (WORLD.a, WORLD.b))
        conn.execute(
            "insert into public.health_checks (tenant_id, ok, checked_at) select %s, i %% 4 <> 0,"
            " timestamptz '2026-10-01 00:00Z' + i * interval '5 minutes' from generate_series(0, 99) i",
            (WORLD.a,),
        )
        conn.execute(
            "insert into public.health_checks (tenant_id, ok, checked_at) values (%s, true, '2026-11-01 00:00Z')",
            (WORLD.a,),
        )
        query = (
            "select tenant_id, period, checks, ok_checks, uptime_percent::text from public.tenant_uptime(%s, %s)"
            " order by 1, 2"
        )
        as_member(conn, WORLD.a, "admin")
        assert conn.execute(query, (None, None)).fetchall() == [
            (WORLD.a, "2026-10", 100, 75, "75.000"),
            (WORLD.a, "2026-11", 1, 1, "100.000"),
        ]
        assert conn.execute(query, ("2026-11", "2026-11")).fetchall() == [(WORLD.a, "2026-11", 1, 1, "100.000")]
        assert conn.execute(query, (None, "2026-10")).fetchall() == [(WORLD.a, "2026-10", 100, 75, "75.000")]
        assert conn.execute("select count(*) from public.tenant_uptime(null, null, %s)", (WORLD.b,)).fetchone() == (0,)
        conn.execute("reset role")
        as_member(conn, WORLD.a, "client")
        assert conn.execute(query, (None, None)).fetchall() == []  # health is for admins
        conn.execute("reset role")
        as_member(conn, WORLD.b, "admin")
        assert conn.execute(query, (None, None)).fetchall() == []  # another tenant's uptime: nothing
        conn.execute("reset role")
        as_staff(conn)
        assert {r[0] for r in conn.execute(query, (None, None)).fetchall()} >= {WORLD.a}
    finally:
        conn.rollback()


# ---- support ---------------------------------------------------------------------------------------


def test_sla_hours_match_the_python_table(conn: psycopg.Connection) -> None:
    for tier in Tier:
        got = conn.execute("select private.first_response_hours(%s)", (tier.value,)).fetchone()[0]
        assert got == FIRST_RESPONSE_HOURS[tier], tier
    conn.rollback()


def open_ticket(conn: psycopg.Connection, tenant: str, role: str = "client", **extra: Any) -> dict[str, Any]:
    as_member(conn, tenant, role)
    cols = {"tenant_id": tenant, "subject": "Broken", "body": "It broke.", "priority": "high", **extra}
    row = conn.execute(
        f"insert into public.support_tickets ({', '.join(cols)}) values"
        f" ({', '.join(['%s'] * len(cols))}) returning id, opened_by, tier, status,"
        " first_response_due_at - created_at, escalated",
        list(cols.values()),
    ).fetchone()
    return {
        "id": row[0],
        "opened_by": str(row[1]),
        "tier": row[2],
        "status": row[3],
        "due_in": row[4],
        "escalated": row[5],
    }


def test_a_member_opens_a_ticket_as_themselves_with_the_tiers_sla(conn: psycopg.Connection) -> None:
    try:
        t = open_ticket(conn, WORLD.a, "client", opened_by=user_id(WORLD.a, "admin"))  # a spoofed opener
        assert t["opened_by"] == user_id(WORLD.a, "client") and t["tier"] == "growth" and t["status"] == "open"
        assert t["due_in"].total_seconds() == FIRST_RESPONSE_HOURS[Tier.GROWTH] * 3600 and t["escalated"] is False
    finally:
        conn.rollback()


@pytest.mark.parametrize(
    "column, value",
    [
        ("escalated", True),
        ("status", "answered"),
        ("tier", "enterprise"),
        ("first_response_at", "2026-11-01T00:00:00Z"),
        ("first_response_due_at", "2099-01-01T00:00:00Z"),
    ],
)
def test_a_member_cannot_open_a_ticket_with_staff_fields(conn: psycopg.Connection, column: str, value: Any) -> None:
    as_member(conn, WORLD.a, "client")
    assert (
        refused(
            conn,
            f"insert into public.support_tickets (tenant_id, subject, body, {column}) values (%s, 's', 'b', %s)",
            (WORLD.a, value),
        )
        == "42501"
    )


def test_tickets_cannot_be_opened_in_another_tenant(conn: psycopg.Connection) -> None:
    for who in (lambda: as_member(conn, WORLD.a, "admin"), lambda: as_staff(conn)):
        who()
        assert (
            refused(
                conn, "insert into public.support_tickets (tenant_id, subject, body) values (%s, 's', 'b')", (WORLD.b,)
            )
            == "42501"
        )


def test_only_staff_escalate(conn: psycopg.Connection) -> None:
    ticket = ticket_id(WORLD.a)
    as_member(conn, WORLD.a, "admin")
    assert refused(conn, "update public.support_tickets set escalated = true where id = %s", (ticket,)) == "42501"
    as_member(conn, WORLD.a, "client")
    assert (
        refused(conn, "update public.support_tickets set status = 'closed' where id = %s returning id", (ticket,))
        == "ok"
    )  # RLS: no row for a client (nothing changes)
    try:
        as_staff(conn)
        row = conn.execute(
            "update public.support_tickets set escalated = true where id = %s"
            " returning escalated, escalated_at is not null, escalated_by",
            (ticket,),
        ).fetchone()
        assert row[0] is True and row[1] is True and str(row[2]) == SA
    finally:
        conn.rollback()
    for column, value in (
        ("tenant_id", WORLD.b),
        ("opened_by", SA),
        ("first_response_at", "2026-01-01T00:00:00Z"),
        ("tier", "enterprise"),
    ):
        as_member(conn, WORLD.a, "admin")
        assert (
            refused(conn, f"update public.support_tickets set {column} = %s where id = %s", (value, ticket)) == "42501"
        ), column


def post(conn: psycopg.Connection, ticket: Any, body: str = "Any news?", **extra: Any) -> tuple[str, str, str]:
    cols = {"ticket_id": ticket, "body": body, **extra}
    row = conn.execute(
        f"insert into public.support_messages ({', '.join(cols)}) values"
        f" ({', '.join(['%s'] * len(cols))}) returning tenant_id, author_id, author_role",
        list(cols.values()),
    ).fetchone()
    return row[0], str(row[1]), row[2]


def test_another_tenants_ticket_and_a_missing_one_are_refused_alike(conn: psycopg.Connection) -> None:
    as_member(conn, WORLD.a, "admin")
    foreign = refused(
        conn, "insert into public.support_messages (ticket_id, body) values (%s, 'hi')", (ticket_id(WORLD.b),)
    )
    as_member(conn, WORLD.a, "admin")
    missing = refused(
        conn, "insert into public.support_messages (ticket_id, body) values (%s, 'hi')", (str(uuid.uuid4()),)
    )
    assert foreign == missing == "42501"  # nothing tells a ticket of another tenant from no ticket


def test_a_client_sees_and_writes_on_their_own_tickets_only(conn: psycopg.Connection) -> None:
    try:
        other = str(uuid.uuid4())
        conn.execute("reset role")
        conn.execute(
            "insert into public.profiles (id, tenant_id, email) values (%s, %s, 'other@a.example')", (other, WORLD.a)
        )
        as_member(conn, WORLD.a, "client", sub=other)
        assert conn.execute("select id from public.support_tickets").fetchall() == []
        assert conn.execute("select id from public.support_messages").fetchall() == []
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            post(conn, ticket_id(WORLD.a))  # a colleague's ticket
    finally:
        conn.rollback()


def test_authors_come_from_the_jwt_and_the_first_answer_stops_the_sla_clock(conn: psycopg.Connection) -> None:
    try:
        t = open_ticket(conn, WORLD.a, "client")
        # The opener's own follow-up is not a response, whatever it claims to be.
        assert post(conn, t["id"], author_id=SA) == (WORLD.a, user_id(WORLD.a, "client"), "client")
        conn.execute("reset role")
        assert conn.execute(
            "select first_response_at, status from public.support_tickets where id = %s", (t["id"],)
        ).fetchone() == (None, "open")
        as_member(conn, WORLD.a, "admin")
        assert post(conn, t["id"], "On it.") == (WORLD.a, user_id(WORLD.a, "admin"), "admin")
        conn.execute("reset role")
        first, status = conn.execute(
            "select first_response_at, status from public.support_tickets where id = %s", (t["id"],)
        ).fetchone()
        assert first is not None and status == "answered"
        as_member(conn, WORLD.a, "client")
        post(conn, t["id"], "Still broken.")
        conn.execute("reset role")
        assert conn.execute(
            "select first_response_at = %s, status from public.support_tickets where id = %s", (first, t["id"])
        ).fetchone() == (True, "open")  # reopened; the SLA keeps its answer
        as_staff(conn)
        assert post(conn, t["id"], "Escalated to engineering.") == (WORLD.a, SA, "staff")  # staff answer any tenant
    finally:
        conn.rollback()


def test_an_admins_reply_to_their_own_ticket_is_not_a_first_response(conn: psycopg.Connection) -> None:
    try:
        t = open_ticket(conn, WORLD.a, "admin")
        post(conn, t["id"], "Adding detail.")
        conn.execute("reset role")
        assert conn.execute(
            "select first_response_at from public.support_tickets where id = %s", (t["id"],)
        ).fetchone() == (None,)
    finally:
        conn.rollback()


def test_sla_states() -> None:
    now = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)
    due = now - timedelta(hours=1)
    assert sla_state(due, now - timedelta(hours=2), now) == "met"  # answered before it was due
    assert sla_state(due, due, now) == "met"
    assert sla_state(due, now, now) == "breached"  # answered late
    assert sla_state(now + timedelta(hours=1), None, now) == "pending"
    assert sla_state(due, None, now) == "breached"  # unanswered past due

"""Property: whatever tenants, users, rows and operations exist, a tenant-scoped caller only
ever sees or changes rows of its own tenant, and other tenants' rows stay byte-for-byte.

Hypothesis generates the world (2-4 tenants with users, domains, usage, audit rows), the
caller (a real user, a user whose token claims super_admin outside the primary tenant, or a
stranger's user id) and a batch of operations. Each case runs in one transaction on one
connection and is rolled back, so 2,000 cases take seconds.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from localrt.postgres import PgCluster
from tests.fixtures.rls_matrix import FAKE_CIPHERTEXT, FAKE_WRAPPED_KEY, TABLES, UPDATE_VALUES, insert_row, ticket_id

CASES = int(__import__("os").environ.get("RLS_PROPERTY_CASES", "2000"))
TENANT_TYPES = ("partner-subdomain", "custom-domain")
REFUSALS = {"42501", "23514", "23505", "CMQ01", "CMD01"}


@dataclass(frozen=True)
class TenantSpec:
    roles: tuple[str, ...]  # one profile per entry
    domain_types: tuple[str, ...]
    usage_types: tuple[str, ...]
    audit_rows: int
    status: str


@dataclass(frozen=True)
class Op:
    table: str
    kind: str  # select | insert | update | delete
    target: int | None  # tenant index the statement aims at; None = no filter


# Each tenant and each operation is drawn as one small integer and decoded: one draw instead
# of a dozen keeps generation cheap, and shrinking still moves towards small worlds.
ROLES = ("client", "admin")
DOMAIN_TYPES = ("subdomain", "custom", "primary")
USAGE_TYPES = ("ai_calls", "domains", "storage")
OP_KINDS = ("select", "insert", "update", "delete")


def decode_tenant(code: int) -> TenantSpec:
    roles = tuple(ROLES[(code >> b) & 1] for b in range(1 + (code >> 3) % 3))  # 1-3 users
    domains = tuple(DOMAIN_TYPES[(code >> (5 + 2 * d)) % 3] for d in range((code >> 9) % 3))
    usage = USAGE_TYPES[: (code >> 11) % 3]
    return TenantSpec(
        roles=roles,
        domain_types=domains,
        usage_types=usage,
        audit_rows=(code >> 13) % 3,
        status="suspended" if (code >> 15) % 4 == 0 else "active",
    )


def decode_op(code: int, n_tenants: int) -> Op:
    target = code // 20 % (n_tenants + 1)
    return Op(
        table=TABLES[code % len(TABLES)],
        kind=OP_KINDS[code // len(TABLES) % 4],
        target=None if target == n_tenants else target,
    )


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[TenantSpec], tuple[int, str, int], list[Op]]:
    tenants = [decode_tenant(c) for c in draw(st.lists(st.integers(0, 2**17 - 1), min_size=2, max_size=4))]
    t = draw(st.integers(0, len(tenants) - 1))
    who = draw(st.integers(0, 7))
    kind = "forged_super_admin" if who == 6 else "stranger" if who == 7 else "profile"
    p = who % len(tenants[t].roles)
    ops = [decode_op(c, len(tenants)) for c in draw(st.lists(st.integers(0, 999), min_size=1, max_size=4))]
    return tenants, (t, kind, p), ops


def tid(i: int) -> str:
    return f"prop-t{i}"


def uid(i: int, p: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"prop:{i}:{p}"))


@pytest.fixture(scope="module")
def conn(pg_cluster: PgCluster) -> Iterator[psycopg.Connection]:
    c = pg_cluster.connect(autocommit=False)
    yield c
    c.rollback()
    c.close()


def _values(rows: list[tuple[Any, ...]]) -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL("({})").format(sql.SQL(", ").join(map(sql.Literal, r))) for r in rows)


def world_sql(tenants: list[TenantSpec]) -> list[sql.Composable]:
    """Insert statements for the generated world (values inlined: it all goes in one round trip)."""
    parts = [
        sql.SQL("insert into public.tenants (tenant_id, name, domain, type, status, script_name) values {}").format(
            _values(
                [
                    (tid(i), f"T{i}", f"{tid(i)}.example.com", TENANT_TYPES[i % 2], t.status, "cmgsite-partner-tenant")
                    for i, t in enumerate(tenants)
                ]
            )
        )
    ]
    parts.append(
        sql.SQL("insert into public.profiles (id, tenant_id, tenant_role) values {}").format(
            _values([(uid(i, p), tid(i), role) for i, t in enumerate(tenants) for p, role in enumerate(t.roles)])
        )
    )
    domains = [
        (tid(i), f"d{d}.{tid(i)}.example.com", dt) for i, t in enumerate(tenants) for d, dt in enumerate(t.domain_types)
    ]
    if domains:
        parts.append(
            sql.SQL("insert into public.tenant_domains (tenant_id, domain, domain_type) values {}").format(
                _values(domains)
            )
        )
    usage = [(tid(i), ut, "2026-11", 1) for i, t in enumerate(tenants) for ut in t.usage_types]
    if usage:
        parts.append(
            sql.SQL("insert into public.tenant_usage (tenant_id, usage_type, period, usage_count) values {}").format(
                _values(usage)
            )
        )
    audit = [(tid(i), "system", "prop.seed") for i, t in enumerate(tenants) for _ in range(t.audit_rows)]
    if audit:
        parts.append(
            sql.SQL("insert into public.audit_log (tenant_id, actor, action) values {}").format(_values(audit))
        )
    # 0007: each tenant's data key dk1 (integration credentials are written under it) and one secret.
    parts.append(
        sql.SQL(
            "insert into public.tenant_data_keys (tenant_id, key_id, wrapped_key, platform_key_id) values {}"
        ).format(_values([(tid(i), "dk1", FAKE_WRAPPED_KEY, "p1") for i in range(len(tenants))]))
    )
    parts.append(
        sql.SQL("insert into public.integration_credentials (tenant_id, name, key_id, ciphertext) values {}").format(
            _values([(tid(i), "seeded", "dk1", FAKE_CIPHERTEXT) for i in range(len(tenants))])
        )
    )
    # 20261126235519_operations.sql: a failed check, an open alert, a ticket opened by the first user and a reply.
    parts.append(
        sql.SQL("insert into public.health_checks (tenant_id, ok) values {}").format(
            _values([(tid(i), False) for i in range(len(tenants))])
        )
    )
    parts.append(
        sql.SQL("insert into public.health_alerts (tenant_id, status) values {}").format(
            _values([(tid(i), "open") for i in range(len(tenants))])
        )
    )
    parts.append(
        sql.SQL("insert into public.support_tickets (id, tenant_id, opened_by, subject, body) values {}").format(
            _values([(ticket_id(tid(i)), tid(i), uid(i, 0), "s", "b") for i in range(len(tenants))])
        )
    )
    parts.append(
        sql.SQL("insert into public.support_messages (ticket_id, tenant_id, author_id, body) values {}").format(
            _values([(ticket_id(tid(i)), tid(i), uid(i, 0), "m") for i in range(len(tenants))])
        )
    )
    return parts


def run_script(conn: psycopg.Connection, parts: list[sql.Composable]) -> list[list[tuple[Any, ...]]]:
    """Run several statements in one round trip; return the rows of each that returns rows."""
    cur = conn.execute(sql.SQL("; ").join(parts).as_string(conn).encode())
    results: list[list[tuple[Any, ...]]] = []
    while True:
        if cur.description is not None:
            results.append(cur.fetchall())
        if not cur.nextset():
            return results


DIGEST = sql.SQL(" union all ").join(
    sql.SQL(
        "select {}, md5(coalesce(string_agg(t::text, '|' order by t::text), '')) from {} t where tenant_id <> %(me)s"
    ).format(sql.Literal(table), sql.Identifier("public", table))
    for table in TABLES
)


def others_digest(conn: psycopg.Connection, me: str) -> list[tuple[Any, ...]]:
    """A fingerprint of every row that does not belong to `me`, table by table (as owner)."""
    return conn.execute(DIGEST, {"me": me}, prepare=True).fetchall()


def statement(op: Op) -> sql.Composable:
    tbl = sql.Identifier("public", op.table)
    where = (
        sql.SQL(" where tenant_id = {}").format(sql.Literal(tid(op.target))) if op.target is not None else sql.SQL("")
    )
    if op.kind == "select":
        return sql.SQL("select tenant_id from {}").format(tbl) + where
    if op.kind == "update":
        col, value = UPDATE_VALUES[op.table]
        return (
            sql.SQL("update {} set {} = {}").format(tbl, sql.Identifier(col), sql.Literal(value))
            + where
            + sql.SQL(" returning tenant_id")
        )
    if op.kind == "delete":
        return sql.SQL("delete from {}").format(tbl) + where + sql.SQL(" returning tenant_id")
    row = insert_row(op.table, tid(op.target if op.target is not None else 0))
    return sql.SQL("insert into {} ({}) values ({}) returning tenant_id").format(
        tbl, sql.SQL(", ").join(map(sql.Identifier, row)), sql.SQL(", ").join(map(sql.Literal, row.values()))
    )


@settings(
    max_examples=CASES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=cases())
def test_every_row_seen_or_changed_belongs_to_the_callers_tenant(conn: psycopg.Connection, case: Any) -> None:
    tenants, (t, kind, p), ops = case
    me = tid(t)
    sub = str(uuid.uuid4()) if kind == "stranger" else uid(t, p)
    role = "super_admin" if kind == "forged_super_admin" else tenants[t].roles[p]
    claims = {"sub": sub, "role": "authenticated", "aud": "authenticated", "tenant_id": me, "tenant_role": role}
    try:
        # Build the world as owner, fingerprint the others, then become the caller as PostgREST
        # does (transaction-local role and claims).
        run_script(conn, world_sql(tenants))
        before = others_digest(conn, me)
        conn.execute(
            "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)",
            (json.dumps(claims),),
            prepare=True,
        )
        for op in ops:
            try:
                # The savepoint lets a refused statement fail without ending the case.
                rows = run_script(conn, [sql.SQL("savepoint op"), statement(op)])[-1]
            except psycopg.Error as exc:
                # Refusals end the operation, not the case: grants/RLS (42501), checks, uniqueness,
                # and the domain rules' quota (CMQ01) and overlap (CMD01) of 20261126232039_domain_rules.sql.
                if exc.sqlstate not in REFUSALS:
                    raise
                conn.execute("rollback to savepoint op")
                continue
            seen = {r[0] for r in rows}
            if op.kind == "insert":
                # Nobody of one tenant creates a row of another tenant (nor a tenant at all).
                assert op.table != "tenants", "an API user created a tenant"
                assert seen == {me}, f"insert into {op.table} for {seen} by {me}"
            else:
                assert seen <= {me}, f"{op.kind} on {op.table} reached {seen - {me}} as {me}"
        conn.execute("reset role")
        after = others_digest(conn, me)
        assert after == before, "another tenant's rows changed"
    finally:
        conn.rollback()

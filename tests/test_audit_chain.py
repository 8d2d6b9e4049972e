"""The audit trail's hash chain in the real PostgreSQL and over the real PostgREST
(supabase/migrations/20261126233134_audit_chain.sql, controlplane/audit_chain.py).

Every attack here is one that would succeed without the migration: an UPDATE, DELETE or
TRUNCATE of audit rows through PostgREST with a tenant token or the service-role key, or in
SQL as each API role; choosing a row's hash, time or position; and a chain forged behind the
database's back, which the out-of-database verify must name at its first broken link.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import psycopg
import pytest
from psycopg import sql

from controlplane.audit_chain import GENESIS, AuditChainRow, row_hash, verify_chain
from localrt.postgres import MIGRATIONS_DIR, PgCluster, migration_files
from shared.jwt import HS256Signer

CHAIN_COLUMNS = (
    "id, tenant_id, seq, at_text, actor, action, target, request_id, outcome, details_text, prev_hash, row_hash"
)


def chain(conn: psycopg.Connection, tenant: str) -> list[AuditChainRow]:
    cur = conn.execute(f"select {CHAIN_COLUMNS} from public.audit_chain_rows(%s, 0, 5000)", (tenant,))
    names = [d.name for d in cur.description or []]
    return [AuditChainRow.model_validate(dict(zip(names, r, strict=True))) for r in cur.fetchall()]


def become(conn: psycopg.Connection, role: str, claims: dict[str, Any]) -> None:
    conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
    conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))


def sqlstate(conn: psycopg.Connection, statement: str, *args: Any) -> str | None:
    """Run one statement in its own transaction; its SQLSTATE, or None if it went through."""
    try:
        with conn.transaction():
            conn.execute(statement, args or None)
            raise _Rollback()
    except _Rollback:
        return None
    except psycopg.Error as exc:
        return exc.sqlstate


class _Rollback(Exception):
    pass


@pytest.fixture
def tenant(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh tenant with an admin, and a chain of three rows written as the service role."""
    tid = f"ac-{uuid.uuid4().hex[:8]}"
    with pg_cluster.connect() as conn:
        conn.execute(
            "insert into public.tenants (tenant_id, name, domain, type, script_name)"
            " values (%s, 'Audit test', %s, 'custom-domain', 'cmgsite-custom-tenant')",
            (tid, f"{tid}.audit-test.example"),
        )
        conn.execute(
            "insert into public.profiles (id, tenant_id, tenant_role, email) values (%s, %s, 'admin', %s)",
            (admin_id(tid), tid, f"admin@{tid}.example"),
        )
        with conn.transaction():
            become(conn, "service_role", {"role": "service_role"})
            for i, (action, target) in enumerate(
                [("tenant.added", tid), ("auth.signin.success", "u1"), ("domain.added", f"www.{tid}.example")]
            ):
                conn.execute(
                    "insert into public.audit_log (tenant_id, actor, action, target, request_id, outcome,"
                    " details) values (%s, 'system', %s, %s, %s, 'success', %s)",
                    (tid, action, target, f"req-{i}", json.dumps({"n": i, "ünïcode": "é|3:x"})),
                )
    try:
        yield tid
    finally:
        with pg_cluster.connect() as conn:
            conn.execute("delete from public.tenants where tenant_id = %s", (tid,))


def admin_id(tid: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"audit-chain-test:{tid}"))


# ---- the chain ---------------------------------------------------------------------------------
def test_the_database_links_each_row_and_python_computes_the_same_hash(pg_cluster: PgCluster, tenant: str) -> None:
    with pg_cluster.connect() as conn:
        rows = chain(conn, tenant)
    assert [r.seq for r in rows] == [1, 2, 3]
    assert rows[0].prev_hash == GENESIS
    assert [r.prev_hash for r in rows[1:]] == [r.row_hash for r in rows[:-1]]
    for r in rows:
        assert r.row_hash == row_hash(
            prev_hash=r.prev_hash,
            tenant_id=r.tenant_id,
            seq=r.seq,
            at_text=r.at_text,
            actor=r.actor,
            action=r.action,
            target=r.target,
            request_id=r.request_id,
            outcome=r.outcome,
            details_text=r.details_text,
        )
    report = verify_chain(tenant, rows)
    assert report.ok and report.head_seq == 3 and report.head_hash == rows[-1].row_hash


def test_rows_of_one_statement_and_of_the_seed_chain_too(pg_cluster: PgCluster, tenant: str) -> None:
    with pg_cluster.connect() as conn:
        conn.execute(
            "insert into public.audit_log (tenant_id, actor, action, target) values"
            " (%s, 'a', 'x.one', null), (%s, 'b', 'x.two', ''), (%s, 'c', 'x.three', 't')",
            (tenant, tenant, tenant),
        )
        assert verify_chain(tenant, chain(conn, tenant)).head_seq == 6
        for seeded in ("cozyartz", "partner1", "partner-seo"):
            assert verify_chain(seeded, chain(conn, seeded)).ok, seeded


def test_concurrent_writers_cannot_fork_a_chain(pg_cluster: PgCluster, tenant: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def writer(n: int) -> None:
        try:
            with psycopg.connect(pg_cluster.dsn, autocommit=True) as conn:
                start.wait()
                for i in range(25):
                    with conn.transaction():
                        become(conn, "service_role", {"role": "service_role"})
                        conn.execute(
                            "insert into public.audit_log (tenant_id, actor, action) values (%s, %s, 'race.write')",
                            (tenant, f"writer-{n}-{i}"),
                        )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with pg_cluster.connect() as conn:
        rows = chain(conn, tenant)
    assert [r.seq for r in rows] == list(range(1, 104))
    assert verify_chain(tenant, rows).ok


def test_api_writers_cannot_choose_the_time(pg_cluster: PgCluster, tenant: str) -> None:
    with pg_cluster.connect() as conn:
        with conn.transaction():
            become(conn, "service_role", {"role": "service_role"})
            # The time is not the service role's to choose: it has no grant on `at` at all.
            assert (
                sqlstate(
                    conn,
                    "insert into public.audit_log (tenant_id, actor, action, at)"
                    " values (%s, 's', 'x.backdated', '2001-01-01')",
                    tenant,
                )
                == "42501"
            )
        row = conn.execute(
            "select at from public.audit_log where tenant_id = %s order by seq desc limit 1", (tenant,)
        ).fetchone()
        assert row is not None and row[0].year > 2001


# ---- attacks in SQL ----------------------------------------------------------------------------
ADMIN_CLAIMS = {"role": "authenticated", "aud": "authenticated", "tenant_role": "admin"}


@pytest.mark.parametrize(
    "statement",
    [
        "update public.audit_log set target = 'tampered' where tenant_id = %s",
        "update public.audit_log set row_hash = repeat('0', 64) where tenant_id = %s",
        "delete from public.audit_log where tenant_id = %s",
        "insert into public.audit_log (tenant_id, actor, action, seq, prev_hash, row_hash)"
        " values (%s, 'x', 'x.forged', 4, repeat('0', 64), repeat('1', 64))",
    ],
)
@pytest.mark.parametrize("role", ["service_role", "authenticated", "anon"])
def test_api_roles_cannot_edit_delete_or_forge_audit_rows_in_sql(
    pg_cluster: PgCluster, tenant: str, role: str, statement: str
) -> None:
    claims = (
        {**ADMIN_CLAIMS, "sub": admin_id(tenant), "tenant_id": tenant} if role == "authenticated" else {"role": role}
    )
    with pg_cluster.connect() as conn:
        conn.autocommit = False
        become(conn, role, claims)
        assert sqlstate(conn, statement, tenant) == "42501"
        conn.rollback()
        conn.autocommit = True
        assert verify_chain(tenant, chain(conn, tenant)).head_seq == 3


@pytest.mark.parametrize(
    "statement",
    [
        "truncate public.audit_log",
        "alter table public.audit_log disable trigger audit_log_append_only",
        "set session_replication_role = replica",
        "select public.audit_restore(%s, '[]'::jsonb)",
    ],
)
@pytest.mark.parametrize("role", ["service_role", "authenticated"])
def test_api_roles_cannot_switch_the_protection_off(
    pg_cluster: PgCluster, tenant: str, role: str, statement: str
) -> None:
    claims = (
        {**ADMIN_CLAIMS, "sub": admin_id(tenant), "tenant_id": tenant} if role == "authenticated" else {"role": role}
    )
    args = (tenant,) if "%s" in statement else ()
    with pg_cluster.connect() as conn:
        conn.autocommit = False
        become(conn, role, claims)
        state = sqlstate(conn, statement, *args)
        conn.rollback()
    if role == "service_role" and "audit_restore" in statement:
        assert state is None  # the restore path is the service role's (and refuses forged rows: below)
    else:
        assert state == "42501", state


def test_even_the_owner_cannot_edit_or_delete_rows_of_a_live_tenant(pg_cluster: PgCluster, tenant: str) -> None:
    with pg_cluster.connect() as conn:
        assert sqlstate(conn, "update public.audit_log set target = 'x' where tenant_id = %s", tenant) == "42501"
        assert sqlstate(conn, "delete from public.audit_log where tenant_id = %s", tenant) == "42501"
        assert sqlstate(conn, "truncate public.audit_log") == "42501"
        assert verify_chain(tenant, chain(conn, tenant)).head_seq == 3


def test_erasure_takes_the_whole_chain_with_the_tenant(pg_cluster: PgCluster, tenant: str) -> None:
    with pg_cluster.connect() as conn:
        with conn.transaction():
            become(conn, "service_role", {"role": "service_role"})
            conn.execute("delete from public.tenants where tenant_id = %s", (tenant,))
        assert conn.execute("select count(*) from public.audit_log where tenant_id = %s", (tenant,)).fetchone() == (0,)


# ---- a chain forged behind the database's back ----------------------------------------------
def _forge(conn: psycopg.Connection, statement: str, *args: Any) -> None:
    """What only a superuser can do: write with every trigger off."""
    with conn.transaction():
        conn.execute("set local session_replication_role = replica")
        conn.execute(statement, args or None)


def test_verify_names_the_first_broken_link_of_an_edited_row(pg_cluster: PgCluster, tenant: str) -> None:
    with pg_cluster.connect() as conn:
        _forge(conn, "update public.audit_log set target = 'someone-else' where tenant_id = %s and seq = 2", tenant)
        report = verify_chain(tenant, chain(conn, tenant))
    assert report.first_broken is not None
    assert (report.first_broken.seq, report.first_broken.reason) == (2, "row_hash_mismatch")


def test_verify_names_a_deleted_row(pg_cluster: PgCluster, tenant: str) -> None:
    with pg_cluster.connect() as conn:
        _forge(conn, "delete from public.audit_log where tenant_id = %s and seq = 2", tenant)
        report = verify_chain(tenant, chain(conn, tenant))
    assert report.first_broken is not None
    assert (report.first_broken.seq, report.first_broken.reason) == (2, "seq_gap")


def test_verify_names_a_rehashed_row_whose_successor_no_longer_links(pg_cluster: PgCluster, tenant: str) -> None:
    """The forger edits row 2 and recomputes its hash correctly: row 3 still points at the old one."""
    with pg_cluster.connect() as conn:
        r2 = chain(conn, tenant)[1]
        forged = row_hash(
            prev_hash=r2.prev_hash,
            tenant_id=tenant,
            seq=2,
            at_text=r2.at_text,
            actor=r2.actor,
            action=r2.action,
            target="rewritten",
            request_id=r2.request_id,
            outcome=r2.outcome,
            details_text=r2.details_text,
        )
        _forge(
            conn,
            "update public.audit_log set target = 'rewritten', row_hash = %s where tenant_id = %s and seq = 2",
            forged,
            tenant,
        )
        report = verify_chain(tenant, chain(conn, tenant))
    assert report.first_broken is not None
    assert (report.first_broken.seq, report.first_broken.reason) == (3, "prev_hash_mismatch")


def test_restore_refuses_a_forged_or_diverging_chain(pg_cluster: PgCluster, tenant: str) -> None:
    with pg_cluster.connect() as conn:
        rows = [r.model_dump() for r in chain(conn, tenant)]
        with conn.transaction():
            become(conn, "service_role", {"role": "service_role"})
            same = conn.execute("select public.audit_restore(%s, %s)", (tenant, json.dumps(rows))).fetchone()
        assert same == ({"inserted": 0, "matched": 3},)
        appended = [
            *rows,
            {**rows[-1], "seq": 4, "prev_hash": rows[-1]["row_hash"], "action": "x.appended", "row_hash": "f" * 64},
        ]
        diverging = [{**rows[0], "target": "other"}, *rows[1:]]
        for bad in (appended, diverging, [{**r, "tenant_id": "partner1"} for r in rows]):
            with conn.transaction():
                become(conn, "service_role", {"role": "service_role"})
                assert sqlstate(conn, "select public.audit_restore(%s, %s)", tenant, json.dumps(bad)) == "CMA01"
        assert verify_chain(tenant, chain(conn, tenant)).head_seq == 3


# ---- over PostgREST, as an attacker with a tenant token or the service-role key -----------------
def _token(secret: str, claims: dict[str, Any]) -> str:
    now = int(time.time())
    return HS256Signer(secret).sign({"iat": now, "exp": now + 300, **claims})


@pytest.fixture
def principals(supabase_stack: Any, tenant: str) -> dict[str, dict[str, str]]:
    admin = _token(supabase_stack.jwt_secret, {**ADMIN_CLAIMS, "sub": admin_id(tenant), "tenant_id": tenant})
    return {
        "tenant_admin": {"apikey": supabase_stack.anon_key, "authorization": f"Bearer {admin}"},
        "service_role": {"apikey": supabase_stack.service_role_key},
    }


@pytest.mark.parametrize("who", ["tenant_admin", "service_role"])
def test_postgrest_refuses_edits_and_deletes_of_audit_rows(
    supabase_stack: Any, pg_cluster: PgCluster, tenant: str, principals: dict[str, dict[str, str]], who: str
) -> None:
    url, h = f"{supabase_stack.rest_url}/audit_log", {**principals[who], "prefer": "return=representation"}
    flt = {"tenant_id": f"eq.{tenant}"}
    with httpx.Client(timeout=10) as http:
        assert http.get(url, params={**flt, "select": "seq", "order": "seq.asc"}, headers=h).json() == [
            {"seq": 1},
            {"seq": 2},
            {"seq": 3},
        ]
        attempts = [
            http.patch(url, params=flt, json={"target": "tampered"}, headers=h),
            http.patch(url, params=flt, json={"row_hash": "0" * 64}, headers=h),
            http.delete(url, params=flt, headers=h),
            http.delete(url, params={**flt, "seq": "eq.2"}, headers=h),
            http.post(
                url,
                json={
                    "tenant_id": tenant,
                    "actor": "x",
                    "action": "x.forged",
                    "seq": 4,
                    "prev_hash": "0" * 64,
                    "row_hash": "1" * 64,
                },
                headers=h,
            ),
            http.post(
                url,
                json={"tenant_id": tenant, "actor": "x", "action": "x.backdated", "at": "2001-01-01T00:00:00Z"},
                headers=h,
            ),
            http.post(
                f"{supabase_stack.rest_url}/rpc/audit_restore",
                json={"p_tenant_id": tenant, "p_rows": [{"tenant_id": tenant, "seq": 1, "row_hash": "f" * 64}]},
                headers=h,
            ),
        ]
    for resp in attempts:
        assert resp.status_code in (400, 401, 403, 404), resp.text
        assert resp.json().get("code") in ("42501", "CMA01", "PGRST202"), resp.text
    with pg_cluster.connect() as conn:
        rows = chain(conn, tenant)
    assert len(rows) == 3 and verify_chain(tenant, rows).ok


def test_the_service_role_appends_and_the_database_chains_it(
    supabase_stack: Any, pg_cluster: PgCluster, tenant: str, principals: dict[str, dict[str, str]]
) -> None:
    with httpx.Client(timeout=10) as http:
        resp = http.post(
            f"{supabase_stack.rest_url}/audit_log",
            params={"select": "seq,prev_hash,row_hash,outcome"},
            json={
                "tenant_id": tenant,
                "actor": "svc",
                "action": "usage.limit_exceeded",
                "target": "ai_calls",
                "outcome": "denied",
                "request_id": "req-x",
            },
            headers={**principals["service_role"], "prefer": "return=representation"},
        )
    assert resp.status_code == 201, resp.text
    with pg_cluster.connect() as conn:
        rows = chain(conn, tenant)
    assert resp.json()[0]["seq"] == 4 and resp.json()[0]["prev_hash"] == rows[2].row_hash
    assert verify_chain(tenant, rows).ok


# ---- the migration chains rows that existed before it ------------------------------------------
def test_the_migration_chains_rows_written_before_it(pg_cluster: PgCluster, tmp_path: Path) -> None:
    before = tmp_path / "before"
    before.mkdir()
    for path in migration_files():
        if path.name < "20261126233134_audit_chain.sql":
            shutil.copy(path, before / path.name)
    db = PgCluster(data_dir=pg_cluster.data_dir, port=pg_cluster.port, dbname=f"backfill_{uuid.uuid4().hex[:8]}")
    db.start()  # the running cluster: creates the database only
    try:
        db.apply_migrations(before)
        with db.connect() as conn:
            conn.execute(
                "insert into public.tenants (tenant_id, name, domain, type, script_name) values"
                " ('old-a', 'A', 'old-a.example', 'custom-domain', 'cmgsite-custom-tenant'),"
                " ('old-b', 'B', 'old-b.example', 'custom-domain', 'cmgsite-custom-tenant')"
            )
            conn.execute(
                "insert into public.audit_log (tenant_id, actor, action, target, details, at) values"
                " ('old-a', 'system', 'tenant.added', 'old-a', '{\"request_id\": \"rq-1\"}', '2026-01-02'),"
                " ('old-b', 'u', 'auth.signin.failure', null, '{}', '2026-01-01'),"
                " ('old-a', 'u', 'auth.signin.success', 'u', '{}', '2026-01-01')"
            )
        applied = db.apply_migrations(MIGRATIONS_DIR)
        assert "20261126233134_audit_chain.sql" in applied
        with db.connect() as conn:
            a, b = chain(conn, "old-a"), chain(conn, "old-b")
        assert [r.action for r in a] == ["auth.signin.success", "tenant.added"]  # (at, id) order
        assert a[1].request_id == "rq-1" and b[0].outcome == "failure"
        assert verify_chain("old-a", a).ok and verify_chain("old-b", b).ok
    finally:
        with pg_cluster.connect() as conn:
            conn.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(db.dbname)))

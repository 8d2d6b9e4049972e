"""Row Level Security in SQL, the way PostgREST drives it: `set local role` plus
`request.jwt.claims`, each case in a transaction that is rolled back.

Superusers and table owners bypass RLS, so every case runs as anon / authenticated /
service_role, never as the connection's superuser.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest
from psycopg import sql

from localrt.postgres import COMPAT_FILE, SEED_FILE, PgCluster, migration_files
from tests.fixtures.rls_matrix import (
    DENIED,
    EXPECTED,
    OPS,
    PRINCIPALS,
    TABLES,
    TENANT_A_PRINCIPALS,
    UPDATE_VALUES,
    World,
    create_world,
    drop_world,
    insert_row,
    principal_claims,
    user_id,
)

WORLD = World(a="rls-sql-a", b="rls-sql-b")
SEED_A, SEED_B = "partner1", "partner-seo"


@pytest.fixture(scope="module")
def conn(pg_cluster: PgCluster) -> Iterator[psycopg.Connection]:
    c = pg_cluster.connect(autocommit=True)
    create_world(c, WORLD)
    c.autocommit = False
    try:
        yield c
    finally:
        c.rollback()
        c.autocommit = True
        drop_world(c, WORLD)
        c.close()


def become(conn: psycopg.Connection, role: str, claims: dict[str, Any] | None) -> None:
    """Inside the current transaction, act as PostgREST would for this JWT."""
    conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
    conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims or {}),))


def as_user(conn: psycopg.Connection, tenant: str, role: str, sub: str | None = None) -> None:
    become(
        conn,
        "authenticated",
        {"sub": sub or user_id(tenant, role), "role": "authenticated", "tenant_id": tenant, "tenant_role": role},
    )


def run_op(conn: psycopg.Connection, table: str, op: str, tenant: str) -> int | str | Exception:
    """Run one operation on `tenant`'s rows; the row count, DENIED, or the unexpected error."""
    tbl = sql.Identifier("public", table)
    try:
        if op == "select":
            cur = conn.execute(sql.SQL("select tenant_id from {} where tenant_id = %s").format(tbl), (tenant,))
        elif op == "insert":
            row = insert_row(table, tenant)
            cur = conn.execute(
                sql.SQL("insert into {} ({}) values ({}) returning tenant_id").format(
                    tbl, sql.SQL(", ").join(map(sql.Identifier, row)), sql.SQL(", ").join(sql.Placeholder() * len(row))
                ),
                list(row.values()),
            )
        elif op == "update":
            col, value = UPDATE_VALUES[table]
            cur = conn.execute(
                sql.SQL("update {} set {} = %s where tenant_id = %s returning tenant_id").format(
                    tbl, sql.Identifier(col)
                ),
                (value, tenant),
            )
        else:
            cur = conn.execute(
                sql.SQL("delete from {} where tenant_id = %s returning tenant_id").format(tbl), (tenant,)
            )
    except psycopg.errors.InsufficientPrivilege:
        return DENIED
    except psycopg.Error as exc:
        return exc
    rows = cur.fetchall()
    if op != "insert" or table != "tenants":
        assert {r[0] for r in rows} <= {tenant}, f"{op} on {table} touched rows of other tenants: {rows}"
    return len(rows)


@pytest.mark.parametrize("target", ["a", "b"])
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("principal", PRINCIPALS)
def test_isolation_matrix(conn: psycopg.Connection, principal: str, table: str, op: str, target: str) -> None:
    role, claims = principal_claims(principal, WORLD)
    try:
        become(conn, role, claims)
        outcome = run_op(conn, table, op, WORLD.tenant(target))
    finally:
        conn.rollback()
    assert outcome == EXPECTED[(principal, table, op, target)], f"{principal} {op} {table} on {target}: {outcome!r}"
    if principal in TENANT_A_PRINCIPALS and target == "b":
        assert outcome in (DENIED, 0)


@pytest.mark.parametrize("table", ["profiles", "tenant_domains"])
def test_admin_insert_into_other_tenant_is_refused_by_rls(conn: psycopg.Connection, table: str) -> None:
    # The grant allows inserting here, so it is RLS's WITH CHECK that must stop tenant B rows.
    as_user(conn, SEED_A, "admin", "00000000-0000-4000-8000-000000000011")
    row = insert_row(table, SEED_B)
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security") as err:
            conn.execute(
                sql.SQL("insert into {} ({}) values ({})").format(
                    sql.Identifier("public", table),
                    sql.SQL(", ").join(map(sql.Identifier, row)),
                    sql.SQL(", ").join(sql.Placeholder() * len(row)),
                ),
                list(row.values()),
            )
        assert err.value.sqlstate == "42501"
    finally:
        conn.rollback()


def _attempt(conn: psycopg.Connection, statement: str, params: tuple[Any, ...] = ()) -> int | str:
    try:
        return len(conn.execute(statement, params).fetchall())
    except psycopg.errors.InsufficientPrivilege:
        return DENIED
    finally:
        conn.rollback()


CLIENT_A = "00000000-0000-4000-8000-000000000012"
ADMIN_A = "00000000-0000-4000-8000-000000000011"


@pytest.mark.parametrize(
    "statement",
    [
        "update public.profiles set tenant_role = 'admin' where id = %s returning id",
        "update public.profiles set tenant_role = 'super_admin' where id = %s returning id",
        "update public.profiles set tenant_permissions = '{\"billing\": true}' where id = %s returning id",
        "update public.profiles set tenant_id = 'partner-seo' where id = %s returning id",
        "update public.profiles set id = gen_random_uuid() where id = %s returning id",
        "insert into public.profiles (id, tenant_id, tenant_role) values (gen_random_uuid(), 'partner1', 'admin')"
        " returning id",
    ],
)
def test_client_cannot_raise_role_or_move_tenant(conn: psycopg.Connection, statement: str) -> None:
    as_user(conn, SEED_A, "client", CLIENT_A)
    assert _attempt(conn, statement, (CLIENT_A,) if "%s" in statement else ()) == DENIED


@pytest.mark.parametrize(
    "role, sub, target", [("client", CLIENT_A, CLIENT_A), ("admin", ADMIN_A, ADMIN_A), ("admin", ADMIN_A, CLIENT_A)]
)
def test_email_is_an_identity_key_api_users_cannot_rewrite(
    conn: psycopg.Connection, role: str, sub: str, target: str
) -> None:
    # Sign-in maps a verified email to a profile: taking someone's address would take their sign-in.
    as_user(conn, SEED_A, role, sub)
    assert (
        _attempt(
            conn, "update public.profiles set email = 'admin@partner1.example' where id = %s returning id", (target,)
        )
        == DENIED
    )


def test_one_profile_per_email_per_tenant(conn: psycopg.Connection) -> None:
    as_user(conn, SEED_A, "admin", ADMIN_A)
    try:
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "insert into public.profiles (id, tenant_id, email)"
                " values (gen_random_uuid(), 'partner1', 'Client@Partner1.Example')"
            )
    finally:
        conn.rollback()
    # The same address in another tenant is another person's profile there.
    become(conn, "service_role", {"role": "service_role"})
    try:
        conn.execute(
            "insert into public.profiles (id, tenant_id, email)"
            " values (gen_random_uuid(), 'partner-seo', 'client@partner1.example')"
        )
    finally:
        conn.rollback()


@pytest.mark.parametrize(
    "statement, expected",
    [
        # An admin may manage their tenant's people, but not themselves, not super_admin, not across tenants.
        ("update public.profiles set tenant_role = 'admin' where id = '" + CLIENT_A + "' returning id", 1),
        ("update public.profiles set tenant_role = 'super_admin' where id = '" + CLIENT_A + "' returning id", DENIED),
        (
            "update public.profiles set tenant_permissions = '{\"all\": true}' where id = '"
            + ADMIN_A
            + "' returning id",
            DENIED,
        ),
        ("update public.profiles set tenant_id = 'partner-seo' where id = '" + CLIENT_A + "' returning id", DENIED),
        ("update public.tenants set subscription_tier = 'enterprise' where tenant_id = 'partner1' returning 1", DENIED),
        (
            "update public.tenants set status = 'active', type = 'primary' where tenant_id = 'partner1' returning 1",
            DENIED,
        ),
        ("update public.tenants set tenant_id = 'partner-seo2' where tenant_id = 'partner1' returning 1", DENIED),
        (
            "update public.tenants set whitelabel_config = '{\"brand_name\": \"P1\"}' where tenant_id = 'partner1'"
            " returning 1",
            1,
        ),
        ("update public.tenant_domains set ssl_status = 'active' where tenant_id = 'partner1' returning 1", 0),
    ],
)
def test_admin_limits(conn: psycopg.Connection, statement: str, expected: int | str) -> None:
    as_user(conn, SEED_A, "admin", ADMIN_A)
    assert _attempt(conn, statement) == expected


def test_only_primary_tenant_holds_super_admin(conn: psycopg.Connection) -> None:
    become(
        conn,
        "authenticated",
        {
            "sub": "00000000-0000-4000-8000-000000000001",
            "role": "authenticated",
            "tenant_id": "cozyartz",
            "tenant_role": "super_admin",
        },
    )
    try:
        with pytest.raises(psycopg.errors.CheckViolation, match="primary tenant"):
            conn.execute("update public.profiles set tenant_role = 'super_admin' where id = %s", (CLIENT_A,))
    finally:
        conn.rollback()
    # ... and even the service role cannot put a super_admin outside the primary tenant.
    become(conn, "service_role", {"role": "service_role"})
    try:
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "insert into public.profiles (id, tenant_id, tenant_role) values (%s, 'partner1', 'super_admin')",
                (str(uuid.uuid4()),),
            )
    finally:
        conn.rollback()


def test_admin_of_primary_cannot_demote_super_admin(conn: psycopg.Connection) -> None:
    as_user(conn, "cozyartz", "admin", "00000000-0000-4000-8000-000000000002")
    assert (
        _attempt(
            conn,
            "update public.profiles set tenant_role = 'client'"
            " where id = '00000000-0000-4000-8000-000000000001' returning id",
        )
        == DENIED
    )


def test_admin_manages_own_custom_domains(conn: psycopg.Connection) -> None:
    # World B is a custom-domain tenant on growth (partner1 is partner-subdomain: no custom domains).
    as_user(conn, WORLD.b, "admin")
    try:
        conn.execute(
            "insert into public.tenant_domains (tenant_id, domain, domain_type)"
            " values (%s, 'shop.b-custom.com', 'custom')",
            (WORLD.b,),
        )
        assert conn.execute(
            "delete from public.tenant_domains where domain = 'shop.b-custom.com' returning 1"
        ).fetchall() == [(1,)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "insert into public.tenant_domains (tenant_id, domain, domain_type)"
                " values (%s, 'x.b.cozyartzmedia.com', 'subdomain')",
                (WORLD.b,),
            )
    finally:
        conn.rollback()


@pytest.mark.parametrize("domain", ["partner2.cozyartzmedia.com", "a.b.cozyartzmedia.com", "www.cozyartzmedia.com"])
def test_admin_cannot_claim_a_platform_subdomain_as_custom(conn: psycopg.Connection, domain: str) -> None:
    # Partner subdomains are the platform's to hand out; a tenant could otherwise squat one.
    as_user(conn, SEED_A, "admin", ADMIN_A)
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "insert into public.tenant_domains (tenant_id, domain, domain_type) values ('partner1', %s, 'custom')",
                (domain,),
            )
    finally:
        conn.rollback()


@pytest.mark.parametrize("domain", ["notcozyartzmedia.com", "cozyartzmedia.com.evil.net"])
def test_lookalike_domains_are_ordinary_custom_domains(conn: psycopg.Connection, domain: str) -> None:
    # Only the platform's domain and names under it (a dot before it) are refused.
    as_user(conn, WORLD.b, "admin")
    try:
        inserted = conn.execute(
            "insert into public.tenant_domains (tenant_id, domain, domain_type)"
            " values (%s, %s, 'custom') returning tenant_id, domain, domain_type",
            (WORLD.b, domain),
        ).fetchall()
        assert inserted == [(WORLD.b, domain, "custom")]
        assert conn.execute("select tenant_id from public.tenant_domains where domain = %s", (domain,)).fetchall() == [
            (WORLD.b,)
        ]  # the admin's own, visible to them
    finally:
        conn.rollback()


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": CLIENT_A, "role": "authenticated"},  # no tenant_id
        {"sub": CLIENT_A, "role": "authenticated", "tenant_id": "", "tenant_role": "admin"},
        {"sub": CLIENT_A, "role": "authenticated", "tenant_id": "partner1' or '1'='1", "tenant_role": "admin"},
        {"sub": CLIENT_A, "role": "authenticated", "tenant_id": ["partner1"], "tenant_role": "admin"},
        {"sub": CLIENT_A, "role": "authenticated", "tenant_id": "PARTNER1", "tenant_role": "admin"},
        {
            "sub": "00000000-0000-4000-8000-000000000001",
            "role": "authenticated",
            "tenant_id": "partner1",
            "tenant_role": "super_admin",
        },  # SA claim, wrong tenant
    ],
)
def test_odd_or_missing_tenant_claims_see_nothing_else(conn: psycopg.Connection, claims: dict[str, Any]) -> None:
    for table in TABLES:
        become(conn, "authenticated", claims)
        try:
            seen = {
                r[0]
                for r in conn.execute(
                    sql.SQL("select tenant_id from {}").format(sql.Identifier("public", table))
                ).fetchall()
            }
        finally:
            conn.rollback()
        assert seen <= ({"partner1"} if claims.get("tenant_id") == "partner1" else set()), (table, seen)


def test_anon_sees_and_calls_nothing(conn: psycopg.Connection) -> None:
    for table in TABLES:
        become(conn, "anon", {"role": "anon"})
        assert _attempt(conn, f"select * from public.{table}") == DENIED
    for fn in (
        "private.is_super_admin()",
        "public.get_current_tenant_id()",
        "private.is_primary_tenant('cozyartz')",
        "private.member_tenant_id()",
        "private.admin_tenant_id()",
    ):
        become(conn, "anon", {"role": "anon"})
        assert _attempt(conn, f"select {fn}") == DENIED


def test_security_definer_helpers_are_locked_down(conn: psycopg.Connection) -> None:
    rows = conn.execute(
        "select p.oid::regprocedure::text, p.proconfig,"
        " has_function_privilege('anon', p.oid, 'execute'),"
        " has_function_privilege('public', p.oid, 'execute')"
        " from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
        " where p.prosecdef and n.nspname in ('public', 'private')"
    ).fetchall()
    conn.rollback()
    assert {r[0] for r in rows} >= {
        "private.is_super_admin()",
        "private.is_primary_tenant(text)",
        "private.is_platform_domain(text)",
    }
    for name, config, anon_exec, public_exec in rows:
        assert config and 'search_path=""' in config, name
        assert not anon_exec and not public_exec, name


def test_audit_log_is_append_only_even_for_service_role(conn: psycopg.Connection) -> None:
    become(conn, "service_role", {"role": "service_role"})
    assert _attempt(conn, "update public.audit_log set action = 'x.y' returning 1") == DENIED
    become(conn, "service_role", {"role": "service_role"})
    assert _attempt(conn, "delete from public.audit_log returning 1") == DENIED


# ---- the recursion regression -----------------------------------------------------------

RECURSIVE_POLICY = """
create policy "tenant_isolation" on public.profiles for all to authenticated using (
  tenant_id = (select auth.jwt() ->> 'tenant_id')
  or exists (select 1 from public.profiles p where p.id = auth.uid() and p.tenant_role = 'super_admin'))
"""


def read_everything_as(conn: psycopg.Connection, claims: dict[str, Any]) -> None:
    """What every request does: read each table (and a join) as `authenticated`."""
    become(conn, "authenticated", claims)
    for table in TABLES:
        conn.execute(sql.SQL("select count(*) from {}").format(sql.Identifier("public", table))).fetchone()
    conn.execute("select count(*) from public.profiles p join public.tenants t using (tenant_id)").fetchone()


@pytest.mark.parametrize("principal", ["client_a", "admin_a", "super_admin", "forged_super_admin_a"])
def test_no_policy_recursion_as_authenticated(conn: psycopg.Connection, principal: str) -> None:
    _, claims = principal_claims(principal, WORLD)
    try:
        read_everything_as(conn, claims or {})  # raises 42P17 "infinite recursion detected in policy"
    finally:
        conn.rollback()


def test_recursion_check_catches_the_product_documents_policy(conn: psycopg.Connection) -> None:
    # The check above would have failed on the product document's policy: prove it.
    _, claims = principal_claims("client_a", WORLD)
    conn.execute(RECURSIVE_POLICY)
    try:
        with pytest.raises(psycopg.errors.InvalidObjectDefinition, match="infinite recursion"):
            read_everything_as(conn, claims or {})
    finally:
        conn.rollback()


def test_no_policy_on_profiles_reads_profiles(conn: psycopg.Connection) -> None:
    rows = conn.execute(
        "select policyname, coalesce(qual, '') || coalesce(with_check, '') from pg_policies"
        " where schemaname = 'public' and tablename = 'profiles'"
    ).fetchall()
    conn.rollback()
    assert rows
    for name, text in rows:
        assert "profiles" not in text, name


# ---- catalog checks -----------------------------------------------------------------------


def test_rls_enabled_and_forced_on_every_public_table(conn: psycopg.Connection) -> None:
    rows = conn.execute(
        "select c.relname, c.relrowsecurity, c.relforcerowsecurity from pg_class c"
        " join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = 'public' and c.relkind in ('r', 'p')"
    ).fetchall()
    conn.rollback()
    assert {r[0] for r in rows} >= set(TABLES)
    assert [r[0] for r in rows if not (r[1] and r[2])] == []


def test_policies_are_per_operation_and_for_authenticated_only(conn: psycopg.Connection) -> None:
    rows = conn.execute(
        "select tablename, policyname, cmd, roles::text[] from pg_policies where schemaname = 'public'"
    ).fetchall()
    conn.rollback()
    assert rows
    for _table, name, cmd, roles in rows:
        assert cmd != "ALL", name
        assert roles == ["authenticated"], name
    assert {(t, c) for t, _, c, _ in rows} >= {(t, "SELECT") for t in TABLES}


def test_every_tenant_table_has_an_index_led_by_tenant_id(conn: psycopg.Connection) -> None:
    rows = conn.execute(
        "select t.relname from pg_index i join pg_class t on t.oid = i.indrelid"
        " join pg_namespace n on n.oid = t.relnamespace join pg_attribute a"
        "   on a.attrelid = t.oid and a.attnum = i.indkey[0]"
        " where n.nspname = 'public' and a.attname = 'tenant_id'"
    ).fetchall()
    conn.rollback()
    assert {r[0] for r in rows} >= set(TABLES)


# ---- idempotency ----------------------------------------------------------------------------


def _schema_dump(cluster: PgCluster) -> str:
    out = subprocess.run(
        [str(cluster.bin / "pg_dump"), "--schema-only", "--no-owner", cluster.dsn],
        check=True,
        capture_output=True,
        text=True,
    )
    # pg_dump wraps its output in a random \restrict token: not part of the schema.
    return "\n".join(line for line in out.stdout.splitlines() if not line.startswith(("\\restrict", "\\unrestrict")))


def _data_digest(conn: psycopg.Connection) -> list[Any]:
    rows = [
        conn.execute(
            sql.SQL(
                "select md5(coalesce(string_agg(t::text, '|' order by t::text), ''))"
                " from {} t where tenant_id in ('cozyartz', 'partner1', 'partner-seo')"
            ).format(sql.Identifier("public", table))
        ).fetchone()
        for table in TABLES
    ]
    conn.rollback()
    return rows


def test_migrations_and_seed_reapply_with_psql_as_a_no_op(pg_cluster: PgCluster, conn: psycopg.Connection) -> None:
    before_schema, before_data = _schema_dump(pg_cluster), _data_digest(conn)
    for path in [COMPAT_FILE, *migration_files(), SEED_FILE]:
        subprocess.run(
            [
                str(pg_cluster.bin / "psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "--single-transaction",
                "-d",
                pg_cluster.dsn,
                "-f",
                str(path),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    assert pg_cluster.apply_migrations() == []  # and the tracked runner skips them all
    assert _schema_dump(pg_cluster) == before_schema
    assert _data_digest(conn) == before_data


# ---- the Supabase compatibility layer ------------------------------------------------------


def test_auth_functions_read_claims_as_supabase_does(conn: psycopg.Connection) -> None:
    become(
        conn,
        "authenticated",
        {"sub": CLIENT_A, "role": "authenticated", "tenant_id": "partner1", "email": "c@p1.example"},
    )
    try:
        row = conn.execute(
            "select auth.uid()::text, auth.role(), auth.email(), auth.jwt() ->> 'tenant_id',"
            " public.get_current_tenant_id()"
        ).fetchone()
        assert row == (CLIENT_A, "authenticated", "c@p1.example", "partner1", "partner1")
        # The legacy per-claim setting wins over the claims object, exactly as in Supabase.
        conn.execute("select set_config('request.jwt.claim.sub', %s, true)", (ADMIN_A,))
        assert conn.execute("select auth.uid()::text").fetchone() == (ADMIN_A,)
    finally:
        conn.rollback()
    become(conn, "anon", None)
    try:
        conn.execute("select set_config('request.jwt.claims', '', true)")
        assert conn.execute("select auth.uid(), auth.role(), auth.jwt()").fetchone() == (None, None, None)
    finally:
        conn.rollback()


def test_compat_migration_steps_aside_on_a_real_supabase(conn: psycopg.Connection) -> None:
    # A Supabase database has supabase_admin; the compat file must then touch nothing.
    notices: list[str] = []

    def collect(diag: psycopg.errors.Diagnostic) -> None:
        notices.append(diag.message_primary or "")

    conn.add_notice_handler(collect)
    try:
        conn.execute("create role supabase_admin")
        conn.execute("revoke authenticated from authenticator")  # a difference the file would "fix"
        conn.execute(COMPAT_FILE.read_text().encode())
        assert any("real Supabase database detected" in n for n in notices)
        member = conn.execute("select pg_has_role('authenticator', 'authenticated', 'member')").fetchone()
        assert member == (False,)
    finally:
        conn.rollback()
        conn.remove_notice_handler(collect)


# ---- the policies' helpers: same answers, same plans -------------------------------------------

HELPERS_MIGRATION = "20261127013708_rls_helpers.sql"


@pytest.mark.parametrize(
    ("claims", "member", "admin"),
    [
        ({"tenant_id": SEED_A, "tenant_role": "client"}, SEED_A, None),
        ({"tenant_id": SEED_A, "tenant_role": "admin"}, SEED_A, SEED_A),
        ({"tenant_id": "cozyartz", "tenant_role": "super_admin"}, "cozyartz", "cozyartz"),
        # super_admin claimed outside the primary tenant is no admin at all
        ({"tenant_id": SEED_A, "tenant_role": "super_admin"}, SEED_A, None),
        ({"tenant_id": "", "tenant_role": "admin"}, None, None),
        ({"tenant_role": "admin"}, None, None),
        ({"tenant_id": SEED_A, "tenant_role": "Admin"}, SEED_A, None),
    ],
)
def test_the_policy_helpers_answer_from_the_jwt(
    conn: psycopg.Connection, claims: dict[str, Any], member: str | None, admin: str | None
) -> None:
    become(conn, "authenticated", {"sub": str(uuid.uuid4()), "role": "authenticated", **claims})
    try:
        row = conn.execute("select private.member_tenant_id(), private.admin_tenant_id()").fetchone()
    finally:
        conn.rollback()
    assert row == (member, admin)


def test_policies_read_the_jwt_only_through_the_helpers(conn: psycopg.Connection) -> None:
    rows = conn.execute(
        "select tablename, policyname, coalesce(qual, '') || ' ' || coalesce(with_check, '')"
        " from pg_policies where schemaname = 'public'"
    ).fetchall()
    conn.rollback()
    assert rows
    assert [(t, p) for t, p, text in rows if "auth.jwt()" in text or "is_tenant_admin()" in text] == []
    # and every helper call is wrapped in a sub-select, so it is an InitPlan, not a per-row call
    for table, policy, text in rows:
        for helper in ("private.member_tenant_id()", "private.admin_tenant_id()", "private.is_super_admin()"):
            assert text.count(helper) == text.count(f"SELECT {helper}"), (table, policy, helper)


# (principal claims, query): tenant reads as the API makes them, and one where RLS alone filters.
PLAN_QUERIES = [
    (
        {"tenant_id": SEED_A, "tenant_role": "admin"},
        "select * from public.audit_log where tenant_id = 'partner1' order by at desc limit 20",
    ),
    (
        {"tenant_id": SEED_A, "tenant_role": "client", "sub": "00000000-0000-4000-8000-000000000012"},
        "select * from public.profiles where tenant_id = 'partner1'",
    ),
    ({"tenant_id": SEED_A, "tenant_role": "admin"}, "select name from public.integration_credentials"),
    (
        {"tenant_id": SEED_A, "tenant_role": "client", "sub": "00000000-0000-4000-8000-000000000012"},
        "select * from public.support_tickets where tenant_id = 'partner1'",
    ),
    ({"tenant_id": SEED_A, "tenant_role": "admin"}, "select * from public.tenant_domains where tenant_id = 'partner1'"),
]


def _plan(db: PgCluster, claims: dict[str, Any], query: str) -> dict[str, Any]:
    with db.connect(autocommit=False) as c:
        c.execute("set local enable_seqscan = off")  # the question is which index serves the read
        c.execute("set local enable_bitmapscan = off")
        become(c, "authenticated", {"role": "authenticated", "sub": str(uuid.uuid4()), **claims})
        row = c.execute(f"explain (verbose, costs off, format json) {query}").fetchone()
        c.rollback()
    assert row is not None
    plan: dict[str, Any] = row[0][0]["Plan"]
    return plan


def _nodes(plan: dict[str, Any], in_initplan: bool = False) -> Iterator[tuple[dict[str, Any], bool]]:
    yield plan, in_initplan
    for child in plan.get("Plans", []):
        yield from _nodes(child, in_initplan or child.get("Parent Relationship") == "InitPlan")


def _scans(plan: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The scans outside InitPlans: node type, relation, index (the plan's shape for a tenant read)."""
    return [
        (n["Node Type"], n.get("Relation Name", ""), n.get("Index Name", ""))
        for n, init in _nodes(plan)
        if not init and "Relation Name" in n
    ]


def test_the_helpers_plan_as_the_predicates_did(pg_cluster: PgCluster, tmp_path: Path) -> None:
    before_dir = tmp_path / "before"
    before_dir.mkdir()
    for path in migration_files():
        if path.name < HELPERS_MIGRATION:
            shutil.copy(path, before_dir / path.name)
    db = PgCluster(data_dir=pg_cluster.data_dir, port=pg_cluster.port, dbname=f"plans_{uuid.uuid4().hex[:8]}")
    db.start()  # the running cluster: creates the database only
    try:
        db.apply_migrations(before_dir)
        db.seed()
        before = [_plan(db, claims, query) for claims, query in PLAN_QUERIES]
        assert HELPERS_MIGRATION in db.apply_migrations()
        after = [_plan(db, claims, query) for claims, query in PLAN_QUERIES]
    finally:
        with psycopg.connect(pg_cluster.dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(db.dbname)))

    for (_claims, query), old, new in zip(PLAN_QUERIES, before, after, strict=True):
        table = query.split("from public.")[1].split()[0]
        # The same scans, and the table is read through an index led by tenant_id.
        assert _scans(new) == _scans(old), query
        scans = [n for n, init in _nodes(new) if not init and n.get("Relation Name") == table]
        assert scans and all(n["Node Type"] in ("Index Scan", "Index Only Scan") for n in scans), query
        assert all("tenant_id" in n.get("Index Cond", "") for n in scans), query
        # The helpers run once per statement (InitPlans); no scan calls a function per row.
        outside = " ".join(
            str(n.get(k, "")) for n, init in _nodes(new) if not init for k in ("Filter", "Index Cond", "Recheck Cond")
        )
        for name in ("member_tenant_id", "admin_tenant_id", "is_super_admin", "jwt", "is_tenant_admin"):
            assert f"{name}(" not in outside, (query, name, outside)
        inits = " ".join(str(n.get("Output", "")) for n, init in _nodes(new) if init)
        assert "private.admin_tenant_id()" in inits or "private.member_tenant_id()" in inits, query

"""The database as the one authority on domains (supabase/migrations/20261126232039_domain_rules.sql), attacked
in SQL the way PostgREST drives it (`set local role` + `request.jwt.claims`) and over HTTP through
the real PostgREST: the quota on every writer and under concurrency, no overlap across tenants,
claims pending with a token only the database makes, and the primary domain kept.

Each test builds its own tenants (as the owner) and removes them; SQL cases roll back.
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any, Iterator

import httpx
import psycopg
import pytest

from localrt.postgres import PgCluster
from shared.jwt import HS256Signer
from shared.tiers import Tier, plan_for

PRIMARY_ZONE = "cozyartzmedia.com"
SA = "00000000-0000-4000-8000-000000000001"  # seed.sql: cozyartz super_admin


def uid(tenant: str, role: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"cmgsite-domain-rules:{tenant}:{role}"))


class Tenants:
    """Throwaway tenants made as the owner, each with an admin; all removed at the end."""

    def __init__(self, pg: PgCluster) -> None:
        self.pg, self.made = pg, []  # type: ignore[var-annotated]

    def make(self, tier: str = "growth", type_: str = "custom-domain", domain: str | None = None) -> tuple[str, str]:
        tag = uuid.uuid4().hex[:8]
        tid = f"dr-{tag}"
        domain = domain or f"{tid}.rules-test.example"
        with self.pg.connect() as conn:
            conn.execute(
                "insert into public.tenants (tenant_id, name, domain, type, subscription_tier, script_name)"
                " values (%s, %s, %s, %s, %s, 'cmgsite-custom-tenant')",
                (tid, tid, domain, type_, tier),
            )
            conn.execute(
                "insert into public.tenant_domains (tenant_id, domain, domain_type) values (%s, %s, %s)",
                (tid, domain, "subdomain" if type_ == "partner-subdomain" else "custom"),
            )
            conn.execute(
                "insert into public.profiles (id, tenant_id, tenant_role) values (%s, %s, 'admin')",
                (uid(tid, "admin"), tid),
            )
        self.made.append(tid)
        return tid, domain

    def drop(self) -> None:
        with self.pg.connect() as conn:
            conn.execute("delete from public.tenants where tenant_id = any(%s)", (self.made,))


@pytest.fixture
def tenants(pg_cluster: PgCluster) -> Iterator[Tenants]:
    t = Tenants(pg_cluster)
    try:
        yield t
    finally:
        t.drop()


@pytest.fixture
def conn(pg_cluster: PgCluster, tenants: Tenants) -> Iterator[psycopg.Connection]:
    """Set up after `tenants`, so it rolls back (releasing its row locks) before they are dropped."""
    c = pg_cluster.connect(autocommit=False)
    try:
        yield c
    finally:
        c.rollback()
        c.close()


def become(conn: psycopg.Connection, who: str, tenant: str | None = None) -> None:
    """Act as PostgREST would: the service role, a tenant's admin, or the platform super admin."""
    if who == "service_role":
        conn.execute(
            "select set_config('role', 'service_role', true), set_config('request.jwt.claims', %s, true)",
            (json.dumps({"role": "service_role"}),),
        )
        return
    if who == "super_admin":
        claims = {"sub": SA, "role": "authenticated", "tenant_id": "cozyartz", "tenant_role": "super_admin"}
    else:
        assert tenant is not None
        claims = {"sub": uid(tenant, who), "role": "authenticated", "tenant_id": tenant, "tenant_role": who}
    conn.execute(
        "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)",
        (json.dumps(claims),),
    )


def add(conn: psycopg.Connection, tenant: str, domain: str, domain_type: str = "custom") -> dict[str, Any]:
    row = conn.execute(
        "insert into public.tenant_domains (tenant_id, domain, domain_type) values (%s, %s, %s)"
        " returning domain, verification_status, verification_token, verified_at",
        (tenant, domain, domain_type),
    ).fetchone()
    assert row is not None
    return dict(zip(("domain", "verification_status", "verification_token", "verified_at"), row, strict=True))


def refused(conn: psycopg.Connection, tenant: str, domain: str, domain_type: str = "custom") -> psycopg.Error:
    conn.execute("savepoint attempt")
    try:
        add(conn, tenant, domain, domain_type)
    except psycopg.Error as exc:
        conn.execute("rollback to savepoint attempt")
        return exc
    raise AssertionError(f"{domain} was accepted for {tenant}")


# ---- the quota ------------------------------------------------------------------------------
def test_the_sql_tier_limit_is_the_tier_table(conn: psycopg.Connection) -> None:
    for tier in Tier:
        assert conn.execute("select private.tier_domain_limit(%s)", (tier.value,)).fetchone() == (
            plan_for(tier).domains,
        )
    assert conn.execute("select private.tier_domain_limit('platinum')").fetchone() == (None,)


@pytest.mark.parametrize("who", ["service_role", "admin"])
def test_no_writer_passes_the_quota(conn: psycopg.Connection, tenants: Tenants, who: str) -> None:
    """The defect: the operator added 3 (service role), then the tenant admin 4 more. Whoever adds, 5 is 5."""
    tid, _ = tenants.make("growth")
    become(conn, who, tid)
    for i in range(4):
        add(conn, tid, f"s{i}.{tid}-shop.example")
    err = refused(conn, tid, f"s4.{tid}-shop.example")
    assert err.sqlstate == "CMQ01" and "quota" in str(err)
    assert json.loads(err.diag.message_detail or "") == {"limit": 5, "used": 5}


def test_operator_adds_then_tenant_adds_stop_at_the_tier(conn: psycopg.Connection, tenants: Tenants) -> None:
    tid, _ = tenants.make("growth")
    become(conn, "service_role")
    for i in range(3):
        add(conn, tid, f"op{i}.{tid}-shop.example")
    become(conn, "admin", tid)
    add(conn, tid, f"t0.{tid}-shop.example")
    assert all(refused(conn, tid, f"t{i}.{tid}-shop.example").sqlstate == "CMQ01" for i in range(1, 4))
    assert conn.execute("select count(*) from public.tenant_domains where tenant_id = %s", (tid,)).fetchone() == (5,)


def test_concurrent_adds_by_both_paths_cannot_pass_the_quota(pg_cluster: PgCluster, tenants: Tenants) -> None:
    """Eight writers (service role and tenant admin, interleaved) race for one free slot: the tenant
    row lock serialises them, so exactly one commits."""
    tid, _ = tenants.make("starter", domain=None)
    with pg_cluster.connect() as c:  # starter: 1 domain, and the tenant's own already uses it: free one slot
        c.execute("delete from public.tenant_domains where tenant_id = %s", (tid,))
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def writer(i: int) -> None:
        with pg_cluster.connect(autocommit=False) as c:
            become(c, "service_role" if i % 2 else "admin", tid)
            barrier.wait()
            try:
                add(c, tid, f"race{i}.{tid}-shop.example")
                c.commit()
                outcomes.append("ok")
            except psycopg.Error as exc:
                c.rollback()
                outcomes.append(exc.sqlstate or "?")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["CMQ01"] * 7 + ["ok"]
    with pg_cluster.connect() as c:
        assert c.execute("select count(*) from public.tenant_domains where tenant_id = %s", (tid,)).fetchone() == (1,)


def test_a_tier_below_the_count_is_refused(conn: psycopg.Connection, tenants: Tenants) -> None:
    tid, _ = tenants.make("growth")
    become(conn, "service_role")
    add(conn, tid, f"second.{tid}-shop.example")
    conn.execute("savepoint s")
    with pytest.raises(psycopg.Error) as err:
        conn.execute("update public.tenants set subscription_tier = 'starter' where tenant_id = %s", (tid,))
    assert err.value.sqlstate == "CMQ01"
    conn.execute("rollback to savepoint s")
    conn.execute("update public.tenants set subscription_tier = 'enterprise' where tenant_id = %s", (tid,))


def test_the_usage_row_is_the_real_count_whoever_writes_it(conn: psycopg.Connection, tenants: Tenants) -> None:
    tid, _ = tenants.make("growth")
    month = conn.execute("select to_char(now() at time zone 'utc', 'YYYY-MM')").fetchone()[0]
    become(conn, "admin", tid)
    add(conn, tid, f"u1.{tid}-shop.example")
    become(conn, "service_role")
    usage = (
        "select usage_count, usage_limit from public.tenant_usage where tenant_id = %s and usage_type = 'domains'"
        " and period = %s"
    )
    assert conn.execute(usage, (tid, month)).fetchone() == (2, 5)
    # A stale level from an old metering flush cannot overwrite it.
    conn.execute(
        "update public.tenant_usage set usage_count = 0 where tenant_id = %s and usage_type = 'domains'", (tid,)
    )
    assert conn.execute(usage, (tid, month)).fetchone() == (2, 5)
    conn.execute("delete from public.tenant_domains where domain = %s", (f"u1.{tid}-shop.example",))
    assert conn.execute(usage, (tid, month)).fetchone() == (1, 5)


# ---- overlap across tenants ----------------------------------------------------------------
@pytest.mark.parametrize("who", ["admin", "service_role", "super_admin"])
def test_no_name_equal_to_under_or_above_another_tenants(conn: psycopg.Connection, tenants: Tenants, who: str) -> None:
    victim, victim_domain = tenants.make("growth", domain=f"shop-{uuid.uuid4().hex[:6]}.victim-test.example")
    attacker, _ = tenants.make("enterprise")
    parent = victim_domain.split(".", 1)[1]
    become(conn, who, attacker)
    errors = {
        name: refused(conn, attacker, name) for name in (f"login.{victim_domain}", f"a.b.{victim_domain}", parent)
    }
    assert {e.sqlstate for e in errors.values()} == {"CMD01"}
    # One answer whatever the relation, naming nobody.
    assert {(e.diag.message_primary, e.diag.message_detail, e.diag.message_hint) for e in errors.values()} == {
        ("domain not available", None, None)
    }
    assert refused(conn, attacker, victim_domain).sqlstate == "23505"  # equal: uniqueness says as much already
    add(conn, attacker, f"not{victim_domain}")  # a lookalike is just another name


def test_a_pending_claim_blocks_too(conn: psycopg.Connection, tenants: Tenants) -> None:
    first, _ = tenants.make("growth")
    second, _ = tenants.make("growth")
    become(conn, "admin", first)
    add(conn, first, f"{first}-brand.example")
    become(conn, "admin", second)
    assert refused(conn, second, f"www.{first}-brand.example").sqlstate == "CMD01"


def test_partner_slots_under_the_apex_but_not_under_a_partner(conn: psycopg.Connection, tenants: Tenants) -> None:
    p, p_domain = tenants.make("growth", "partner-subdomain", domain=f"dr{uuid.uuid4().hex[:6]}.{PRIMARY_ZONE}")
    other, _ = tenants.make("growth", "partner-subdomain", domain=f"dr{uuid.uuid4().hex[:6]}.{PRIMARY_ZONE}")
    become(conn, "service_role")
    add(conn, p, f"second-{p}.{PRIMARY_ZONE}", "subdomain")
    assert refused(conn, other, f"login.{p_domain}", "subdomain").sqlstate == "CMD01"


# ---- ownership -------------------------------------------------------------------------------
def test_a_tenant_claim_is_pending_with_a_database_token(conn: psycopg.Connection, tenants: Tenants) -> None:
    tid, own = tenants.make("growth")
    become(conn, "admin", tid)
    a, b = add(conn, tid, f"a.{tid}-shop.example"), add(conn, tid, f"b.{tid}-shop.example")
    for row in (a, b):
        assert row["verification_status"] == "pending" and row["verified_at"] is None
        assert len(row["verification_token"]) == 64 and int(row["verification_token"], 16) >= 0
    assert a["verification_token"] != b["verification_token"]
    become(conn, "service_role")
    assert conn.execute(
        "select verification_status from public.tenant_domains where domain = %s", (own,)
    ).fetchone() == ("verified",)  # the tenant's own primary domain


@pytest.mark.parametrize(
    "statement",
    [
        "insert into public.tenant_domains (tenant_id, domain, domain_type, verification_status)"
        " values (%(t)s, 'x.' || %(t)s || '-shop.example', 'custom', 'verified')",
        "insert into public.tenant_domains (tenant_id, domain, domain_type, verification_token)"
        " values (%(t)s, 'x.' || %(t)s || '-shop.example', 'custom', repeat('a', 64))",
        "update public.tenant_domains set verification_status = 'verified' where tenant_id = %(t)s",
        "update public.tenant_domains set verification_token = repeat('a', 64) where tenant_id = %(t)s",
        "update public.tenant_domains set verified_at = now() where tenant_id = %(t)s",
    ],
)
@pytest.mark.parametrize("who", ["admin", "super_admin"])
def test_api_users_cannot_set_verification(
    conn: psycopg.Connection, tenants: Tenants, statement: str, who: str
) -> None:
    tid, _ = tenants.make("growth")
    with conn.transaction():  # a pending claim to attack
        become(conn, "admin", tid)
        add(conn, tid, f"p.{tid}-shop.example")
    become(conn, who, tid)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement, {"t": tid})
    conn.rollback()
    assert conn.execute(
        "select verification_status from public.tenant_domains where domain = %s", (f"p.{tid}-shop.example",)
    ).fetchone() == ("pending",)
    conn.rollback()


def test_only_the_service_role_marks_verified(conn: psycopg.Connection, tenants: Tenants) -> None:
    tid, _ = tenants.make("growth")
    become(conn, "admin", tid)
    add(conn, tid, f"v.{tid}-shop.example")
    become(conn, "service_role")
    row = conn.execute(
        "update public.tenant_domains set verification_status = 'verified' where domain = %s returning verified_at",
        (f"v.{tid}-shop.example",),
    ).fetchone()
    assert row is not None and row[0] is not None


def test_a_partner_subdomain_tenant_cannot_add_a_custom_domain(conn: psycopg.Connection, tenants: Tenants) -> None:
    tid, _ = tenants.make("growth", "partner-subdomain", domain=f"dr{uuid.uuid4().hex[:6]}.{PRIMARY_ZONE}")
    become(conn, "admin", tid)
    err = refused(conn, tid, f"shop.{tid}-custom.example")
    assert err.sqlstate == "42501" and err.diag.message_hint == "custom_domains_not_allowed"


def test_a_refusal_into_another_tenant_says_rls_only(conn: psycopg.Connection, tenants: Tenants) -> None:
    """The quota and overlap checks run after RLS: a neighbour's full quota is no oracle."""
    full, _ = tenants.make("starter")
    attacker, _ = tenants.make("growth")
    become(conn, "admin", attacker)
    err = refused(conn, full, f"x.{full}-shop.example")
    assert err.sqlstate == "42501" and "row-level security" in str(err)


# ---- the primary domain ----------------------------------------------------------------------
@pytest.mark.parametrize("who", ["admin", "super_admin"])
def test_api_users_cannot_delete_a_primary_domain(conn: psycopg.Connection, tenants: Tenants, who: str) -> None:
    tid, own = tenants.make("growth")
    become(conn, who, tid)
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
        conn.execute("delete from public.tenant_domains where domain = %s", (own,))
    assert err.value.diag.message_hint == "primary_domain"
    conn.rollback()
    become(conn, "service_role")  # the control plane's erasure may
    assert conn.execute("delete from public.tenant_domains where domain = %s returning 1", (own,)).fetchall() == [(1,)]


# ---- over HTTP, through the real PostgREST ---------------------------------------------------
def jwt(stack: Any, tenant: str, role: str, sub: str) -> str:
    import time

    now = int(time.time())
    return HS256Signer(stack.jwt_secret).sign(
        {
            "sub": sub,
            "role": "authenticated",
            "aud": "authenticated",
            "tenant_id": tenant,
            "tenant_role": role,
            "iat": now,
            "exp": now + 120,
        }
    )


def test_a_tenant_token_cannot_mark_a_domain_verified_through_postgrest(
    supabase_stack: Any, tenants: Tenants, pg_cluster: PgCluster
) -> None:
    tid, _ = tenants.make("growth")
    domain = f"http.{tid}-shop.example"
    tenant_h = {
        "apikey": supabase_stack.anon_key,
        "prefer": "return=representation",
        "authorization": f"Bearer {jwt(supabase_stack, tid, 'admin', uid(tid, 'admin'))}",
    }
    sa_h = {**tenant_h, "authorization": f"Bearer {jwt(supabase_stack, 'cozyartz', 'super_admin', SA)}"}
    rest = f"{supabase_stack.rest_url}/tenant_domains"
    with httpx.Client(timeout=10) as http:
        r = http.post(
            rest,
            json={"tenant_id": tid, "domain": domain, "domain_type": "custom", "verification_status": "verified"},
            headers=tenant_h,
        )
        assert r.status_code in (401, 403) and r.json()["code"] == "42501"
        r = http.post(rest, json={"tenant_id": tid, "domain": domain, "domain_type": "custom"}, headers=tenant_h)
        assert r.status_code == 201 and r.json()[0]["verification_status"] == "pending"
        for headers in (tenant_h, sa_h):
            for body in (
                {"verification_status": "verified"},
                {"verification_token": "a" * 64},
                {"verified_at": "2026-01-01T00:00:00Z"},
            ):
                r = http.patch(rest, params={"domain": f"eq.{domain}"}, json=body, headers=headers)
                assert r.status_code in (401, 403) and r.json()["code"] == "42501", (body, r.text)
    with pg_cluster.connect() as conn:
        assert conn.execute(
            "select verification_status, verified_at from public.tenant_domains where domain = %s", (domain,)
        ).fetchone() == ("pending", None)

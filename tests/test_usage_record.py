"""public.record_usage(): the only way the usage flush writes `tenant_usage` (issue 10, item 2).

Counters never go down, whoever sends the lower value. Levels are stored as sent. Only the
service role may call it. Over the real PostgREST (through the gateway), as the meter calls it,
and in SQL for the grants.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Iterator

import httpx
import pytest
from psycopg.types.json import Jsonb

from localrt.postgres import PgCluster
from localrt.supabase_stack import SupabaseStack
from shared.jwt import HS256Signer, mint_tenant_jwt
from tests.fixtures.pg import RemoteSupabase

PERIOD = "2021-03"


@pytest.fixture(autouse=True)
def local_only(supabase_stack: SupabaseStack | RemoteSupabase) -> None:
    if isinstance(supabase_stack, RemoteSupabase):
        pytest.skip("reads the local cluster directly")


@pytest.fixture
def tenant(pg_cluster: PgCluster) -> Iterator[str]:
    tenant_id = f"rec-{uuid.uuid4().hex[:8]}"
    with pg_cluster.connect() as conn:
        conn.execute(
            "insert into public.tenants (tenant_id, name, domain, type, subscription_tier, script_name)"
            " values (%s, 'Record test', %s, 'custom-domain', 'starter', %s)",
            (tenant_id, f"{tenant_id}.record-test.example", f"cmgsite-{tenant_id}"),
        )
    try:
        yield tenant_id
    finally:
        with pg_cluster.connect() as conn:
            conn.execute("delete from public.tenants where tenant_id = %s", (tenant_id,))


def record(
    stack: SupabaseStack, rows: list[dict[str, Any]], key: str | None = None, bearer: str | None = None
) -> httpx.Response:
    headers = {"apikey": key or stack.service_role_key}
    if bearer:
        headers["authorization"] = f"Bearer {bearer}"
    return httpx.post(f"{stack.rest_url}/rpc/record_usage", json={"usage_rows": rows}, headers=headers, timeout=10)


def row(tenant: str, kind: str, count: int, limit: int | None = 100) -> dict[str, Any]:
    return {"tenant_id": tenant, "usage_type": kind, "period": PERIOD, "usage_count": count, "usage_limit": limit}


def stored(pg: PgCluster, tenant: str) -> dict[str, tuple[int, int | None]]:
    with pg.connect() as conn:
        rows = conn.execute(
            "select usage_type, usage_count, usage_limit from public.tenant_usage where tenant_id = %s and period = %s",
            (tenant, PERIOD),
        ).fetchall()
    return {kind: (count, limit) for kind, count, limit in rows}


def test_a_lower_count_never_replaces_a_higher_one(
    supabase_stack: SupabaseStack, pg_cluster: PgCluster, tenant: str
) -> None:
    assert record(supabase_stack, [row(tenant, "ai_calls", 15)]).json() == 1
    for lower in (14, 5, 0):  # a reset meter, a stale retry, a refund after the flush
        r = record(supabase_stack, [row(tenant, "ai_calls", lower)])
        assert r.status_code == 200 and r.json() == 0, r.text  # nothing changed, nothing written
    assert stored(pg_cluster, tenant) == {"ai_calls": (15, 100)}
    assert record(supabase_stack, [row(tenant, "ai_calls", 16, 250)]).json() == 1
    assert stored(pg_cluster, tenant) == {"ai_calls": (16, 250)}


def test_a_lower_count_keeps_the_higher_one_but_takes_the_new_limit(
    supabase_stack: SupabaseStack, pg_cluster: PgCluster, tenant: str
) -> None:
    record(supabase_stack, [row(tenant, "ai_calls", 40, 100)])
    assert record(supabase_stack, [row(tenant, "ai_calls", 3, 250)]).json() == 1  # a tier change
    assert stored(pg_cluster, tenant) == {"ai_calls": (40, 250)}


def test_levels_are_absolute_and_may_go_down(supabase_stack: SupabaseStack, pg_cluster: PgCluster, tenant: str) -> None:
    record(
        supabase_stack,
        [row(tenant, "domains", 3, 5), row(tenant, "storage", 4096, 1 << 30), row(tenant, "ai_calls", 9)],
    )
    record(
        supabase_stack, [row(tenant, "domains", 1, 5), row(tenant, "storage", 0, 1 << 30), row(tenant, "ai_calls", 2)]
    )
    assert stored(pg_cluster, tenant) == {"domains": (1, 5), "storage": (0, 1 << 30), "ai_calls": (9, 100)}


@pytest.mark.parametrize(
    "bad",
    [
        {"usage_rows": {"tenant_id": "x"}},  # not an array
        {"usage_rows": [{"tenant_id": "partner1", "usage_type": "ai_calls", "period": "2021-13", "usage_count": 1}]},
        {"usage_rows": [{"tenant_id": "partner1", "usage_type": "ai_calls", "period": PERIOD, "usage_count": -1}]},
        {"usage_rows": [{"tenant_id": "partner1", "usage_type": "tokens", "period": PERIOD, "usage_count": 1}]},
        {"usage_rows": [{"tenant_id": "no-such-tenant", "usage_type": "ai_calls", "period": PERIOD, "usage_count": 1}]},
    ],
)
def test_malformed_rows_are_refused_whole(
    supabase_stack: SupabaseStack, pg_cluster: PgCluster, bad: dict[str, Any]
) -> None:
    r = httpx.post(
        f"{supabase_stack.rest_url}/rpc/record_usage",
        json=bad,
        headers={"apikey": supabase_stack.service_role_key},
        timeout=10,
    )
    assert r.status_code in (400, 409), r.text
    with pg_cluster.connect() as conn:
        assert conn.execute(
            "select count(*) from public.tenant_usage where tenant_id = 'partner1' and period in (%s, '2021-13')",
            (PERIOD,),
        ).fetchone() == (0,)


def test_only_the_service_role_may_record(supabase_stack: SupabaseStack, pg_cluster: PgCluster, tenant: str) -> None:
    token = mint_tenant_jwt(
        HS256Signer(supabase_stack.jwt_secret),
        user_id=str(uuid.uuid4()),
        tenant_id=tenant,
        tenant_role="admin",
        is_primary=False,
        now=time.time(),
    )
    anon = record(supabase_stack, [row(tenant, "ai_calls", 99)], key=supabase_stack.anon_key)
    admin = record(supabase_stack, [row(tenant, "ai_calls", 99)], key=supabase_stack.anon_key, bearer=token)
    assert (anon.status_code, anon.json()["code"]) == (401, "42501")
    assert (admin.status_code, admin.json()["code"]) == (403, "42501")
    assert stored(pg_cluster, tenant) == {}


def test_record_usage_grants(pg_cluster: PgCluster) -> None:
    with pg_cluster.connect() as conn:
        rows = conn.execute(
            "select r, has_function_privilege(r, 'public.record_usage(jsonb)', 'execute')"
            " from unnest(array['anon', 'authenticated', 'service_role', 'public']) r"
        ).fetchall()
        definer = conn.execute(
            "select prosecdef, proconfig from pg_proc where oid = 'public.record_usage(jsonb)'::regprocedure"
        ).fetchone()
    assert dict(rows) == {"anon": False, "authenticated": False, "service_role": True, "public": False}
    assert definer == (False, ['search_path=""'])


def test_record_usage_in_sql_as_the_service_role(pg_cluster: PgCluster, tenant: str) -> None:
    """The same rule without PostgREST: a direct SQL caller cannot lower a counter through it either."""
    with pg_cluster.connect(autocommit=False) as conn:
        conn.execute("set local role service_role")
        conn.execute("select public.record_usage(%s::jsonb)", (Jsonb([row(tenant, "ai_calls", 7)]),))
        conn.execute("select public.record_usage(%s::jsonb)", (Jsonb([row(tenant, "ai_calls", 2)]),))
        conn.commit()
    assert stored(pg_cluster, tenant) == {"ai_calls": (7, 100)}

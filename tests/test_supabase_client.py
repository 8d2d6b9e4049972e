"""shared.supabase.SupabaseClient against the real PostgREST (through the local gateway)."""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator, Iterator

import pytest

from localrt.http_client import HttpxClient
from localrt.supabase_stack import SupabaseStack, find_free_port
from shared.jwt import HS256Signer, JwtError, mint_tenant_jwt
from shared.outbound_http import HttpError
from shared.supabase import SupabaseClient, SupabaseError
from tests.fixtures.rls_matrix import World, WorldAdmin, insert_row, user_id

WORLD = World(a="sbc-a", b="sbc-b")
# Tests and the async http fixture share one loop (fixtures default to the session loop).
pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
def world(world_admin: WorldAdmin) -> Iterator[WorldAdmin]:
    world_admin.create(WORLD)
    try:
        yield world_admin
    finally:
        world_admin.drop(WORLD)


@pytest.fixture
async def http() -> AsyncIterator[HttpxClient]:
    async with HttpxClient() as client:
        yield client


def as_tenant(
    http: HttpxClient, stack: SupabaseStack, *, user: str, tenant: str, role: str, is_primary: bool = False
) -> SupabaseClient:
    """What tenant_worker.supabase_access.tenant_db builds: a tenant-scoped JWT over the anon key."""
    token = mint_tenant_jwt(
        HS256Signer(stack.jwt_secret),
        user_id=user,
        tenant_id=tenant,
        tenant_role=role,
        is_primary=is_primary,
        now=time.time(),
        ttl_seconds=300,
    )  # type: ignore[arg-type]
    return SupabaseClient(http, url=stack.url, api_key=stack.anon_key, access_token=token)


def tenant_db(http: HttpxClient, stack: SupabaseStack, role: str = "admin", tenant: str = WORLD.a) -> SupabaseClient:
    return as_tenant(http, stack, user=user_id(tenant, role), tenant=tenant, role=role)


def service_db(http: HttpxClient, stack: SupabaseStack) -> SupabaseClient:
    return SupabaseClient.as_service_role(http, url=stack.url, service_role_key=stack.service_role_key)


async def test_select_sees_only_own_tenant(supabase_stack: SupabaseStack, http: HttpxClient, world: WorldAdmin) -> None:
    db = tenant_db(http, supabase_stack)
    assert [r["tenant_id"] for r in await db.select("tenants", columns="tenant_id")] == [WORLD.a]
    assert await db.select("tenants", eq={"tenant_id": WORLD.b}) == []
    profiles = await db.select("profiles", columns="email,tenant_role", order="email.desc", limit=1)
    assert profiles == [{"email": f"client@{WORLD.a}.example.com", "tenant_role": "client"}]
    assert await db.select("profiles", columns="id", eq={"tenant_role": "admin", "email": None}) == []


async def test_write_cycle_as_tenant_admin(supabase_stack: SupabaseStack, http: HttpxClient, world: WorldAdmin) -> None:
    db = tenant_db(http, supabase_stack)
    row = insert_row("profiles", WORLD.a)
    inserted = await db.insert("profiles", row, columns="id,tenant_id,tenant_role")
    assert inserted == [{"id": row["id"], "tenant_id": WORLD.a, "tenant_role": "client"}]
    updated = await db.update("profiles", {"display_name": "Ada"}, eq={"id": row["id"]}, columns="display_name")
    assert updated == [{"display_name": "Ada"}]
    assert await db.delete("profiles", eq={"id": row["id"]}, columns="id") == [{"id": row["id"]}]
    assert await db.select("profiles", eq={"id": row["id"]}) == []


async def test_rls_refusal_surfaces_as_supabase_error(
    supabase_stack: SupabaseStack, http: HttpxClient, world: WorldAdmin
) -> None:
    db = tenant_db(http, supabase_stack)
    with pytest.raises(SupabaseError) as err:
        await db.insert("profiles", insert_row("profiles", WORLD.b))
    assert (err.value.status, err.value.code) == (403, "42501")
    assert "row-level security" in err.value.message
    # Writes aimed at another tenant's rows just match nothing.
    assert await db.update("profiles", {"display_name": "x"}, eq={"tenant_id": WORLD.b}) == []
    assert await db.delete("tenant_domains", eq={"tenant_id": WORLD.b}) == []


async def test_usage_is_written_by_service_role_only(
    supabase_stack: SupabaseStack, http: HttpxClient, world: WorldAdmin
) -> None:
    row = {"tenant_id": WORLD.a, "usage_type": "ai_calls", "period": "2030-01", "usage_count": 1, "usage_limit": 250}
    with pytest.raises(SupabaseError) as err:
        await tenant_db(http, supabase_stack).upsert("tenant_usage", row, on_conflict="tenant_id,usage_type,period")
    assert err.value.code == "42501"

    svc = service_db(http, supabase_stack)
    await svc.upsert("tenant_usage", row, on_conflict="tenant_id,usage_type,period")
    merged = await svc.upsert(
        "tenant_usage", {**row, "usage_count": 7}, on_conflict="tenant_id,usage_type,period", columns="usage_count"
    )
    assert merged == [{"usage_count": 7}]
    rows = await svc.select(
        "tenant_usage", columns="usage_count", eq={"tenant_id": WORLD.a, "usage_type": "ai_calls", "period": "2030-01"}
    )
    assert rows == [{"usage_count": 7}]
    # ignore-duplicates keeps the stored value.
    await svc.upsert(
        "tenant_usage", {**row, "usage_count": 99}, on_conflict="tenant_id,usage_type,period", ignore_duplicates=True
    )
    assert (
        await svc.select(
            "tenant_usage",
            columns="usage_count",
            eq={"tenant_id": WORLD.a, "period": "2030-01", "usage_type": "ai_calls"},
        )
        == rows
    )


async def test_rpc_reads_the_tenant_from_the_jwt(
    supabase_stack: SupabaseStack, http: HttpxClient, world: WorldAdmin
) -> None:
    assert await tenant_db(http, supabase_stack, role="client").rpc("get_current_tenant_id") == WORLD.a
    anon = SupabaseClient(
        http, url=supabase_stack.url, api_key=supabase_stack.anon_key, access_token=supabase_stack.anon_key
    )
    with pytest.raises(SupabaseError) as err:
        await anon.rpc("get_current_tenant_id")
    assert err.value.code == "42501"


async def test_super_admin_of_primary_tenant_sees_all(
    supabase_stack: SupabaseStack, http: HttpxClient, world: WorldAdmin
) -> None:
    db = as_tenant(
        http,
        supabase_stack,
        user="00000000-0000-4000-8000-000000000001",
        tenant="cozyartz",
        role="super_admin",
        is_primary=True,
    )
    assert await db.select("tenants", columns="tenant_id", eq={"tenant_id": WORLD.b}) == [{"tenant_id": WORLD.b}]
    with pytest.raises(JwtError):
        as_tenant(http, supabase_stack, user=user_id(WORLD.a, "admin"), tenant=WORLD.a, role="super_admin")


@pytest.mark.parametrize(
    "value",
    [
        f"{WORLD.b}&tenant_id=neq.x",
        f"{WORLD.a},{WORLD.b}",
        f"in.({WORLD.a},{WORLD.b})",
        "*",
        f"{WORLD.a}#",
    ],
)
async def test_filter_values_cannot_add_operators(
    supabase_stack: SupabaseStack, http: HttpxClient, world: WorldAdmin, value: str
) -> None:
    svc = service_db(http, supabase_stack)  # the service role sees everything: any widening would show
    assert await svc.select("tenants", columns="tenant_id", eq={"tenant_id": value}) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda db: db.select("tenants;drop"),
        lambda db: db.select("tenants", eq={"tenant_id=neq.x&tenant_id": "a"}),
        lambda db: db.select("tenants", columns="*,profiles(*)"),
        lambda db: db.select("tenants", order="tenant_id;desc"),
        lambda db: db.update("tenants", {"name": "x"}, eq={}),
        lambda db: db.delete("profiles", eq={}),
        lambda db: db.rpc("../tenants"),
    ],
)
async def test_names_are_validated_before_any_request(http: HttpxClient, call) -> None:  # type: ignore[no-untyped-def]
    db = SupabaseClient(http, url="http://127.0.0.1:9", api_key="k", access_token="k")
    with pytest.raises(ValueError):
        await call(db)


async def test_invalid_api_key(supabase_stack: SupabaseStack, http: HttpxClient) -> None:
    db = SupabaseClient(http, url=supabase_stack.url, api_key="bogus", access_token="bogus")
    with pytest.raises(SupabaseError) as err:
        await db.select("tenants")
    assert err.value.status == 401 and err.value.message == "Invalid API key"


async def test_transport_failure_is_http_error(http: HttpxClient) -> None:
    db = SupabaseClient(http, url=f"http://127.0.0.1:{find_free_port()}", api_key="k", access_token="k", timeout=2)
    with pytest.raises(HttpError):
        await db.select("tenants")


async def test_timeout_is_http_error(http: HttpxClient) -> None:
    # A server that accepts the connection and never answers.
    release = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        db = SupabaseClient(http, url=f"http://127.0.0.1:{port}", api_key="k", access_token="k", timeout=0.3)
        with pytest.raises(HttpError, match="Timeout"):
            await db.select("tenants")
    finally:
        release.set()
        server.close()
        await server.wait_closed()

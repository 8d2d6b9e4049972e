"""The isolation matrix again, over HTTP: the real PostgREST 12 behind the local gateway
(or a real Supabase project, see tests/fixtures/pg.py).

Each principal is what a caller can send: the anon key alone, the service-role key, or the
anon key plus a tenant JWT signed with the project secret. Writes are real (no rollback
over HTTP), so the two test tenants are rebuilt after every write. Then the JWT attacks.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, Iterator

import httpx
import pytest

from localrt.supabase_stack import SupabaseStack
from shared.jwt import HS256Signer
from tests.fixtures.rls_matrix import (
    DENIED,
    EXPECTED,
    OPS,
    PRINCIPALS,
    TABLES,
    TENANT_A_PRINCIPALS,
    UPDATE_VALUES,
    World,
    WorldAdmin,
    insert_row,
    principal_claims,
    user_id,
)

WORLD = World(a="rls-http-a", b="rls-http-b")
OTHER_SECRET = "an-attacker-chosen-secret-that-is-long-enough-0123456789"


@pytest.fixture(scope="module")
def db(world_admin: WorldAdmin) -> Iterator[WorldAdmin]:
    world_admin.create(WORLD)
    try:
        yield world_admin
    finally:
        world_admin.drop(WORLD)


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as client:
        yield client


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def token(secret: str, claims: dict[str, Any], ttl: int = 300) -> str:
    now = int(time.time())
    return HS256Signer(secret).sign({"iat": now, "exp": now + ttl, **claims})


def headers_for(stack: SupabaseStack, principal: str) -> dict[str, str]:
    if principal == "anon":
        return {"apikey": stack.anon_key}
    if principal == "service_role":
        return {"apikey": stack.service_role_key}
    _, claims = principal_claims(principal, WORLD)
    return {"apikey": stack.anon_key, "authorization": f"Bearer {token(stack.jwt_secret, claims or {})}"}


def http_op(
    http: httpx.Client, stack: SupabaseStack, headers: dict[str, str], table: str, op: str, tenant: str
) -> int | str | tuple[int, str]:
    url = f"{stack.rest_url}/{table}"
    params = {"select": "tenant_id"}
    h = {**headers, "prefer": "return=representation"}
    if op == "select":
        resp = http.get(url, params={**params, "tenant_id": f"eq.{tenant}"}, headers=h)
    elif op == "insert":
        resp = http.post(url, params=params, json=insert_row(table, tenant), headers=h)
    elif op == "update":
        col, value = UPDATE_VALUES[table]
        resp = http.patch(url, params={**params, "tenant_id": f"eq.{tenant}"}, json={col: value}, headers=h)
    else:
        resp = http.delete(url, params={**params, "tenant_id": f"eq.{tenant}"}, headers=h)
    if resp.status_code in (401, 403) and resp.json().get("code") == "42501":
        return DENIED
    if resp.status_code not in (200, 201):
        return resp.status_code, resp.text
    rows = resp.json()
    if not (op == "insert" and table == "tenants"):
        assert {r["tenant_id"] for r in rows} <= {tenant}, f"{op} {table}: foreign rows {rows}"
    return len(rows)


@pytest.mark.parametrize("target", ["a", "b"])
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("principal", PRINCIPALS)
def test_isolation_matrix_over_http(
    supabase_stack: SupabaseStack, http: httpx.Client, db: WorldAdmin, principal: str, table: str, op: str, target: str
) -> None:
    try:
        outcome = http_op(http, supabase_stack, headers_for(supabase_stack, principal), table, op, WORLD.tenant(target))
    finally:
        if op != "select":
            db.reset(WORLD)
    assert outcome == EXPECTED[(principal, table, op, target)], f"{principal} {op} {table} on {target}: {outcome!r}"
    if principal in TENANT_A_PRINCIPALS and target == "b":
        assert outcome in (DENIED, 0)


def test_insert_into_other_tenant_is_refused_with_rls_error(
    supabase_stack: SupabaseStack, http: httpx.Client, db: WorldAdmin
) -> None:
    resp = http.post(
        f"{supabase_stack.rest_url}/profiles",
        json=insert_row("profiles", WORLD.b),
        headers=headers_for(supabase_stack, "admin_a"),
    )
    assert resp.status_code == 403
    assert resp.json()["code"] == "42501"
    assert "row-level security" in resp.json()["message"]


def test_client_cannot_raise_own_role_over_http(
    supabase_stack: SupabaseStack, http: httpx.Client, db: WorldAdmin
) -> None:
    me = user_id(WORLD.a, "client")
    for body in (
        {"tenant_role": "admin"},
        {"tenant_role": "super_admin"},
        {"tenant_permissions": {"all": True}},
        {"tenant_id": WORLD.b},
    ):
        resp = http.patch(
            f"{supabase_stack.rest_url}/profiles",
            params={"id": f"eq.{me}"},
            json=body,
            headers=headers_for(supabase_stack, "client_a"),
        )
        assert resp.status_code in (401, 403) and resp.json()["code"] == "42501", (body, resp.text)
    assert db.profile(me) == ("client", WORLD.a)


# ---- JWT attacks ----------------------------------------------------------------------------


def _admin_a_claims() -> dict[str, Any]:
    return principal_claims("admin_a", WORLD)[1] or {}


def _get_tenants(
    http: httpx.Client, stack: SupabaseStack, bearer: str | None, apikey: str | None = "anon"
) -> httpx.Response:
    headers: dict[str, str] = {}
    if apikey == "anon":
        headers["apikey"] = stack.anon_key
    elif apikey is not None:
        headers["apikey"] = apikey
    if bearer is not None:
        headers["authorization"] = f"Bearer {bearer}"
    return http.get(f"{stack.rest_url}/tenants", params={"select": "tenant_id"}, headers=headers)


def test_a_genuine_token_works(supabase_stack: SupabaseStack, http: httpx.Client, db: WorldAdmin) -> None:
    # The control case for the attacks below: same request, honest token.
    resp = _get_tenants(http, supabase_stack, token(supabase_stack.jwt_secret, _admin_a_claims()))
    assert resp.status_code == 200 and resp.json() == [{"tenant_id": WORLD.a}]


def _refused(resp: httpx.Response) -> None:
    assert resp.status_code == 401, resp.text
    assert "rls-http" not in resp.text and "cozyartz" not in resp.text


def test_token_signed_with_wrong_key(supabase_stack: SupabaseStack, http: httpx.Client) -> None:
    _refused(_get_tenants(http, supabase_stack, token(OTHER_SECRET, _admin_a_claims())))


def test_other_tenants_id_signed_with_a_different_secret(
    supabase_stack: SupabaseStack, http: httpx.Client, db: WorldAdmin
) -> None:
    claims = {**_admin_a_claims(), "tenant_id": WORLD.b, "sub": user_id(WORLD.b, "admin")}
    _refused(_get_tenants(http, supabase_stack, token(OTHER_SECRET, claims)))


@pytest.mark.parametrize("signature", ["", "AAAA", "sig"])
def test_alg_none(supabase_stack: SupabaseStack, http: httpx.Client, signature: str) -> None:
    now = int(time.time())
    forged = (
        f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({**_admin_a_claims(), 'iat': now, 'exp': now + 300})}.{signature}"
    )
    _refused(_get_tenants(http, supabase_stack, forged))


def test_expired_token(supabase_stack: SupabaseStack, http: httpx.Client) -> None:
    _refused(_get_tenants(http, supabase_stack, token(supabase_stack.jwt_secret, _admin_a_claims(), ttl=-120)))


def test_payload_swapped_under_a_valid_signature(supabase_stack: SupabaseStack, http: httpx.Client) -> None:
    header, _, sig = token(supabase_stack.jwt_secret, _admin_a_claims()).split(".")
    now = int(time.time())
    evil = b64({**_admin_a_claims(), "tenant_id": WORLD.b, "iat": now, "exp": now + 300})
    _refused(_get_tenants(http, supabase_stack, f"{header}.{evil}.{sig}"))


def test_service_role_claim_with_wrong_key(supabase_stack: SupabaseStack, http: httpx.Client) -> None:
    _refused(_get_tenants(http, supabase_stack, token(OTHER_SECRET, {"role": "service_role"})))


def test_missing_tenant_id_sees_nothing(supabase_stack: SupabaseStack, http: httpx.Client, db: WorldAdmin) -> None:
    claims = {k: v for k, v in _admin_a_claims().items() if k != "tenant_id"}
    bearer = token(supabase_stack.jwt_secret, claims)
    headers = {"apikey": supabase_stack.anon_key, "authorization": f"Bearer {bearer}"}
    for table in TABLES:
        resp = http.get(f"{supabase_stack.rest_url}/{table}", params={"select": "tenant_id"}, headers=headers)
        assert resp.status_code == 200 and resp.json() == [], (table, resp.text)
    resp = http.post(f"{supabase_stack.rest_url}/profiles", json=insert_row("profiles", WORLD.a), headers=headers)
    assert resp.status_code == 403 and resp.json()["code"] == "42501"


def test_token_naming_a_privileged_database_role(supabase_stack: SupabaseStack, http: httpx.Client) -> None:
    # Even correctly signed, a JWT cannot make PostgREST become a role authenticator is not granted.
    resp = _get_tenants(http, supabase_stack, token(supabase_stack.jwt_secret, {"role": "postgres"}))
    assert resp.status_code in (401, 403) and "rls-http" not in resp.text


def test_missing_apikey_is_refused_even_with_a_valid_token(supabase_stack: SupabaseStack, http: httpx.Client) -> None:
    resp = _get_tenants(http, supabase_stack, token(supabase_stack.jwt_secret, _admin_a_claims()), apikey=None)
    assert resp.status_code == 401 and resp.json()["message"] == "No API key found in request"


@pytest.mark.parametrize("apikey", ["not-a-key", "__service_role_key_wrong_secret__"])
def test_invalid_apikey_is_refused(supabase_stack: SupabaseStack, http: httpx.Client, apikey: str) -> None:
    if apikey.startswith("__"):
        apikey = token(OTHER_SECRET, {"role": "service_role"})  # looks like a key, wrong project
    resp = _get_tenants(http, supabase_stack, None, apikey=apikey)
    assert resp.status_code == 401 and resp.json()["message"] == "Invalid API key"


def test_anon_key_as_bearer_cannot_write(supabase_stack: SupabaseStack, http: httpx.Client, db: WorldAdmin) -> None:
    resp = http.post(
        f"{supabase_stack.rest_url}/audit_log",
        json=insert_row("audit_log", WORLD.a),
        headers={"apikey": supabase_stack.anon_key, "authorization": f"Bearer {supabase_stack.anon_key}"},
    )
    assert resp.status_code == 401 and resp.json()["code"] == "42501"


def test_gateway_serves_only_the_rest_prefix(supabase_stack: SupabaseStack, http: httpx.Client) -> None:
    resp = http.get(f"{supabase_stack.url}/tenants", headers={"apikey": supabase_stack.service_role_key})
    assert resp.status_code == 404


def test_apikey_query_parameter_is_accepted_and_not_forwarded_as_a_filter(
    supabase_stack: SupabaseStack, http: httpx.Client, db: WorldAdmin
) -> None:
    resp = http.get(
        f"{supabase_stack.rest_url}/tenants",
        params={"select": "tenant_id", "tenant_id": f"eq.{WORLD.a}", "apikey": supabase_stack.service_role_key},
    )
    assert resp.status_code == 200 and resp.json() == [{"tenant_id": WORLD.a}]

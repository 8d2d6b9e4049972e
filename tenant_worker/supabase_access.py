"""The per-request Supabase client: a tenant-scoped JWT from the verified session + context.

    db = tenant_db(call, principal)   # RLS decides: the normal path for every data call
    svc = service_db(call)            # bypasses RLS: audit writes and sign-in profile upsert only
    rows = await guarded(db.select("profiles", ...))

Secrets: SUPABASE_URL, SUPABASE_ANON_KEY, SUPABASE_JWT_SECRET (and SUPABASE_SERVICE_ROLE_KEY
for the service role). The tenant id and primary flag come from the dispatcher's signed
context, the user id and role from the verified session; nothing from the request body.
"""
from __future__ import annotations

import logging
from typing import Any, Awaitable, TypeVar

from shared.http import HttpError
from shared.jwt import HS256Signer, mint_tenant_jwt
from shared.models import TenantType
from shared.supabase import SupabaseClient, SupabaseError
from tenant_worker.http import ApiError, Call
from tenant_worker.principal import Principal

log = logging.getLogger("cmgsite.tenant.supabase")
T = TypeVar("T")
TENANT_JWT_TTL_SECONDS = 180  # minutes, not days: a leaked token dies within three
_TOKENS_MAX = 4096
_tokens: dict[tuple[str, str, str, str, bool], tuple[str, int]] = {}

_signers: dict[str, HS256Signer] = {}


def _secret(env: Any, name: str) -> str:
    value = str(getattr(env, name, "") or "")
    if not value:
        raise ApiError(503, "data_unavailable", "The data service is not configured for this site.")
    return value


def _signer(secret: str) -> HS256Signer:
    signer = _signers.get(secret)
    if signer is None:
        _signers.clear()  # one project secret per isolate; a rotation replaces it
        signer = _signers[secret] = HS256Signer(secret)
    return signer


def tenant_jwt(call: Call, principal: Principal) -> str:
    """This user's tenant-scoped JWT, minted by shared.jwt.mint_tenant_jwt and reused by the
    isolate while it has more than half its life left (it never outlives TENANT_JWT_TTL_SECONDS)."""
    if principal.tenant_id != call.tenant.tenant_id:
        raise ApiError(401, "unauthenticated", "Sign in first.")
    secret = _secret(call.env, "SUPABASE_JWT_SECRET")
    is_primary = call.tenant.tenant_type is TenantType.PRIMARY
    now = call.services.clock()
    key = (secret, principal.user_id, call.tenant.tenant_id, principal.role.value, is_primary)
    cached = _tokens.get(key)
    if cached is not None and cached[1] - now > TENANT_JWT_TTL_SECONDS / 2:
        return cached[0]
    token = mint_tenant_jwt(_signer(secret), user_id=principal.user_id, tenant_id=call.tenant.tenant_id,
                            tenant_role=principal.role.value, is_primary=is_primary, now=now,
                            ttl_seconds=TENANT_JWT_TTL_SECONDS)
    if len(_tokens) >= _TOKENS_MAX:
        _tokens.clear()
    _tokens[key] = (token, int(now) + TENANT_JWT_TTL_SECONDS)
    return token


def tenant_db(call: Call, principal: Principal) -> SupabaseClient:
    """A client whose calls carry this user's tenant-scoped JWT."""
    token = tenant_jwt(call, principal)
    return SupabaseClient(call.services.http, url=_secret(call.env, "SUPABASE_URL"),
                          api_key=_secret(call.env, "SUPABASE_ANON_KEY"), access_token=token)


def service_db(call: Call) -> SupabaseClient:
    """Service role: only for what RLS forbids users by design (audit log, sign-in upsert)."""
    env = call.env
    return SupabaseClient.as_service_role(call.services.http, url=_secret(env, "SUPABASE_URL"),
                                          service_role_key=_secret(env, "SUPABASE_SERVICE_ROLE_KEY"))


async def guarded(op: Awaitable[T]) -> T:
    """Await a data call; Postgres refusals become 403, outages 503, other errors 502."""
    try:
        return await op
    except SupabaseError as exc:
        if exc.code == "42501" or exc.status == 403:
            raise ApiError(403, "forbidden", "Not allowed.") from None
        if exc.code in ("23514", "23505", "22P02", "23503") or exc.status == 400:
            raise ApiError(400, "rejected", "The data service rejected the change.") from None
        log.warning("supabase error status=%s code=%s", exc.status, exc.code)
        raise ApiError(502, "upstream_error", "The data service returned an error.") from None
    except HttpError:
        log.warning("supabase unreachable")
        raise ApiError(503, "data_unavailable", "The data service is unavailable. Please try again.") from None


async def write_audit(call: Call, *, actor: str, action: str, target: str | None, details: dict[str, Any]) -> None:
    """One audit_log row for this tenant (service role: users cannot write the audit log).

    The tenant id comes from the verified context, never from the caller.
    """
    await service_db(call).insert("audit_log", {
        "tenant_id": call.tenant.tenant_id, "actor": actor, "action": action, "target": target,
        "details": {**details, "request_id": call.request_id}}, columns="id")

"""The per-request Supabase client: a tenant-scoped JWT from the verified session + context.

    db = tenant_db(call, principal)   # RLS decides: the normal path for every data call
    svc = service_db(call)            # bypasses RLS: audit writes and sign-in profile upsert only
    rows = await guarded(db.select("profiles", ...))

Secrets: SUPABASE_URL, SUPABASE_ANON_KEY, SUPABASE_JWT_SECRET (and SUPABASE_SERVICE_ROLE_KEY
for the service role), read once into tenant_worker.config.TenantConfig (the Worker does not
start without them). The tenant id and primary flag come from the dispatcher's signed
context, the user id and role from the verified session; nothing from the request body.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Awaitable, TypeVar

from shared.jwt import HS256Signer, keyring_signer, mint_tenant_jwt
from shared.keys import Keyring, KeyringError
from shared.models import TenantType
from shared.outbound_http import HttpError
from shared.supabase import SupabaseClient, SupabaseError
from tenant_worker.inbound_http import ApiError, Call
from tenant_worker.principal import Principal

log = logging.getLogger("cmgsite.tenant.supabase")
T = TypeVar("T")
TENANT_JWT_TTL_SECONDS = 180  # minutes, not days: a leaked token dies within three
_TOKENS_MAX = 4096
_tokens: dict[tuple[str, str, str, str, bool], tuple[str, int]] = {}

_signers: dict[str, HS256Signer] = {}


def _signer(secret: str) -> HS256Signer:
    """SUPABASE_JWT_SECRET is a keyring (shared.keys): tokens are signed with its active key and
    carry its key id, which PostgREST's JWKS resolves (a bare secret: the legacy key, no kid)."""
    signer = _signers.get(secret)
    if signer is None:
        try:
            ring = Keyring.parse(secret)
        except KeyringError:
            log.error("SUPABASE_JWT_SECRET is not a valid keyring")
            raise ApiError(503, "data_unavailable", "The data service is not configured for this site.") from None
        _signers.clear()  # one project keyring per isolate; a rotation replaces it
        signer = _signers[secret] = keyring_signer(ring)
    return signer


def tenant_jwt(call: Call, principal: Principal) -> str:
    """This user's tenant-scoped JWT, minted by shared.jwt.mint_tenant_jwt and reused by the
    isolate while it has more than half its life left (it never outlives TENANT_JWT_TTL_SECONDS)."""
    if principal.tenant_id != call.tenant.tenant_id:
        raise ApiError(401, "unauthenticated", "Sign in first.")
    secret = call.services.config.supabase_jwt_secret
    is_primary = call.tenant.tenant_type is TenantType.PRIMARY
    now = call.services.clock()
    key = (secret, principal.user_id, call.tenant.tenant_id, principal.role.value, is_primary)
    cached = _tokens.get(key)
    if cached is not None and cached[1] - now > TENANT_JWT_TTL_SECONDS / 2:
        return cached[0]
    token = mint_tenant_jwt(
        _signer(secret),
        user_id=principal.user_id,
        tenant_id=call.tenant.tenant_id,
        tenant_role=principal.role.value,
        is_primary=is_primary,
        now=now,
        ttl_seconds=TENANT_JWT_TTL_SECONDS,
    )
    if len(_tokens) >= _TOKENS_MAX:
        _tokens.clear()
    _tokens[key] = (token, int(now) + TENANT_JWT_TTL_SECONDS)
    return token


def tenant_db(call: Call, principal: Principal) -> SupabaseClient:
    """A client whose calls carry this user's tenant-scoped JWT."""
    token = tenant_jwt(call, principal)
    cfg = call.services.config
    return SupabaseClient(call.services.http, url=cfg.supabase_url, api_key=cfg.supabase_anon_key, access_token=token)


def service_db(call: Call) -> SupabaseClient:
    """Service role: only for what RLS forbids users by design (audit log, sign-in upsert)."""
    cfg = call.services.config
    return SupabaseClient.as_service_role(
        call.services.http, url=cfg.supabase_url, service_role_key=cfg.supabase_service_role_key
    )


RETRY_AFTER_SECONDS = 5
# PostgREST could not reach or use its database: PGRST000 connection, PGRST001 internal
# connection error, PGRST002 schema cache not loaded (answered with 503).
_OUTAGE_CODES = frozenset({"PGRST000", "PGRST001", "PGRST002"})
# An empty code: PostgREST 12 lost its database connection mid-query and answers
# `400 {"code": "", "message": ""}` (libpq had no SQLSTATE) before it notices with PGRST001.
# A gateway in front of PostgREST (Supabase's, Cloudflare's) with no good answer from behind it.
_OUTAGE_STATUSES = frozenset({502, 503, 504})
_REJECTED_CODES = frozenset({"23514", "22P02", "23503", "23502", "22001"})
AUDIT_OUTCOMES = frozenset({"success", "failure", "denied"})


def data_unavailable() -> ApiError:
    return ApiError(
        503,
        "data_unavailable",
        "The data service is unavailable. Please try again shortly.",
        headers={"retry-after": str(RETRY_AFTER_SECONDS)},
    )


def supabase_failure(
    exc: Exception, *, conflict_code: str = "conflict", conflict_message: str = "That already exists."
) -> ApiError:
    """The one mapping from a failed Supabase call to the API's answer.

    down (no answer, timeout; PostgREST 503/504, PGRST000-002 or an empty code; a gateway's 502/503/504)
                                                     -> 503 data_unavailable + Retry-After
    refused by RLS or grants (42501, 403)            -> 403 forbidden
    unique violation (23505; any other 409)          -> 409 `conflict_code`
    the change breaks a constraint (23514, 22P02, 23503, 23502, 22001, 400) -> 400 rejected
    any other answer (401 bad key, 404, 500, unreadable body)             -> 502 upstream_error
    An ApiError (e.g. Supabase not configured) passes through unchanged.
    """
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, HttpError):
        log.warning("supabase unreachable: %s", type(exc).__name__)
        return data_unavailable()
    if not isinstance(exc, SupabaseError):
        log.error("unexpected supabase failure: %s", type(exc).__name__)
        return ApiError(500, "internal_error", "Something went wrong on our side.")
    if exc.status in _OUTAGE_STATUSES or exc.code in _OUTAGE_CODES or exc.code == "":
        log.warning("supabase unavailable status=%s code=%s", exc.status, exc.code)
        return data_unavailable()
    if exc.code == "42501" or exc.status == 403:
        return ApiError(403, "forbidden", "Not allowed.")
    if exc.code == "23505":
        return ApiError(409, conflict_code, conflict_message)
    if exc.code in _REJECTED_CODES or exc.status == 400:
        return ApiError(400, "rejected", "The data service rejected the change.")
    if exc.status == 409:
        return ApiError(409, conflict_code, conflict_message)
    log.warning("supabase error status=%s code=%s", exc.status, exc.code)
    return ApiError(502, "upstream_error", "The data service returned an error.")


async def guarded(op: Awaitable[T]) -> T:
    """Await a data call; a failure becomes the ApiError supabase_failure() says."""
    try:
        return await op
    except (SupabaseError, HttpError) as exc:
        raise supabase_failure(exc) from None


async def write_audit(
    call: Call,
    *,
    actor: str,
    action: str,
    target: str | None,
    details: dict[str, Any] | None = None,
    outcome: str = "success",
    request_id: str | None = None,
) -> None:
    """One audit_log row for this tenant (service role: users cannot write the audit log).

    The tenant id comes from the verified context, never from the caller; the request id is
    this request's unless given. `outcome` is "success", "failure" or "denied". The database
    stamps the time and links the row into the tenant's hash chain
    (supabase/migrations/20261126233134_audit_chain.sql); nobody can change or delete it afterwards.
    """
    if outcome not in AUDIT_OUTCOMES:
        raise ValueError(f"outcome must be one of {sorted(AUDIT_OUTCOMES)}")
    await service_db(call).insert(
        "audit_log",
        {
            "tenant_id": call.tenant.tenant_id,
            "actor": actor,
            "action": action,
            "target": target,
            "details": dict(details or {}),
            "outcome": outcome,
            "request_id": request_id or call.request_id,
        },
        columns="id",
    )


async def record_audit(
    call: Call,
    *,
    actor: str,
    action: str,
    target: str | None,
    details: dict[str, Any] | None = None,
    outcome: str = "success",
) -> None:
    """write_audit for an action that has already happened: the action stands if the row cannot
    be written (the data service down or refusing), and the gap is logged, naming no values."""
    try:
        await write_audit(call, actor=actor, action=action, target=target, details=details, outcome=outcome)
    except (ApiError, SupabaseError, HttpError) as exc:
        log.error(
            json.dumps(
                {
                    "event": "audit_write_failed",
                    "action": action,
                    "request_id": call.request_id,
                    "reason": type(exc).__name__,
                }
            )
        )

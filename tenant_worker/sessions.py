"""The session cookie: issued at sign-in, read by the session middleware, one way each.

    cookie → verify (signature, tenant, expiry: shared.session) → current? (sign-out or role
    change since it was issued: tenant_worker.auth_store) → Principal in call.state

- Issue (`session_cookie`): sign-in knows who signed in; it signs their claims and sets the
  cookie. The claims are the ones it just made, never read back from the fresh token.
- Read (`session_middleware`): a cookie that does not verify, or a super_admin session outside
  the primary tenant, is no session (logged, never an error: the page or API answers as for a
  visitor). A session older than the user's sign-out is refused and its cookie cleared; one
  older than a role change is re-issued with the role read again from the profile (the user's
  own row, under RLS), failing closed when that read cannot be made.
"""

from __future__ import annotations

import json
import logging

from shared.models import TenantType
from shared.outbound_http import HttpError
from shared.session import SESSION_TTL_SECONDS, SessionClaims, SessionError, new_session, verify_session
from shared.supabase import SupabaseError
from tenant_worker.auth_store import AuthStore, AuthStoreMissing
from tenant_worker.inbound_http import ApiError, Call
from tenant_worker.principal import PRINCIPAL, Principal, Role
from tenant_worker.supabase_access import tenant_db

log = logging.getLogger("cmgsite.tenant.session")

SESSION_COOKIE = "__Host-cmg_session"  # __Host-: browsers enforce Secure, Path=/ and no Domain
SESSION = "session"  # call.state key of the verified SessionClaims


def cookie(name: str, value: str, max_age: int) -> str:
    return f"{name}={value}; Max-Age={max_age}; Path=/; Secure; HttpOnly; SameSite=Lax"


def read_cookie(call: Call, name: str) -> str | None:
    for part in call.headers.get("cookie", "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip() or None  # the first one wins; __Host- stops sibling overrides
    return None


def session_secret(call: Call) -> str:
    """SESSION_SECRET (a keyring, shared.keys): required, checked when the config is built."""
    return call.services.config.session_secret


def clear_session_cookie() -> str:
    return cookie(SESSION_COOKIE, "", 0)


def _issue(
    call: Call, secret: str, *, user_id: str, role: str, email: str | None, name: str | None
) -> tuple[str, SessionClaims]:
    token, claims = new_session(
        secret,
        tenant_id=call.tenant.tenant_id,
        user_id=user_id,
        role=role,  # type: ignore[arg-type]
        now=call.services.clock(),
        email=email,
        name=name,
    )
    return cookie(SESSION_COOKIE, token, SESSION_TTL_SECONDS), claims


def session_cookie(call: Call, secret: str, *, user_id: str, role: str, email: str | None, name: str | None) -> str:
    """The Set-Cookie value of a new session for this tenant's user (sign-in)."""
    return _issue(call, secret, user_id=user_id, role=role, email=email, name=name)[0]


# ---- the middleware --------------------------------------------------------------------------


async def session_middleware(call: Call) -> None:
    """Put the caller's Principal (and the session's claims) in call.state, or nothing."""
    token = read_cookie(call, SESSION_COOKIE)
    secret = session_secret(call)
    if token is None:
        return
    claims = _verified(call, token, secret)
    if claims is None:
        return
    current = await _current(call, claims, secret)
    if current is None:
        return
    call.state[PRINCIPAL] = Principal(current.sub, current.tid, Role(current.role), current.email, current.name)
    call.state[SESSION] = current


def _refused(call: Call, reason: str) -> None:
    log.info(json.dumps({"event": "session_refused", "reason": reason[:80], "request_id": call.request_id}))


def _verified(call: Call, token: str, secret: str) -> SessionClaims | None:
    try:
        claims = verify_session(token, secret, tenant_id=call.tenant.tenant_id, now=call.services.clock())
    except SessionError as exc:
        _refused(call, str(exc))
        return None
    if claims.role == "super_admin" and call.tenant.tenant_type is not TenantType.PRIMARY:
        _refused(call, "super_admin outside the primary tenant")
        return None
    return claims


async def _current(call: Call, claims: SessionClaims, secret: str) -> SessionClaims | None:
    """The session as it stands after the user's last sign-out or role change (if any)."""
    try:
        store = AuthStore.of(call.env, call.tenant.tenant_id)
    except AuthStoreMissing:
        return claims  # no KV bound: sign-in refuses to start, so no session exists to check
    epoch = await store.epoch(claims.sub)
    if epoch is None or claims.iat > epoch.at:
        return claims
    if epoch.kind == "signout":  # same-second sessions go too: fail closed
        _refused(call, "signed out")
        call.cookies.append(clear_session_cookie())
        return None
    try:  # the role changed since this session began: read it again (own row, under RLS)
        rows = await tenant_db(call, Principal(claims.sub, claims.tid, Role.CLIENT)).select(
            "profiles",
            columns="id,tenant_role,email,display_name",
            eq={"id": claims.sub, "tenant_id": call.tenant.tenant_id},
            limit=1,
        )
    except (SupabaseError, HttpError, ApiError):
        _refused(call, "role check unavailable")
        return None  # fail closed: the old role may be a revoked one
    role = rows[0]["tenant_role"] if rows else None
    if role not in ("client", "admin", "super_admin") or (
        role == "super_admin" and call.tenant.tenant_type is not TenantType.PRIMARY
    ):
        _refused(call, "profile gone" if not rows else "role not accepted here")
        call.cookies.append(clear_session_cookie())
        return None
    set_cookie, renewed = _issue(
        call, secret, user_id=claims.sub, role=role, email=rows[0].get("email"), name=rows[0].get("display_name")
    )
    call.cookies.append(set_cookie)
    return renewed

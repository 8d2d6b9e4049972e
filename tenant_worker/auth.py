"""Sign-in for one tenant: the OAuth routes, sign-out and /api/me (the session cookie and its
middleware: tenant_worker.sessions; the pages' branding: tenant_worker.branding).

    GET  /auth/login/github|google?next=/path   -> 302 to the provider (state + PKCE + nonce cookie)
    GET  /auth/callback?code&state              -> profile upsert, audit, session cookie, 302 to next
    POST /auth/logout                           -> clears the cookie, signs the user out everywhere
    GET  /api/me                                -> who the session says you are, in this tenant

Failures on /auth/* are branded HTML pages on the tenant's own host; each one writes an
`auth.signin.failure` audit row and a structured log line (the per-tenant sign-in counters:
`auth.signin.success` / `auth.signin.failure` rows per tenant in Supabase `audit_log`, and
`{"event": "signin", ...}` lines in Workers Logs).
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from shared.error_pages import error_reply
from shared.models import TenantType
from shared.oauth import (
    Identity,
    JwksCache,
    OAuthError,
    ProviderConfig,
    StateClaims,
    authorize_url,
    encode_state,
    exchange_code,
    github_identity,
    google_identity,
    issue_state,
    new_nonce,
    oidc_nonce,
    pkce_challenge,
    pkce_verifier,
    provider_config,
    safe_next,
    verify_state,
)
from shared.outbound_http import HttpError
from shared.rs256 import RsaVerifier
from shared.session import SessionClaims
from shared.supabase import SupabaseError
from tenant_worker.auth_store import AuthStore, AuthStoreMissing
from tenant_worker.branding import tenant_branding
from tenant_worker.inbound_http import ApiError, Call, Reply, Route, json_reply, redirect_reply
from tenant_worker.principal import PRINCIPAL, Principal, require
from tenant_worker.sessions import (
    SESSION,
    clear_session_cookie,
    cookie,
    read_cookie,
    session_cookie,
    session_secret,
)
from tenant_worker.supabase_access import record_audit, service_db

log = logging.getLogger("cmgsite.tenant.auth")

NONCE_COOKIE = "__Host-cmg_oauth"
PROFILE_NAMESPACE = uuid.UUID("6f1c2b9e-7c1a-4e0b-9a51-2f0c3d4e5a61")  # profile ids for new users

_FAILURE_STATUS = {
    "state_missing": 400,
    "state_invalid": 400,
    "state_expired": 400,
    "state_browser_mismatch": 400,
    "state_replayed": 400,
    "code_missing": 400,
    "unknown_provider": 404,
    "provider_denied": 403,
    "email_missing": 403,
    "code_exchange_failed": 502,
    "profile_fetch_failed": 502,
    "id_token_invalid": 502,
    "provider_unavailable": 504,
    "provider_not_configured": 503,
    "signin_unavailable": 503,
    "profile_store_failed": 503,
    "account_refused": 403,
}
_jwks = JwksCache()
_rsa: list[RsaVerifier] = []


def _rsa_verifier() -> RsaVerifier:
    """RS256 checks by the runtime's WebCrypto (the JS boundary, imported inside the Worker only)."""
    if not _rsa:
        from tenant_worker.webcrypto import WebCryptoRsaVerifier

        _rsa.append(WebCryptoRsaVerifier())
    return _rsa[0]


def _session_secret(call: Call) -> str:
    return session_secret(call)  # required, 32 characters or more (tenant_worker.config)


# ---- audit and counters ----------------------------------------------------------------------


async def record_signin(
    call: Call,
    outcome: str,
    *,
    provider: str | None,
    reason: str | None = None,
    user_id: str | None = None,
    new_user: bool = False,
) -> None:
    """One audit row + one log line per sign-in attempt: the per-tenant success/failure counters."""
    details: dict[str, Any] = {"provider": provider}
    if reason:
        details["reason"] = reason
    if outcome == "success":
        details["new_user"] = new_user
    log.info(
        json.dumps(
            {
                "event": "signin",
                "outcome": outcome,
                "tenant_id": call.tenant.tenant_id,
                "request_id": call.request_id,
                **details,
            }
        )
    )
    call.state["signin"] = {"provider": provider, "outcome": outcome, "reason": reason}  # its metrics point
    await record_audit(
        call,
        actor=user_id or "anonymous",
        action=f"auth.signin.{outcome}",
        target=user_id,
        details=details,
        outcome=outcome,
    )


async def _failure_page(call: Call, err: OAuthError, provider: str | None, *, audit: bool = True) -> Reply:
    if audit:
        await record_signin(call, "failure", provider=provider, reason=err.reason)
    else:  # a refused start is not a sign-in attempt: log it, keep the audit trail for callbacks
        log.info(json.dumps({"event": "signin_start_refused", "reason": err.reason, "request_id": call.request_id}))
    status = _FAILURE_STATUS.get(err.reason, 400)
    page = error_reply(
        "/auth/", status, err.reason, err.message, call.request_id, branding=await tenant_branding(call), way_back=True
    )
    return Reply(page.status, page.body, dict(page.headers), [cookie(NONCE_COOKIE, "", 0)])


# ---- routes ----------------------------------------------------------------------------------


def _redirect_uri(call: Call) -> str:
    return f"https://{call.tenant.host}/auth/callback"


def _config(call: Call, provider: str) -> ProviderConfig:
    return provider_config(provider, call.services.config.oauth_setting)


async def login(call: Call) -> Reply:
    provider = call.params["provider"]
    try:
        cfg = _config(call, provider)
        secret = _session_secret(call)
        AuthStore.of(call.env, call.tenant.tenant_id)
    except AuthStoreMissing:
        return await _failure_page(
            call, OAuthError("signin_unavailable", "Sign-in is not set up for this site yet."), provider, audit=False
        )
    except OAuthError as err:
        return await _failure_page(call, err, provider if provider in ("github", "google") else None, audit=False)
    nonce = new_nonce()
    state = issue_state(
        tenant_id=call.tenant.tenant_id,
        host=call.tenant.host,
        provider=cfg.name,
        nonce=nonce,
        next_path=safe_next(call.arg("next")),
        now=call.services.clock(),
    )
    verifier = pkce_verifier(secret, call.tenant.tenant_id, nonce, state.jti)
    url = authorize_url(
        cfg,
        _redirect_uri(call),
        encode_state(secret, state),
        challenge=pkce_challenge(verifier),
        oidc_nonce_value=oidc_nonce(nonce),
    )
    reply = redirect_reply(url)
    reply.cookies.append(cookie(NONCE_COOKIE, nonce, 600))
    return reply


async def callback(call: Call) -> Reply:
    provider: str | None = None
    try:
        secret = _session_secret(call)
        store = AuthStore.of(call.env, call.tenant.tenant_id)
        nonce = read_cookie(call, NONCE_COOKIE)
        state = verify_state(
            call.arg("state"),
            secret,
            tenant_id=call.tenant.tenant_id,
            host=call.tenant.host,
            nonce=nonce,
            now=call.services.clock(),
        )
        provider = state.prv
        if not await store.consume_state(state.jti, state.exp, call.services.clock()):
            raise OAuthError("state_replayed", "This sign-in link was already used. Please start again.")
        if call.arg("error"):
            raise OAuthError("provider_denied", "Sign-in was cancelled at the provider.")
        code = call.arg("code")
        if not code or len(code) > 2048:
            raise OAuthError("code_missing", "The provider did not send a sign-in code. Please start again.")
        identity = await _identity(call, state, secret, nonce or "", code)
        user_id, role, new_user = await _upsert_profile(call, identity)
    except AuthStoreMissing:
        return await _failure_page(
            call, OAuthError("signin_unavailable", "Sign-in is not set up for this site yet."), provider
        )
    except OAuthError as err:
        return await _failure_page(call, err, provider)
    await record_signin(call, "success", provider=provider, user_id=user_id, new_user=new_user)
    reply = redirect_reply(state.nxt)
    reply.cookies.append(cookie(NONCE_COOKIE, "", 0))
    reply.cookies.append(
        session_cookie(call, secret, user_id=user_id, role=role, email=identity.email, name=identity.name)
    )
    return reply


async def _identity(call: Call, state: StateClaims, secret: str, nonce: str, code: str) -> Identity:
    cfg = _config(call, state.prv)
    verifier = pkce_verifier(secret, call.tenant.tenant_id, nonce, state.jti, kid=state.kid)  # the state's key
    tokens = await exchange_code(call.services.http, cfg, code, _redirect_uri(call), verifier)
    if cfg.name == "github":
        return await github_identity(call.services.http, cfg, tokens)
    return await google_identity(
        call.services.http,
        cfg,
        tokens,
        expected_nonce=oidc_nonce(nonce),
        now=call.services.clock(),
        jwks=_jwks,
        verifier=_rsa_verifier(),
    )


async def _upsert_profile(call: Call, who: Identity) -> tuple[str, str, bool]:
    """This tenant's profile for a verified email (new users are clients). Service role:
    nobody is signed in yet, and RLS lets only admins insert profiles."""
    tid = call.tenant.tenant_id
    svc = service_db(call)
    cols = "id,tenant_role,email"
    try:
        rows = await svc.select(
            "profiles", columns=cols, eq={"tenant_id": tid, "email": who.email}, order="created_at.asc", limit=1
        )
        new_user = False
        if not rows:
            uid = str(uuid.uuid5(PROFILE_NAMESPACE, f"{tid}:{who.provider}:{who.subject}"))
            rows = await svc.select("profiles", columns=cols, eq={"tenant_id": tid, "id": uid}, limit=1)
            if rows:  # the provider account changed its email: follow it
                rows = await svc.update(
                    "profiles", {"email": who.email}, eq={"id": uid, "tenant_id": tid}, columns=cols
                )
            else:
                rows = await svc.upsert(
                    "profiles",
                    {
                        "id": uid,
                        "tenant_id": tid,
                        "tenant_role": "client",
                        "email": who.email,
                        "display_name": who.name,
                    },
                    on_conflict="id",
                    ignore_duplicates=True,
                    columns=cols,
                )
                new_user = bool(rows)
                if not rows:  # a concurrent sign-in created it first
                    rows = await svc.select("profiles", columns=cols, eq={"tenant_id": tid, "id": uid}, limit=1)
    except (SupabaseError, HttpError, ApiError) as exc:
        log.warning(json.dumps({"event": "profile_upsert_failed", "error": type(exc).__name__}))
        raise OAuthError("profile_store_failed", "We could not sign you in right now. Please try again.") from None
    if not rows:
        raise OAuthError("account_refused", "This account cannot sign in here.")
    role = rows[0]["tenant_role"]
    if role == "super_admin" and call.tenant.tenant_type is not TenantType.PRIMARY:
        raise OAuthError("account_refused", "This account cannot sign in here.")
    return str(rows[0]["id"]), role, new_user


async def logout(call: Call) -> Reply:
    # Cross-site sign-outs never get here: tenant_worker.request_rules refuses them first.
    principal = call.state.get(PRINCIPAL)
    if isinstance(principal, Principal):
        everywhere = True
        try:  # sign out everywhere: older session tokens of this user stop working
            await AuthStore.of(call.env, call.tenant.tenant_id).set_epoch(
                principal.user_id, "signout", call.services.clock()
            )
        except AuthStoreMissing:
            everywhere = False
        await record_audit(
            call,
            actor=principal.user_id,
            action="auth.signout",
            target=principal.user_id,
            details={"everywhere": everywhere},
        )
    reply = redirect_reply("/", 303)
    reply.cookies.append(clear_session_cookie())
    return reply


async def me(call: Call) -> Reply:
    p = require(call)
    session: SessionClaims = call.state[SESSION]
    return json_reply(
        {
            "user_id": p.user_id,
            "tenant_id": p.tenant_id,
            "role": p.role.value,
            "email": p.email,
            "display_name": p.display_name,
            "host": call.tenant.host,
            "tier": call.tenant.tier.value,
            "session_expires_at": session.exp,
        },
        headers={"cache-control": "no-store"},
    )


ROUTES = [
    Route("GET", "/auth/login/<provider>", login, "auth.login"),
    Route("GET", "/auth/callback", callback, "auth.callback"),
    Route("POST", "/auth/logout", logout, "auth.logout"),
    Route("GET", "/api/me", me, "me"),
]

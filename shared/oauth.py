"""OAuth 2.0 sign-in with GitHub and Google for one tenant: pure logic over shared.outbound_http.

    cfg = provider_config("github", env_value)            # client id/secret + endpoint URLs
    state = issue_state(secret, tenant_id=..., host=..., provider="github", nonce=cookie, next_path="/")
    url = authorize_url(cfg, redirect_uri, state, challenge=pkce_challenge(verifier), oidc_nonce=...)
    ... provider redirects to /auth/callback?code&state ...
    st = verify_state(state, secret, tenant_id=..., host=..., nonce=cookie, now=...)
    tokens = await exchange_code(http, cfg, code, redirect_uri, verifier)
    who = await github_identity(http, cfg, tokens) | await google_identity(http, cfg, tokens, ..., verifier=...)

The state is a signed token (HMAC key derived from SESSION_SECRET and the tenant id) bound to
the tenant, its host, the provider and a hash of the browser's nonce cookie; it lives ten
minutes. Single use is enforced by the caller with a used-state record (see
tenant_worker.auth_store). The PKCE verifier is never stored: it is an HMAC of the nonce
cookie and the state id, so only the browser that started the flow, through this Worker,
can complete it. Every failure is an OAuthError with a stable `reason` for audit/metrics.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any, Callable, Literal, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.ids import TENANT_ID_PATTERN
from shared.jwt import HS256Signer, JwtError, decode_unverified_header, verify_hs256
from shared.keys import LEGACY_KID, Key, Keyring, KeyringError, b64url_encode, derive_hex
from shared.outbound_http import HttpClient, HttpError, HttpResponse
from shared.rs256 import RsaPublicKey, RsaVerifier, SignatureError, keys_from_jwks, verify_rs256

Provider = Literal["github", "google"]
PROVIDERS: tuple[Provider, ...] = ("github", "google")
STATE_TTL_SECONDS = 600
GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
USER_AGENT = "cmgsite-tenant-worker"

# Real endpoints; each can be overridden per tenant by a var (tests point them at a fake).
DEFAULT_URLS: dict[str, dict[str, str]] = {
    "github": {
        "authorize": "https://github.com/login/oauth/authorize",
        "token": "https://github.com/login/oauth/access_token",
        "api": "https://api.github.com",
    },
    "google": {
        "authorize": "https://accounts.google.com/o/oauth2/v2/auth",
        "token": "https://oauth2.googleapis.com/token",
        "jwks": "https://www.googleapis.com/oauth2/v3/certs",
    },
}
SCOPES = {"github": "read:user user:email", "google": "openid email profile"}


class OAuthError(Exception):
    """A sign-in that must stop; `reason` is a stable code for the audit log and counters."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


# ---- configuration -----------------------------------------------------------------------


class ProviderConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: Provider
    client_id: str = Field(min_length=1, max_length=200)
    client_secret: str = Field(min_length=1, max_length=500)
    authorize_url: str
    token_url: str
    api_url: str = ""  # GitHub's REST API root
    jwks_url: str = ""  # Google's signing keys
    scope: str
    timeout: float = 8.0


def provider_config(provider: str, value: Callable[[str], str]) -> ProviderConfig:
    """The tenant's config for `provider` from its env (`value(name)` -> "" when unset)."""
    if provider not in PROVIDERS:
        raise OAuthError("unknown_provider", "Unknown sign-in provider.")
    up = provider.upper()
    client_id, client_secret = value(f"{up}_CLIENT_ID"), value(f"{up}_CLIENT_SECRET")
    if not client_id or not client_secret:
        raise OAuthError("provider_not_configured", f"Sign-in with {provider.title()} is not set up for this site.")
    urls = {k: value(f"OAUTH_{up}_{k.upper()}_URL") or v for k, v in DEFAULT_URLS[provider].items()}
    for url in urls.values():
        _check_url(url)
    timeout = float(value("OAUTH_TIMEOUT_SECONDS") or 8.0)
    return ProviderConfig(
        name=cast(Provider, provider),
        client_id=client_id,
        client_secret=client_secret,
        authorize_url=urls["authorize"],
        token_url=urls["token"],
        api_url=urls.get("api", ""),
        jwks_url=urls.get("jwks", ""),
        scope=SCOPES[provider],
        timeout=min(max(timeout, 0.1), 30.0),
    )


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    local = parts.hostname in ("127.0.0.1", "localhost")  # the test fake; real providers are https
    if parts.scheme != "https" and not (parts.scheme == "http" and local):
        raise OAuthError("provider_not_configured", "A provider URL is not https.")


# ---- state, nonce, PKCE --------------------------------------------------------------------

_b64 = b64url_encode  # shared.keys: the one base64url


def _session_key(secret: str, kid: str | None = None, *, now: float | None = None) -> Key | None:
    """A key of the SESSION_SECRET keyring (shared.keys): `kid`'s while accepted, else the active one.
    A rotation therefore leaves a sign-in that started before it intact (state and PKCE name their key)."""
    try:
        ring = Keyring.parse(secret)
    except KeyringError:
        raise ValueError("SESSION_SECRET is not a valid keyring") from None
    return ring.active if kid is None else ring.get(kid, now=now)


def _derive(secret: str, purpose: str, tenant_id: str) -> str:
    """`secret` is one key of the keyring."""
    if len(secret) < 32:
        raise ValueError("SESSION_SECRET must be at least 32 characters")
    return derive_hex(secret, f"cmgsite-{purpose}-v1:{tenant_id}")


def new_nonce() -> str:
    """The browser-binding value kept in the short-lived, HttpOnly nonce cookie."""
    return secrets.token_urlsafe(32)


def nonce_hash(nonce: str) -> str:
    return _b64(hashlib.sha256(b"state:" + nonce.encode()).digest())


def oidc_nonce(nonce: str) -> str:
    """The `nonce` sent to Google and expected back in the ID token."""
    return _b64(hashlib.sha256(b"oidc:" + nonce.encode()).digest())


def pkce_verifier(secret: str, tenant_id: str, nonce: str, state_id: str, kid: str | None = None) -> str:
    """From the key that signed the state (`StateClaims.kid`), the active one when starting."""
    found = _session_key(secret, kid)
    if found is None:
        raise OAuthError("state_invalid", "This sign-in link is not valid any more. Please start again.")
    key = _derive(found.secret, "pkce", tenant_id).encode()
    return _b64(hmac.new(key, f"{nonce}:{state_id}".encode(), hashlib.sha256).digest())  # 43 chars


def pkce_challenge(verifier: str) -> str:
    return _b64(hashlib.sha256(verifier.encode("ascii")).digest())


class StateClaims(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    typ: Literal["oauth_state"] = "oauth_state"
    tid: str = Field(pattern=TENANT_ID_PATTERN)
    host: str = Field(max_length=253)
    prv: Provider
    nh: str = Field(max_length=64)  # hash of the nonce cookie
    nxt: str = Field(max_length=512)
    jti: str = Field(pattern=r"^[A-Za-z0-9_-]{16,64}$")
    iat: int = Field(strict=True)  # a signed token's times are ints, never true/1.0/"1"
    exp: int = Field(strict=True)
    # Not signed as a claim: the key id of the header, set by verify_state (None: the active key).
    kid: str | None = Field(default=None, exclude=True)


def issue_state(
    *, tenant_id: str, host: str, provider: Provider, nonce: str, next_path: str, now: float
) -> StateClaims:
    return StateClaims(
        tid=tenant_id,
        host=host,
        prv=provider,
        nh=nonce_hash(nonce),
        nxt=safe_next(next_path),
        jti=secrets.token_urlsafe(18),
        iat=int(now),
        exp=int(now) + STATE_TTL_SECONDS,
    )


def encode_state(secret: str, claims: StateClaims) -> str:
    key = _session_key(secret)
    assert key is not None
    return HS256Signer(_derive(key.secret, "oauth-state", claims.tid), kid=None if key.legacy else key.kid).sign(
        claims.model_dump()
    )


def verify_state(
    token: str | None, secret: str, *, tenant_id: str, host: str, nonce: str | None, now: float
) -> StateClaims:
    """The claims of a state this tenant issued to this browser, not yet expired."""
    if not token:
        raise OAuthError("state_missing", "The sign-in link is incomplete. Please start again.")
    try:
        kid = decode_unverified_header(token).get("kid", LEGACY_KID)
        key = _session_key(secret, kid if isinstance(kid, str) else "", now=now)
        if key is None:
            raise JwtError("unknown key id")
        raw = verify_hs256(token, _derive(key.secret, "oauth-state", tenant_id), now=now, leeway=0)
        claims = StateClaims.model_validate(raw).model_copy(update={"kid": key.kid})
    except JwtError as exc:
        reason = "state_expired" if "expired" in str(exc) else "state_invalid"
        raise OAuthError(reason, "This sign-in link is not valid any more. Please start again.") from None
    except ValidationError:
        raise OAuthError("state_invalid", "This sign-in link is not valid. Please start again.") from None
    if claims.tid != tenant_id or claims.host != host:
        raise OAuthError("state_invalid", "This sign-in link is not valid. Please start again.")
    if not nonce or not hmac.compare_digest(claims.nh, nonce_hash(nonce)):
        # Another browser's state (login CSRF) or a cleared cookie.
        raise OAuthError("state_browser_mismatch", "This sign-in was started in another browser. Please start again.")
    return claims


def safe_next(value: str | None) -> str:
    """A same-host path for after sign-in; anything that could leave the host becomes "/"."""
    if not value or len(value) > 512 or not value.startswith("/") or value.startswith("//"):
        return "/"
    if any(c in value for c in "\\\r\n\t\x00") or value.startswith("/\\"):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


def authorize_url(
    cfg: ProviderConfig, redirect_uri: str, state: str, *, challenge: str, oidc_nonce_value: str | None = None
) -> str:
    params = {
        "client_id": cfg.client_id,
        "redirect_uri": redirect_uri,
        "scope": cfg.scope,
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    if cfg.name == "google":
        params.update({"response_type": "code", "nonce": oidc_nonce_value or "", "prompt": "select_account"})
    else:
        params["allow_signup"] = "true"
    return cfg.authorize_url + ("&" if "?" in cfg.authorize_url else "?") + urlencode(params)


# ---- provider calls ------------------------------------------------------------------------


class TokenResponse(BaseModel):
    model_config = ConfigDict(extra="ignore")

    access_token: str = Field(min_length=1, max_length=4096)
    token_type: str = "bearer"
    scope: str = ""
    id_token: str | None = None
    expires_in: int | None = None


class Identity(BaseModel):
    """Who signed in, as the provider vouches: a verified email or nothing."""

    model_config = ConfigDict(frozen=True)

    provider: Provider
    subject: str = Field(min_length=1, max_length=255)
    email: str = Field(min_length=3, max_length=320)
    name: str | None = Field(default=None, max_length=200)


async def _send(
    http: HttpClient, cfg: ProviderConfig, method: str, url: str, *, headers: dict[str, str], body: bytes | None = None
) -> HttpResponse:
    try:
        resp = await http.request(
            method, url, headers={"user-agent": USER_AGENT, **headers}, body=body, timeout=cfg.timeout
        )
    except HttpError:
        raise OAuthError("provider_unavailable", f"{cfg.name.title()} did not answer. Please try again.") from None
    if resp.status >= 500:
        raise OAuthError("provider_unavailable", f"{cfg.name.title()} is having trouble. Please try again.")
    return resp


def _parse_body(resp: HttpResponse) -> dict[str, Any]:
    """GitHub answers form-encoded unless asked for JSON; Google answers JSON. Accept both."""
    ctype = resp.headers.get("content-type", "")
    try:
        if "json" in ctype:
            data = resp.json()
            return data if isinstance(data, dict) else {}
        return dict(parse_qsl(resp.body.decode("utf-8"), keep_blank_values=True))
    except (ValueError, UnicodeDecodeError):
        return {}


async def exchange_code(
    http: HttpClient, cfg: ProviderConfig, code: str, redirect_uri: str, verifier: str
) -> TokenResponse:
    form = urlencode(
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": cfg.client_id,
            "client_secret": cfg.client_secret,
            "code_verifier": verifier,
        }
    ).encode()
    resp = await _send(
        http,
        cfg,
        "POST",
        cfg.token_url,
        body=form,
        headers={"content-type": "application/x-www-form-urlencoded", "accept": "application/json"},
    )
    data = _parse_body(resp)
    # GitHub reports a bad code as 200 with an `error` field; Google uses 400.
    if not resp.ok or "error" in data:
        raise OAuthError("code_exchange_failed", f"{cfg.name.title()} refused the sign-in code. Please start again.")
    try:
        return TokenResponse.model_validate(data)
    except ValidationError:
        raise OAuthError("code_exchange_failed", f"{cfg.name.title()} sent an unusable token.") from None


class GitHubUser(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: int
    login: str
    name: str | None = None


class GitHubEmail(BaseModel):
    model_config = ConfigDict(extra="ignore")

    email: str
    primary: bool = False
    verified: bool = False


async def _github_get(http: HttpClient, cfg: ProviderConfig, path: str, token: str) -> Any:
    resp = await _send(
        http,
        cfg,
        "GET",
        cfg.api_url.rstrip("/") + path,
        headers={
            "authorization": f"Bearer {token}",
            "accept": "application/vnd.github+json",
            "x-github-api-version": "2022-11-28",
        },
    )
    if not resp.ok:
        raise OAuthError("profile_fetch_failed", "GitHub did not share your profile. Please try again.")
    try:
        return resp.json()
    except (ValueError, UnicodeDecodeError):
        raise OAuthError("profile_fetch_failed", "GitHub sent an unreadable profile.") from None


async def github_identity(http: HttpClient, cfg: ProviderConfig, tokens: TokenResponse) -> Identity:
    try:
        user = GitHubUser.model_validate(await _github_get(http, cfg, "/user", tokens.access_token))
        raw = await _github_get(http, cfg, "/user/emails", tokens.access_token)
        emails = [GitHubEmail.model_validate(e) for e in (raw if isinstance(raw, list) else [])]
    except ValidationError:
        raise OAuthError("profile_fetch_failed", "GitHub sent an unreadable profile.") from None
    primary = next((e for e in emails if e.primary and e.verified), None)
    if primary is None:
        raise OAuthError("email_missing", "Your GitHub account has no verified primary email address.")
    return _identity("github", str(user.id), primary.email, user.name or user.login)


class GoogleIdClaims(BaseModel):
    model_config = ConfigDict(extra="ignore")

    iss: str
    aud: str | list[str]
    sub: str
    exp: int
    iat: int
    azp: str | None = None
    nonce: str | None = None
    email: str | None = None
    email_verified: bool | str | None = None
    name: str | None = None


class JwksCache:
    """Google's keys per isolate: fetched on first use, refreshed hourly, and refetched once
    for a sign-in whose ID token names a key id the cached set lacks (Google rotates its keys)."""

    def __init__(self, clock: Callable[[], float] = time.time, ttl: float = 3600.0) -> None:
        self._clock, self._ttl = clock, ttl
        self._keys: dict[str, tuple[float, list[RsaPublicKey]]] = {}

    async def keys(self, http: HttpClient, cfg: ProviderConfig, *, refresh: bool = False) -> list[RsaPublicKey]:
        cached = self._keys.get(cfg.jwks_url)
        if cached and not refresh and cached[0] > self._clock():
            return cached[1]
        resp = await _send(http, cfg, "GET", cfg.jwks_url, headers={"accept": "application/json"})
        if not resp.ok:
            raise OAuthError("provider_unavailable", "Google's signing keys are unavailable. Please try again.")
        try:
            keys = keys_from_jwks(resp.json())
        except (ValueError, UnicodeDecodeError):
            keys = []
        if not keys:
            raise OAuthError("provider_unavailable", "Google's signing keys are unreadable.")
        self._keys[cfg.jwks_url] = (self._clock() + self._ttl, keys)
        return keys


async def google_identity(
    http: HttpClient,
    cfg: ProviderConfig,
    tokens: TokenResponse,
    *,
    expected_nonce: str,
    now: float,
    jwks: JwksCache,
    verifier: RsaVerifier,
    leeway: int = 60,
) -> Identity:
    """Identity from Google's ID token: signature (JWKS, the RSA check by `verifier`), issuer,
    audience, expiry, nonce. An unknown key id refetches the JWKS once, never more per sign-in."""
    if not tokens.id_token:
        raise OAuthError("id_token_invalid", "Google did not send an ID token.")
    keys = await jwks.keys(http, cfg)
    try:
        try:
            _, raw = await verify_rs256(tokens.id_token, keys, verifier)
        except SignatureError as exc:
            if "unknown key id" not in str(exc):
                raise
            keys = await jwks.keys(http, cfg, refresh=True)  # key rotation: once, then the answer stands
            _, raw = await verify_rs256(tokens.id_token, keys, verifier)
        claims = GoogleIdClaims.model_validate(raw)
    except (SignatureError, ValidationError):
        raise OAuthError("id_token_invalid", "Google's ID token did not verify.") from None
    auds = claims.aud if isinstance(claims.aud, list) else [claims.aud]
    if claims.iss not in GOOGLE_ISSUERS:
        raise OAuthError("id_token_invalid", "Google's ID token has the wrong issuer.")
    if cfg.client_id not in auds or (len(auds) > 1 and claims.azp != cfg.client_id):
        raise OAuthError("id_token_invalid", "Google's ID token is for another application.")
    if now >= claims.exp + leeway or claims.iat > now + leeway:
        raise OAuthError("id_token_invalid", "Google's ID token has expired.")
    if not claims.nonce or not hmac.compare_digest(claims.nonce, expected_nonce):
        raise OAuthError("id_token_invalid", "Google's ID token was not issued for this sign-in.")
    verified = claims.email_verified is True or claims.email_verified == "true"
    if not claims.email or not verified:
        raise OAuthError("email_missing", "Your Google account has no verified email address.")
    return _identity("google", claims.sub, claims.email, claims.name)


def _identity(provider: Provider, subject: str, email: str, name: str | None) -> Identity:
    try:
        return Identity(provider=provider, subject=subject, email=email.lower(), name=(name or None) and name[:200])
    except ValidationError:
        raise OAuthError("profile_fetch_failed", f"{provider.title()} sent an unusable profile.") from None

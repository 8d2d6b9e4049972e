"""The signed session token a tenant Worker keeps in its host-only session cookie.

    token = issue_session(secret, tenant_id="partner1", user_id=uid, role="admin", now=time.time())
    claims = verify_session(token, secret, tenant_id="partner1", now=time.time())

A compact HS256 JWS (stdlib HMAC; signed with shared.jwt.HS256Signer) whose key is derived from the tenant
Worker's SESSION_SECRET *and* the tenant id, so a token minted for tenant A fails the
signature at tenant B even if two tenants were ever given the same secret; the tenant id
is also a claim and compared. `alg` other than HS256 (`none` included), tampering, expiry,
extra or missing claims are all refused with SessionError.

SESSION_SECRET is a keyring (shared.keys): sessions are signed with its active key and name
that key id in the JWS header (`kid`; the legacy k0 signs the exact header used before
keyrings), and verified with whichever key of the keyring the header names, until that key's
not_after. A rotation therefore signs new sessions with the new key while the sessions already
out stay good until they expire (SESSION_TTL_SECONDS).
"""

from __future__ import annotations

import functools
import hmac
import json
import secrets
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.ids import TENANT_ID_PATTERN, UUID_PATTERN
from shared.jwt import HS256Signer
from shared.keys import Key, Keyring, KeyringError, b64url_decode, derive_hex
from shared.roles import RoleName

SESSION_TTL_SECONDS = 8 * 3600  # a working day; role changes rotate sooner (see tenant_worker.auth)
_PURPOSE = "cmgsite-session-v1"

Role = RoleName  # shared.roles: the one role vocabulary


class SessionError(ValueError):
    """The session token must not be trusted (malformed, forged, expired, other tenant)."""


class SessionClaims(BaseModel):
    """Exactly what a session carries; anything else in a token is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    typ: Literal["session"] = "session"
    tid: str = Field(pattern=TENANT_ID_PATTERN)  # tenant id
    sub: str = Field(pattern=UUID_PATTERN)  # profiles.id
    role: Role
    sid: str = Field(pattern=r"^[A-Za-z0-9_-]{16,64}$")  # session id: rotation makes a new one
    iat: int = Field(strict=True)  # a signed token's times are ints, never true/1.0/"1"
    exp: int = Field(strict=True)
    email: str | None = Field(default=None, max_length=320)
    name: str | None = Field(default=None, max_length=200)


# Key derivation costs two HMACs; an isolate sees few (secret, tenant) pairs, so keep them.
_keys: dict[tuple[str, str], str] = {}


def session_key(secret: str, tenant_id: str) -> str:
    """The per-tenant signing key (hex) derived from one SESSION_SECRET key."""
    if len(secret) < 32:
        raise ValueError("SESSION_SECRET must be at least 32 characters")
    key = _keys.get((secret, tenant_id))
    if key is None:
        key = derive_hex(secret, f"{_PURPOSE}:{tenant_id}")
        if len(_keys) > 64:
            _keys.clear()
        _keys[(secret, tenant_id)] = key
    return key


_rings: dict[str, Keyring] = {}


def session_keyring(secret: str) -> Keyring:
    """SESSION_SECRET as a keyring (a bare secret is the legacy key k0); ValueError if malformed."""
    ring = _rings.get(secret)
    if ring is None:
        try:
            ring = Keyring.parse(secret)
        except KeyringError as exc:
            raise ValueError(f"SESSION_SECRET: {exc}") from None
        if len(_rings) > 16:
            _rings.clear()
        _rings[secret] = ring
    return ring


def _signer(key: Key, tenant_id: str) -> HS256Signer:
    return HS256Signer(session_key(key.secret, tenant_id), kid=None if key.legacy else key.kid)


def new_session_id() -> str:
    return secrets.token_urlsafe(18)


def new_session(
    secret: str,
    *,
    tenant_id: str,
    user_id: str,
    role: Role,
    now: float | datetime,
    ttl_seconds: int = SESSION_TTL_SECONDS,
    email: str | None = None,
    name: str | None = None,
) -> tuple[str, SessionClaims]:
    """A new session: the signed token for the cookie and the claims it carries (the issuer
    knows them; it never verifies its own fresh token to learn them)."""
    iat = int(now.timestamp()) if isinstance(now, datetime) else int(now)
    claims = SessionClaims(
        tid=tenant_id,
        sub=user_id.lower(),
        role=role,
        sid=new_session_id(),
        iat=iat,
        exp=iat + ttl_seconds,
        email=email,
        name=(name or None) and name[:200],
    )
    return _signer(session_keyring(secret).active, tenant_id).sign(claims.model_dump(exclude_none=True)), claims


def issue_session(
    secret: str,
    *,
    tenant_id: str,
    user_id: str,
    role: Role,
    now: float | datetime,
    ttl_seconds: int = SESSION_TTL_SECONDS,
    email: str | None = None,
    name: str | None = None,
) -> str:
    """The signed token of a new session (new_session without the claims)."""
    return new_session(
        secret,
        tenant_id=tenant_id,
        user_id=user_id,
        role=role,
        now=now,
        ttl_seconds=ttl_seconds,
        email=email,
        name=name,
    )[0]


@functools.lru_cache(maxsize=64)
def _header_segment(key: Key) -> str:
    """The one header issue_session writes for `key`; anything else (alg none, HS512, another
    kid, crit) is refused by comparing the whole segment, before any signature work."""
    return HS256Signer("k" * 32, kid=None if key.legacy else key.kid).sign({}).split(".")[0]


def _b64decode(part: str) -> bytes:
    if not part:
        raise SessionError("malformed base64url segment")
    try:
        return b64url_decode(part)
    except ValueError:
        raise SessionError("malformed base64url segment") from None


def _session_key_for(header: str, ring: Keyring, tenant_id: str, now: int) -> str:
    for key in ring.accepted(now):
        if hmac.compare_digest(header, _header_segment(key)):
            return session_key(key.secret, tenant_id)
    raise SessionError("header, algorithm or key id not accepted")


def _verified_payload(token: str, key: str) -> Any:
    """The JSON payload of a token whose HS256 signature under `key` checks out."""
    parts = token.split(".")
    if len(parts) != 3:
        raise SessionError("header or algorithm not accepted")
    try:
        signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    except UnicodeEncodeError:
        raise SessionError("malformed token") from None
    expected = hmac.digest(key.encode(), signing_input, "sha256")
    if not hmac.compare_digest(expected, _b64decode(parts[2])):
        raise SessionError("signature mismatch")
    try:
        return json.loads(_b64decode(parts[1]))
    except (ValueError, UnicodeDecodeError):
        raise SessionError("payload is not JSON") from None


# Tokens this isolate already verified (signature and claims), keyed with the derived key so a
# secret rotation misses. Only expiry still changes with time, and it is checked on every hit.
_VERIFIED_MAX = 4096
_verified: dict[tuple[str, str], SessionClaims] = {}


def verify_session(token: str, secret: str, *, tenant_id: str, now: float | datetime) -> SessionClaims:
    """The claims of a good session for `tenant_id`; SessionError for anything else."""
    if not token or len(token) > 4096:
        raise SessionError("session missing or too large")
    t = int(now.timestamp()) if isinstance(now, datetime) else int(now)
    key = _session_key_for(token.split(".", 1)[0], session_keyring(secret), tenant_id, t)
    claims = _verified.get((key, token))
    if claims is None:
        raw = _verified_payload(token, key)
        try:
            claims = SessionClaims.model_validate(raw)
        except ValidationError:
            raise SessionError("not a session token") from None
        if claims.tid != tenant_id:  # unreachable with a derived key unless keys collide; cheap to keep
            raise SessionError("session belongs to another tenant")
        if len(_verified) >= _VERIFIED_MAX:
            _verified.clear()
        _verified[(key, token)] = claims
    if t >= claims.exp:
        raise SessionError("token expired")
    return claims

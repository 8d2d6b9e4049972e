"""The signed session token a tenant Worker keeps in its host-only session cookie.

    token = issue_session(secret, tenant_id="partner1", user_id=uid, role="admin", now=time.time())
    claims = verify_session(token, secret, tenant_id="partner1", now=time.time())

A compact HS256 JWS (stdlib HMAC; signed with shared.jwt.HS256Signer) whose key is derived from the tenant
Worker's SESSION_SECRET *and* the tenant id, so a token minted for tenant A fails the
signature at tenant B even if two tenants were ever given the same secret; the tenant id
is also a claim and compared. `alg` other than HS256 (`none` included), tampering, expiry,
extra or missing claims are all refused with SessionError.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.jwt import TENANT_ID_PATTERN, HS256Signer

SESSION_TTL_SECONDS = 8 * 3600  # a working day; role changes rotate sooner (see tenant_worker.auth)
_PURPOSE = "cmgsite-session-v1"
_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

Role = Literal["client", "admin", "super_admin"]


class SessionError(ValueError):
    """The session token must not be trusted (malformed, forged, expired, other tenant)."""


class SessionClaims(BaseModel):
    """Exactly what a session carries; anything else in a token is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    typ: Literal["session"] = "session"
    tid: str = Field(pattern=TENANT_ID_PATTERN)  # tenant id
    sub: str = Field(pattern=_UUID)  # profiles.id
    role: Role
    sid: str = Field(pattern=r"^[A-Za-z0-9_-]{16,64}$")  # session id: rotation makes a new one
    iat: int = Field(strict=True)  # a signed token's times are ints, never true/1.0/"1"
    exp: int = Field(strict=True)
    email: str | None = Field(default=None, max_length=320)
    name: str | None = Field(default=None, max_length=200)


# Key derivation costs two HMACs; an isolate sees few (secret, tenant) pairs, so keep them.
_keys: dict[tuple[str, str], str] = {}


def session_key(secret: str, tenant_id: str) -> str:
    """The per-tenant signing key (hex) derived from SESSION_SECRET."""
    if len(secret) < 32:
        raise ValueError("SESSION_SECRET must be at least 32 characters")
    key = _keys.get((secret, tenant_id))
    if key is None:
        key = hmac.new(secret.encode(), f"{_PURPOSE}:{tenant_id}".encode(), hashlib.sha256).hexdigest()
        if len(_keys) > 64:
            _keys.clear()
        _keys[(secret, tenant_id)] = key
    return key


def new_session_id() -> str:
    return secrets.token_urlsafe(18)


def issue_session(secret: str, *, tenant_id: str, user_id: str, role: Role, now: float | datetime,
                  ttl_seconds: int = SESSION_TTL_SECONDS, email: str | None = None,
                  name: str | None = None) -> str:
    iat = int(now.timestamp()) if isinstance(now, datetime) else int(now)
    claims = SessionClaims(tid=tenant_id, sub=user_id.lower(), role=role, sid=new_session_id(), iat=iat,
                           exp=iat + ttl_seconds, email=email, name=(name or None) and name[:200])
    return HS256Signer(session_key(secret, tenant_id)).sign(claims.model_dump(exclude_none=True))


# The one header issue_session writes; anything else (alg none, HS512, a kid, crit) is refused
# by comparing the whole segment, before any signature work.
_HEADER_SEGMENT = HS256Signer("k" * 32).sign({}).split(".")[0]
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")


def _b64decode(part: str) -> bytes:
    if not _B64URL.match(part) or len(part) % 4 == 1:
        raise SessionError("malformed base64url segment")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise SessionError("malformed base64url segment") from None


def _verified_payload(token: str, key: str) -> Any:
    """The JSON payload of a token whose HS256 signature under `key` checks out."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _HEADER_SEGMENT:
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
    key = session_key(secret, tenant_id)
    t = int(now.timestamp()) if isinstance(now, datetime) else int(now)
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

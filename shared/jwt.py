"""JSON Web Tokens for PostgREST: HS256 signing and verification, tenant-scoped claims.

The tenant Worker mints a short-lived JWT for each Supabase call from a verified tenant
context; PostgREST checks it with the project's JWT secret and RLS reads its claims
(`auth.jwt() ->> 'tenant_id'`, `auth.uid()` = `sub`).

    signer = HS256Signer(jwt_secret)                     # or any JwtSigner (ES256 + kid later)
    token = mint_tenant_jwt(signer, user_id=uid, tenant_id="partner1",
                            tenant_role="admin", is_primary=False, now=time.time())
    claims = verify_hs256(token, jwt_secret, now=time.time(), audience="authenticated")

Key rotation: SUPABASE_JWT_SECRET is a keyring (shared.keys). `keyring_signer` signs with
its active key and names the key id in the header (`kid`; the legacy k0 writes no kid, as
before keyrings); PostgREST is given every accepted key as a JWKS (`jwks_for`) and picks the
key by `kid`, so tokens minted under the previous key stay valid until they expire.

Signing and verification use only the standard library (hmac, hashlib, base64, json), so
the module runs under CPython and in Pyodide alike. Verification accepts HS256 alone:
`alg: none` and every other algorithm are refused before any signature work, signatures
are compared in constant time, and exp / nbf / iat are checked with a small leeway.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any, Literal, Mapping, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.ids import TENANT_ID_PATTERN, UUID_RE
from shared.json_depth import exceeds_depth
from shared.keys import LEGACY_KID, Keyring, b64url_decode, b64url_encode
from shared.roles import RoleName

MAX_SEGMENT_DEPTH = 16
MAX_TENANT_JWT_TTL = 3600  # minutes, not days: a leaked token must die quickly
# The audience every tenant token carries. PostgREST is configured to require it (`jwt-aud`),
# and so is the database's pre-request guard (supabase/migrations/20261126230448_api_request_guard.sql).
TENANT_JWT_AUDIENCE = "authenticated"

TenantRole = RoleName  # shared.roles: the one role vocabulary


class JwtError(ValueError):
    """A token that must not be trusted (malformed, wrong algorithm, bad signature, expired…)."""


class JwtSigner(Protocol):
    """Signs a claims set into a compact JWS. HS256 today; an ES256 signer with `kid` can
    replace it (Supabase's asymmetric signing keys) without touching the callers."""

    alg: str
    kid: str | None

    def sign(self, claims: Mapping[str, Any]) -> str: ...


_b64url_encode = b64url_encode


def _b64url_decode(part: str) -> bytes:
    # Strict alphabet (shared.keys): the lenient stdlib decoder would skip junk characters.
    try:
        return b64url_decode(part)
    except ValueError as exc:
        raise JwtError("malformed base64url segment") from exc


def _json_segment(claims: Mapping[str, Any]) -> str:
    return _b64url_encode(json.dumps(dict(claims), separators=(",", ":"), sort_keys=True).encode("utf-8"))


def _epoch(now: float | datetime) -> int:
    return int(now.timestamp()) if isinstance(now, datetime) else int(now)


def _secret_bytes(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if len(key) < 32:
        raise ValueError("HS256 secret must be at least 32 bytes (PostgREST and Supabase require it)")
    return key


class HS256Signer:
    """HMAC-SHA256 with the project's JWT secret (what PostgREST's `jwt-secret` verifies)."""

    alg = "HS256"

    def __init__(self, secret: str | bytes, *, kid: str | None = None) -> None:
        self._key = _secret_bytes(secret)
        self.kid = kid

    def sign(self, claims: Mapping[str, Any]) -> str:
        header: dict[str, Any] = {"alg": self.alg, "typ": "JWT"}
        if self.kid is not None:
            header["kid"] = self.kid
        signing_input = f"{_json_segment(header)}.{_json_segment(claims)}"
        mac = hmac.new(self._key, signing_input.encode("ascii"), hashlib.sha256).digest()
        return f"{signing_input}.{_b64url_encode(mac)}"


def keyring_signer(ring: Keyring) -> HS256Signer:
    """Signs with the keyring's active key, naming its key id (none for the legacy k0)."""
    key = ring.active
    return HS256Signer(key.secret, kid=None if key.legacy else key.kid)


def jwks_for(ring: Keyring, *, now: float | None = None) -> dict[str, Any]:
    """The keyring's accepted keys as a JWKS of HS256 `oct` keys (PostgREST's `jwt-secret` takes
    one). The legacy key has no `kid`: it verifies the tokens that name none (the API keys)."""
    keys = []
    for key in ring.accepted(now):
        jwk: dict[str, Any] = {"kty": "oct", "alg": "HS256", "k": b64url_encode(key.secret.encode("utf-8"))}
        if not key.legacy:
            jwk["kid"] = key.kid
        keys.append(jwk)
    return {"keys": keys}


def decode_unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, for routing to a key by `kid`. Never trust anything else unverified."""
    parts = token.split(".")
    if len(parts) != 3:
        raise JwtError("a JWS has three segments")
    header = _parse_json(_b64url_decode(parts[0]))
    return header


def _parse_json(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JwtError("segment is not JSON") from exc
    if exceeds_depth(text, MAX_SEGMENT_DEPTH):  # a header is parsed before its signature is checked
        raise JwtError("segment nested too deeply")
    try:
        value = json.loads(text)
    except ValueError as exc:  # also an int past Python's digit limit, not only JSONDecodeError
        raise JwtError("segment is not JSON") from exc
    if not isinstance(value, dict):
        raise JwtError("segment is not a JSON object")
    return value


def _numeric(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise JwtError(f"claim {name!r} must be a number")
    return float(value)


def verify_hs256(
    token: str,
    secret: str | bytes | Keyring,
    *,
    now: float | datetime,
    leeway: int = 30,
    audience: str | None = None,
    require_exp: bool = True,
    kid: str | None = None,
) -> dict[str, Any]:
    """Verify signature and time claims; return the claims. Raises JwtError on any doubt.

    With a Keyring, the header's `kid` picks the key (no kid: the legacy key k0)."""
    ring = secret if isinstance(secret, Keyring) else None
    key = b"" if ring is not None else _secret_bytes(secret)  # type: ignore[arg-type]
    if not isinstance(token, str) or len(token) > 16384:
        raise JwtError("token missing or too large")
    parts = token.split(".")
    if len(parts) != 3:
        raise JwtError("a JWS has three segments")
    header = _parse_json(_b64url_decode(parts[0]))
    if header.get("alg") != "HS256":
        # Refuses "none", "HS512", "RS256"-with-the-secret-as-public-key, and missing alg.
        raise JwtError(f"algorithm {header.get('alg')!r} not accepted")
    if "crit" in header:
        raise JwtError("critical header extensions are not supported")
    if kid is not None and header.get("kid") != kid:
        raise JwtError("unknown key id")
    if ring is not None:
        named = header.get("kid", LEGACY_KID)
        found = ring.get(named, now=_epoch(now)) if isinstance(named, str) else None
        if found is None:
            raise JwtError("unknown key id")
        key = _secret_bytes(found.secret)
    expected = hmac.new(key, f"{parts[0]}.{parts[1]}".encode("ascii"), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, _b64url_decode(parts[2])):
        raise JwtError("signature mismatch")
    claims = _parse_json(_b64url_decode(parts[1]))

    t = _epoch(now)
    exp, nbf, iat = _numeric(claims, "exp"), _numeric(claims, "nbf"), _numeric(claims, "iat")
    if exp is None and require_exp:
        raise JwtError("claim 'exp' is required")
    if exp is not None and t >= exp + leeway:
        raise JwtError("token expired")
    if nbf is not None and t + leeway < nbf:
        raise JwtError("token not yet valid")
    if iat is not None and t + leeway < iat:
        raise JwtError("token issued in the future")
    if audience is not None:
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if audience not in auds:
            raise JwtError("audience mismatch")
    return claims


class TenantJwtClaims(BaseModel):
    """Exactly the claims of a tenant-scoped PostgREST token; nothing else is minted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sub: str
    role: Literal["authenticated"] = "authenticated"
    aud: Literal["authenticated"] = "authenticated"
    tenant_id: str = Field(pattern=TENANT_ID_PATTERN)
    tenant_role: TenantRole
    iat: int
    exp: int

    @field_validator("sub")
    @classmethod
    def _sub_is_uuid(cls, value: str) -> str:
        # auth.uid() casts sub to uuid; anything else would fail inside Postgres.
        if not UUID_RE.match(value):
            raise ValueError("sub must be a lower-case UUID (the Supabase user id)")
        return value


def mint_tenant_jwt(
    signer: JwtSigner,
    *,
    user_id: str,
    tenant_id: str,
    tenant_role: TenantRole,
    is_primary: bool,
    now: float | datetime,
    ttl_seconds: int = 300,
) -> str:
    """Sign a short-lived token for one user of one tenant.

    `is_primary` says whether `tenant_id` is the platform's primary tenant: only there may
    a super_admin token be minted (the database checks it again).
    """
    if tenant_role == "super_admin" and not is_primary:
        raise JwtError("super_admin tokens are minted for the primary tenant only")
    if not 0 < ttl_seconds <= MAX_TENANT_JWT_TTL:
        raise ValueError(f"ttl_seconds must be within 1..{MAX_TENANT_JWT_TTL}")
    iat = _epoch(now)
    claims = TenantJwtClaims(
        sub=str(user_id).lower(), tenant_id=tenant_id, tenant_role=tenant_role, iat=iat, exp=iat + ttl_seconds
    )
    return signer.sign(claims.model_dump())


def verify_tenant_jwt(
    token: str, secret: str | bytes | Keyring, *, now: float | datetime, leeway: int = 30
) -> TenantJwtClaims:
    """Verify an HS256 tenant token and parse its claims (extra or missing claims refused)."""
    claims = verify_hs256(token, secret, now=now, leeway=leeway, audience=TENANT_JWT_AUDIENCE)
    try:
        return TenantJwtClaims.model_validate(claims)
    except ValueError as exc:
        raise JwtError(f"not a tenant token: {exc}") from exc

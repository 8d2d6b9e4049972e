"""The tenant context: how the dispatcher tells a tenant Worker who it is serving.

The dispatcher strips every client-sent `X-Tenant-*` header, then adds the context with an
HMAC-SHA256 signature over all its fields and a timestamp. Each tenant Worker holds only
its own key, derived from the dispatcher's master secret and the tenant id, so a leaked
tenant key cannot forge a context for any other tenant.

Rotation: both secrets are keyrings (shared.keys). The dispatcher signs with its active master
key and names its key id in the signature (`v1.<kid>=<hex>`; the legacy key k0 signs `v1=<hex>`
exactly as before keyrings); a tenant Worker accepts any key of its TENANT_CONTEXT_KEY keyring
that has not passed its not_after. `derive_tenant_keyring` maps the master keyring to the
tenant's, key by key, so the two always agree on key ids.
"""

from __future__ import annotations

import hmac
import re

from shared.keys import LEGACY_KID, Key, Keyring, KeyringError, derive_hex
from shared.models import InvalidModel, TenantContext

H_TENANT_ID = "x-tenant-id"
H_TENANT_TYPE = "x-tenant-type"
H_TENANT_TIER = "x-tenant-tier"
H_TENANT_HOST = "x-tenant-host"
H_TIMESTAMP = "x-tenant-timestamp"
H_SIGNATURE = "x-tenant-signature"
H_REQUEST_ID = "x-request-id"

# Clients must never steer which Worker version serves them.
VERSION_OVERRIDE_HEADERS = ("cloudflare-workers-version-overrides", "cloudflare-workers-version-key")

MAX_AGE_SECONDS = 30
MAX_CLOCK_SKEW_SECONDS = 5
_VERSION = "v1"


class ContextError(Exception):
    """The tenant context is missing, forged, stale or for another tenant."""


_SIGNATURE_RE = re.compile(r"^v1(?:\.([a-z0-9][a-z0-9-]{0,31}))?=([0-9a-f]{64})$")


def derive_tenant_key(master_secret: str, tenant_id: str) -> str:
    """The per-tenant signing key (hex) for one master key (what TENANT_CONTEXT_KEY held before keyrings)."""
    if not master_secret:
        raise ValueError("context master secret is empty")
    return derive_hex(master_secret, f"cmgsite-context-{_VERSION}:{tenant_id}")


def derive_tenant_keyring(master: str | Keyring, tenant_id: str) -> Keyring:
    """The tenant's TENANT_CONTEXT_KEY keyring: each master key derived for this tenant, same ids
    and expiries. A bare master secret gives a bare tenant key (the legacy format)."""
    ring = master if isinstance(master, Keyring) else Keyring.parse(master)
    return Keyring(tuple(Key(k.kid, derive_tenant_key(k.secret, tenant_id), k.not_after) for k in ring.keys))


def _canonical(ctx: TenantContext, kid: str) -> bytes:
    version = _VERSION if kid == LEGACY_KID else f"{_VERSION}.{kid}"  # the key id is signed too
    fields = (
        version,
        ctx.tenant_id,
        ctx.tenant_type.value,
        ctx.tier.value,
        ctx.host,
        ctx.request_id,
        str(ctx.issued_at),
    )
    return "\n".join(fields).encode()


def _signature(ctx: TenantContext, key: str, kid: str = LEGACY_KID) -> str:
    # hmac.digest: the one-shot HMAC in C (no HMAC object per request); the same bytes as hmac.new.
    return hmac.digest(key.encode(), _canonical(ctx, kid), "sha256").hex()


def is_client_controlled(header_name: str) -> bool:
    """Headers a client may not send through the dispatcher (compared lower-case)."""
    name = header_name.lower()
    return name.startswith("x-tenant-") or name in VERSION_OVERRIDE_HEADERS or name == H_REQUEST_ID


def context_headers(ctx: TenantContext, key: str | Key) -> dict[str, str]:
    """The headers that carry `ctx`, signed with the tenant's key (a bare key is the legacy k0)."""
    k = key if isinstance(key, Key) else Key(LEGACY_KID, key)
    prefix = _VERSION if k.legacy else f"{_VERSION}.{k.kid}"
    return {
        H_TENANT_ID: ctx.tenant_id,
        H_TENANT_TYPE: ctx.tenant_type.value,
        H_TENANT_TIER: ctx.tier.value,
        H_TENANT_HOST: ctx.host,
        H_REQUEST_ID: ctx.request_id,
        H_TIMESTAMP: str(ctx.issued_at),
        H_SIGNATURE: f"{prefix}={_signature(ctx, k.secret, k.kid)}",
    }


_rings: dict[str, Keyring | None] = {}


def tenant_keyring(value: str) -> Keyring | None:
    """A tenant Worker's TENANT_CONTEXT_KEY as a keyring; None when unset or malformed.
    Parsed once per isolate (every request verifies a context)."""
    if value in _rings:
        return _rings[value]
    try:
        ring = Keyring.parse(value) if value else None
    except KeyringError:
        ring = None
    if len(_rings) > 8:
        _rings.clear()
    _rings[value] = ring
    return ring


def verify_context(headers: dict[str, str], *, key: str | Keyring | None, tenant_id: str, now: int) -> TenantContext:
    """Rebuild and check the context a tenant Worker received.

    `headers` maps lower-case names to values; `key` is the tenant's keyring (or a bare key).
    Refuses a missing or bad signature, a key id the keyring does not hold (or holds past its
    not_after), a timestamp outside the freshness window, and a context for any tenant but
    `tenant_id`.
    """
    ring = tenant_keyring(key) if isinstance(key, str) else key
    if ring is None:
        raise ContextError("tenant Worker has no context key configured")
    match = _SIGNATURE_RE.match(headers.get(H_SIGNATURE, ""))
    if match is None:
        raise ContextError("missing or malformed context signature")
    kid, digest = match.group(1) or LEGACY_KID, match.group(2)
    signing_key = ring.get(kid, now=now)
    if signing_key is None:
        raise ContextError("context signed with a key this Worker does not hold")
    try:
        issued_at = int(headers.get(H_TIMESTAMP, ""))
        ctx = TenantContext.from_mapping(
            {
                "tenant_id": headers.get(H_TENANT_ID),
                "tenant_type": headers.get(H_TENANT_TYPE),
                "tier": headers.get(H_TENANT_TIER),
                "host": headers.get(H_TENANT_HOST),
                "request_id": headers.get(H_REQUEST_ID),
                "issued_at": issued_at,
            }
        )
    except (ValueError, InvalidModel):
        raise ContextError("malformed tenant context") from None
    if not hmac.compare_digest(digest, _signature(ctx, signing_key.secret, kid)):
        raise ContextError("context signature does not verify")
    if ctx.tenant_id != tenant_id:
        raise ContextError("context is for another tenant")
    if issued_at > now + MAX_CLOCK_SKEW_SECONDS or now - issued_at > MAX_AGE_SECONDS:
        raise ContextError("context is stale")
    return ctx

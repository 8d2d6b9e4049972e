"""The tenant context: how the dispatcher tells a tenant Worker who it is serving.

The dispatcher strips every client-sent `X-Tenant-*` header, then adds the context with an
HMAC-SHA256 signature over all its fields and a timestamp. Each tenant Worker holds only
its own key, derived from the dispatcher's master secret and the tenant id, so a leaked
tenant key cannot forge a context for any other tenant.
"""
from __future__ import annotations

import hashlib
import hmac

from shared.models import InvalidModel, TenantContext

H_TENANT_ID = "x-tenant-id"
H_TENANT_TYPE = "x-tenant-type"
H_TENANT_TIER = "x-tenant-tier"
H_TENANT_HOST = "x-tenant-host"
H_TIMESTAMP = "x-tenant-timestamp"
H_SIGNATURE = "x-tenant-signature"
H_REQUEST_ID = "x-request-id"

CONTEXT_HEADERS = (H_TENANT_ID, H_TENANT_TYPE, H_TENANT_TIER, H_TENANT_HOST, H_TIMESTAMP, H_SIGNATURE)
# Clients must never steer which Worker version serves them.
VERSION_OVERRIDE_HEADERS = ("cloudflare-workers-version-overrides", "cloudflare-workers-version-key")

MAX_AGE_SECONDS = 30
MAX_CLOCK_SKEW_SECONDS = 5
_VERSION = "v1"


class ContextError(Exception):
    """The tenant context is missing, forged, stale or for another tenant."""


def derive_tenant_key(master_secret: str, tenant_id: str) -> str:
    """The per-tenant signing key (hex) the tenant Worker gets as TENANT_CONTEXT_KEY."""
    if not master_secret:
        raise ValueError("context master secret is empty")
    mac = hmac.new(master_secret.encode(), f"cmgsite-context-{_VERSION}:{tenant_id}".encode(), hashlib.sha256)
    return mac.hexdigest()


def _canonical(ctx: TenantContext) -> bytes:
    fields = (_VERSION, ctx.tenant_id, ctx.tenant_type.value, ctx.tier.value, ctx.host, ctx.request_id, str(ctx.issued_at))
    return "\n".join(fields).encode()


def _signature(ctx: TenantContext, key: str) -> str:
    return hmac.new(key.encode(), _canonical(ctx), hashlib.sha256).hexdigest()


def is_client_controlled(header_name: str) -> bool:
    """Headers a client may not send through the dispatcher (compared lower-case)."""
    name = header_name.lower()
    return name.startswith("x-tenant-") or name in VERSION_OVERRIDE_HEADERS or name == H_REQUEST_ID


def context_headers(ctx: TenantContext, key: str) -> dict[str, str]:
    """The headers that carry `ctx`, signed with the tenant's key."""
    return {
        H_TENANT_ID: ctx.tenant_id,
        H_TENANT_TYPE: ctx.tenant_type.value,
        H_TENANT_TIER: ctx.tier.value,
        H_TENANT_HOST: ctx.host,
        H_REQUEST_ID: ctx.request_id,
        H_TIMESTAMP: str(ctx.issued_at),
        H_SIGNATURE: f"{_VERSION}={_signature(ctx, key)}",
    }


def verify_context(headers: dict[str, str], *, key: str, tenant_id: str, now: int) -> TenantContext:
    """Rebuild and check the context a tenant Worker received.

    `headers` maps lower-case names to values. Refuses a missing or bad signature, a
    timestamp outside the freshness window, and a context for any tenant but `tenant_id`.
    """
    if not key:
        raise ContextError("tenant Worker has no context key configured")
    sig = headers.get(H_SIGNATURE, "")
    version, _, digest = sig.partition("=")
    if version != _VERSION or not digest:
        raise ContextError("missing or malformed context signature")
    try:
        issued_at = int(headers.get(H_TIMESTAMP, ""))
        ctx = TenantContext.from_mapping({
            "tenant_id": headers.get(H_TENANT_ID),
            "tenant_type": headers.get(H_TENANT_TYPE),
            "tier": headers.get(H_TENANT_TIER),
            "host": headers.get(H_TENANT_HOST),
            "request_id": headers.get(H_REQUEST_ID),
            "issued_at": issued_at,
        })
    except (ValueError, InvalidModel):
        raise ContextError("malformed tenant context") from None
    if not hmac.compare_digest(digest, _signature(ctx, key)):
        raise ContextError("context signature does not verify")
    if ctx.tenant_id != tenant_id:
        raise ContextError("context is for another tenant")
    if issued_at > now + MAX_CLOCK_SKEW_SECONDS or now - issued_at > MAX_AGE_SECONDS:
        raise ContextError("context is stale")
    return ctx

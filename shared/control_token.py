"""Short-lived operator tokens for a tenant Worker's control endpoints (no I/O, stdlib only).

The operator's CLI (controlplane.meter) backs up and restores a tenant's UsageMeter through
that tenant's own Worker, reached the way traffic reaches it (the dispatcher, by host). It
proves itself with a token only the holder of the dispatcher's master secret can make:

    token = issue(derive_tenant_key(master, "acme"), "acme", "meter.read", now=time.time())
    verify(token, key=env.TENANT_CONTEXT_KEY, tenant_id="acme", op="meter.read", now=time.time())

`v1.<op>.<exp>.<hex HMAC-SHA256(tenant key, "cmgsite-control/v1|<tenant>|<op>|<exp>")>`.
The key is the tenant's TENANT_CONTEXT_KEY (shared.context.derive_tenant_key), so a token
for one tenant is refused by every other tenant's Worker, and one operation's token cannot
be used for another. A token lives at most MAX_TTL_SECONDS: what it allows is a read of the
meter or an idempotent restore of it, so a replay inside that window changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import re

VERSION = "v1"
MAX_TTL_SECONDS = 120
OPS = frozenset({"meter.read", "meter.restore"})
_TOKEN = re.compile(r"^v1\.([a-z]+\.[a-z]+)\.([0-9]{1,12})\.([0-9a-f]{64})$")


class ControlTokenError(Exception):
    """The token is missing, malformed, expired, for another tenant or another operation."""


def _signature(key: str, tenant_id: str, op: str, exp: int) -> str:
    message = f"cmgsite-control/{VERSION}|{tenant_id}|{op}|{exp}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def issue(key: str, tenant_id: str, op: str, *, now: float, ttl_seconds: int = 60) -> str:
    if op not in OPS:
        raise ValueError(f"unknown control operation {op!r}")
    if not key:
        raise ValueError("no tenant key")
    if not 1 <= ttl_seconds <= MAX_TTL_SECONDS:
        raise ValueError(f"ttl must be 1..{MAX_TTL_SECONDS} s")
    exp = int(now) + ttl_seconds
    return f"{VERSION}.{op}.{exp}.{_signature(key, tenant_id, op, exp)}"


def verify(token: str | None, *, key: str, tenant_id: str, op: str, now: float) -> None:
    m = _TOKEN.match(token or "")
    if m is None or not key:
        raise ControlTokenError("no valid control token")
    token_op, exp, sig = m.group(1), int(m.group(2)), m.group(3)
    if not hmac.compare_digest(sig, _signature(key, tenant_id, token_op, exp)):
        raise ControlTokenError("bad signature")
    if token_op != op:
        raise ControlTokenError("token for another operation")
    if exp <= now or exp - now > MAX_TTL_SECONDS + 5:
        raise ControlTokenError("token expired or too long-lived")

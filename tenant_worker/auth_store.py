"""Sign-in records shared by all isolates of a tenant: used OAuth states and session epochs.

Backed by the `AUTH_KV` Workers KV binding (one namespace for all tenant scripts; every key
starts with the tenant id). Locally the binding is localrt's SQLite KV (localrt.auth_kv).

- Used states: the signed state is checked first (signature, tenant, browser nonce, ten
  minutes); then its id is recorded here, and a second callback with it is refused. KV is
  eventually consistent across locations (up to ~60 s), so two callbacks racing through
  *different* data centres could both pass this check; the nonce cookie (only the starting
  browser has it) and the provider's own single-use codes close that gap. A Durable Object
  with the same two methods would make it strict; the interface is kept that small for it.
- Session epochs: after a role change or a sign-out, sessions of that user issued before
  the epoch are rotated (role) or refused (sign-out) by the session middleware.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from shared.session import SESSION_TTL_SECONDS

KV_MIN_TTL = 60  # Cloudflare refuses shorter expirationTtl values


class AuthStoreMissing(RuntimeError):
    """The tenant Worker has no AUTH_KV binding: sign-in cannot be made single-use."""


@dataclass(frozen=True)
class SessionEpoch:
    at: int
    kind: Literal["role", "signout"]


class AuthStore:
    def __init__(self, kv: Any, tenant_id: str) -> None:
        self._kv, self._tenant = kv, tenant_id

    @classmethod
    def of(cls, env: Any, tenant_id: str) -> "AuthStore":
        kv = getattr(env, "AUTH_KV", None)
        if kv is None:
            raise AuthStoreMissing("AUTH_KV binding missing")
        return cls(kv, tenant_id)

    async def consume_state(self, state_id: str, expires_at: int, now: float) -> bool:
        """True the first time a state id is presented, False on every replay."""
        key = f"{self._tenant}:oauth-state-used:{state_id}"
        if await self._kv.get(key) is not None:
            return False
        ttl = max(KV_MIN_TTL, int(expires_at - now) + 60)  # outlive the state itself
        await self._kv.put(key, "1", {"expirationTtl": ttl})
        return True

    async def set_epoch(self, user_id: str, kind: Literal["role", "signout"], now: float) -> None:
        key = f"{self._tenant}:session-epoch:{user_id}"
        value = json.dumps({"at": int(now), "kind": kind})
        await self._kv.put(key, value, {"expirationTtl": SESSION_TTL_SECONDS + 60})

    async def epoch(self, user_id: str) -> SessionEpoch | None:
        raw = await self._kv.get(f"{self._tenant}:session-epoch:{user_id}")
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            kind: Literal["role", "signout"] = "role" if data["kind"] == "role" else "signout"
            return SessionEpoch(int(data["at"]), kind)
        except (ValueError, KeyError, TypeError):
            return SessionEpoch(2**62, "signout")  # unreadable record: fail closed

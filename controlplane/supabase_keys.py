"""Supabase's Management API, the JWT signing key endpoints (`keys rotate jwt --remote`).

    GET   /v1/projects/{ref}/config/auth/signing-keys        -> {"keys": [SigningKey, ...]}
    POST  /v1/projects/{ref}/config/auth/signing-keys        {algorithm, status, private_jwk} -> SigningKey
    PATCH /v1/projects/{ref}/config/auth/signing-keys/{id}   {status} -> SigningKey

Bearer: a Supabase access token (SUPABASE_ACCESS_TOKEN, scope secrets:write). A key's states:
`standby` (made, not yet signing), `in_use` (Supabase Auth signs with it; moving a standby key
to `in_use` moves the previous one to `previously_used`), `previously_used` (still trusted),
`revoked` (refused). The platform imports its own HS256 keys (`private_jwk` of kty `oct`, the
key id chosen by us, a UUID, so the tenants' tokens carry the id Supabase knows the key by).

This module is the one adapter: the rest sees `SigningKeys`' methods and `SigningKey` models.
A refused call is `SupabaseApiError` (HTTP status, the API's message, never the request body,
which holds the key); an unreachable API is `BackendError`.
"""

from __future__ import annotations

import base64
from typing import Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from controlplane.errors import BackendError

API_BASE = "https://api.supabase.com"
TIMEOUT_SECONDS = 30.0
KeyStatus = Literal["in_use", "previously_used", "revoked", "standby"]


class SupabaseApiError(BackendError):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"Supabase Management API error (HTTP {status}): {message[:200]}")


class SigningKey(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    algorithm: str
    status: KeyStatus


class _KeyList(BaseModel):
    model_config = ConfigDict(extra="ignore")

    keys: list[SigningKey]


def project_ref(supabase_url: str) -> str | None:
    """`abcdefghijklmnopqrst` from https://abcdefghijklmnopqrst.supabase.co (a hosted project's URL)."""
    host = httpx.URL(supabase_url).host if supabase_url else ""
    ref, _, rest = host.partition(".")
    return ref if rest in ("supabase.co", "supabase.in") and ref.isalpha() and ref.islower() else None


class SigningKeys:
    """One project's JWT signing keys."""

    def __init__(
        self, ref: str, token: str, *, base_url: str = API_BASE, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._path = f"/v1/projects/{quote(ref, safe='')}/config/auth/signing-keys"
        self._client_args = {
            "base_url": base_url.rstrip("/"),
            "timeout": TIMEOUT_SECONDS,
            "headers": {"authorization": f"Bearer {token}", "accept": "application/json"},
            **({"transport": transport} if transport is not None else {}),
        }

    async def _call(self, method: str, path: str, body: dict[str, object] | None = None) -> object:
        try:
            async with httpx.AsyncClient(**self._client_args) as client:  # type: ignore[arg-type]
                r = await client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise BackendError(f"Supabase Management API unreachable: {type(exc).__name__}") from None
        if r.status_code >= 400:
            try:
                message = str(r.json().get("message") or r.text)
            except (ValueError, AttributeError):
                message = r.text
            raise SupabaseApiError(r.status_code, message)
        try:
            return r.json()
        except ValueError:
            raise BackendError(f"Supabase Management API: {method} {path} answered no JSON") from None

    async def list(self) -> list[SigningKey]:
        try:
            return _KeyList.model_validate(await self._call("GET", self._path)).keys
        except ValidationError:
            raise BackendError("Supabase Management API: the signing key list has an unexpected shape") from None

    async def create_hs256(self, kid: str, secret: str, status: KeyStatus = "standby") -> SigningKey:
        """Import an HS256 key (`secret` as its bytes, UTF-8) under the id `kid`."""
        k = base64.urlsafe_b64encode(secret.encode()).rstrip(b"=").decode()
        body: dict[str, object] = {
            "algorithm": "HS256",
            "status": status,
            "private_jwk": {"kty": "oct", "k": k, "kid": kid, "alg": "HS256"},
        }
        return self._key(await self._call("POST", self._path, body))

    async def set_status(self, kid: str, status: KeyStatus) -> SigningKey:
        return self._key(await self._call("PATCH", f"{self._path}/{quote(kid, safe='')}", {"status": status}))

    @staticmethod
    def _key(value: object) -> SigningKey:
        try:
            return SigningKey.model_validate(value)
        except ValidationError:
            raise BackendError("Supabase Management API: a signing key has an unexpected shape") from None

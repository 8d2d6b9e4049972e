"""Envelope encryption of tenant secrets with AES-256-GCM (format v1; docs/encryption.md).

    platform key (Worker secret PLATFORM_DATA_KEYS, a keyring)   wraps
      -> the tenant's data key (32 random bytes, row in tenant_data_keys)   encrypts
        -> each integration credential (row in integration_credentials)

One text format for both layers, stored in a `text` column:

    v1.<kid>.<base64url nonce (12 bytes)>.<base64url ciphertext || tag (16 bytes)>

`kid` names the key that sealed it: a platform key id for a wrapped data key, the data key's id
for a credential (it is also stored beside the value, in its own column). The associated data
binds every value to where it belongs, so a ciphertext copied to another tenant, another row
or presented under another key id fails to open:

    data key:   "cmgsite-dek-v1" 0x00 tenant_id 0x00 data_key_id 0x00 platform_kid
    credential: "cmgsite-secret-v1" 0x00 tenant_id 0x00 name 0x00 data_key_id

The AES itself is behind the `Aead` protocol: WebCrypto in the Worker
(tenant_worker/webcrypto.py), `cryptography` under CPython (controlplane/aead.py). This module
is pure logic (the standard library only) and is what both run.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Protocol

from shared.keys import KID_PATTERN, Keyring, KeyringError, b64url_decode, b64url_encode

VERSION = "v1"
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
MAX_SECRET_BYTES = 4096
_FORMAT = re.compile(r"^v1\.([a-z0-9][a-z0-9-]{0,31})\.([A-Za-z0-9_-]{16})\.([A-Za-z0-9_-]{22,})$")
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_KID = re.compile(KID_PATTERN)


class EnvelopeError(Exception):
    """A stored value cannot be opened. `code` says why, for the API's answer and the logs."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class UnknownKey(EnvelopeError):
    """Sealed under a key id this keyring does not hold (a retired or foreign platform key)."""

    def __init__(self, kid: str) -> None:
        super().__init__("unknown_key", f"sealed under key {kid!r}, which this keyring does not hold")
        self.kid = kid


class Aead(Protocol):
    """AES-256-GCM with a 96-bit nonce and a 128-bit tag. `open` raises EnvelopeError("tampered")
    when the tag does not verify (wrong key, wrong associated data, altered bytes)."""

    async def seal(self, key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes: ...

    async def open(self, key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes: ...


@dataclass(frozen=True)
class Sealed:
    kid: str
    nonce: bytes
    body: bytes  # ciphertext || tag

    def text(self) -> str:
        return f"{VERSION}.{self.kid}.{b64url_encode(self.nonce)}.{b64url_encode(self.body)}"


@dataclass(frozen=True)
class WrappedKey:
    data_key_id: str
    platform_key_id: str
    wrapped: str


def parse(text: str) -> Sealed:
    match = _FORMAT.match(text or "")
    if match is None:
        raise EnvelopeError("malformed", "not a v1 sealed value")
    try:
        nonce, body = b64url_decode(match.group(2)), b64url_decode(match.group(3))
    except ValueError:
        raise EnvelopeError("malformed", "not a v1 sealed value") from None
    if len(nonce) != NONCE_BYTES or len(body) < TAG_BYTES:
        raise EnvelopeError("malformed", "not a v1 sealed value")
    return Sealed(match.group(1), nonce, body)


def _join(*parts: str) -> bytes:
    return b"\x00".join(p.encode("utf-8") for p in parts)


def data_key_aad(tenant_id: str, data_key_id: str, platform_kid: str) -> bytes:
    return _join("cmgsite-dek-v1", tenant_id, data_key_id, platform_kid)


def secret_aad(tenant_id: str, name: str, data_key_id: str) -> bytes:
    return _join("cmgsite-secret-v1", tenant_id, name, data_key_id)


def new_data_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


async def _seal(aead: Aead, key: bytes, kid: str, plaintext: bytes, aad: bytes) -> str:
    if len(key) != KEY_BYTES:
        raise ValueError("AES-256 needs a 32-byte key")
    if not _KID.match(kid):
        raise ValueError("bad key id")
    nonce = secrets.token_bytes(NONCE_BYTES)  # random per value: 2^32 values per key stay far inside GCM's bound
    body = await aead.seal(key, nonce, plaintext, aad)
    return Sealed(kid, nonce, body).text()


async def wrap_data_key(aead: Aead, platform: Keyring, tenant_id: str, data_key_id: str, data_key: bytes) -> WrappedKey:
    """Seal a tenant's data key under the platform keyring's active key."""
    key = platform.active
    wrapped = await _seal(aead, key.key_bytes(), key.kid, data_key, data_key_aad(tenant_id, data_key_id, key.kid))
    return WrappedKey(data_key_id, key.kid, wrapped)


async def unwrap_data_key(aead: Aead, platform: Keyring, tenant_id: str, data_key_id: str, wrapped: str) -> bytes:
    """The tenant's data key. UnknownKey when its platform key is not in the keyring;
    EnvelopeError("tampered") when it was wrapped for another tenant or key id, or altered."""
    sealed = parse(wrapped)
    key = platform.get(sealed.kid, now=None)
    if key is None:
        raise UnknownKey(sealed.kid)
    try:
        raw = key.key_bytes()
    except KeyringError:
        raise EnvelopeError("bad_platform_key", f"platform key {sealed.kid!r} is not a 32-byte key") from None
    data_key = await aead.open(raw, sealed.nonce, sealed.body, data_key_aad(tenant_id, data_key_id, sealed.kid))
    if len(data_key) != KEY_BYTES:
        raise EnvelopeError("malformed", "a data key is 32 bytes")
    return data_key


async def rewrap_data_key(
    aead: Aead, platform: Keyring, tenant_id: str, data_key_id: str, wrapped: str
) -> WrappedKey | None:
    """The data key wrapped under the active platform key; None when it already is."""
    if parse(wrapped).kid == platform.active.kid:
        return None
    data_key = await unwrap_data_key(aead, platform, tenant_id, data_key_id, wrapped)
    return await wrap_data_key(aead, platform, tenant_id, data_key_id, data_key)


async def encrypt_secret(aead: Aead, data_key: bytes, data_key_id: str, tenant_id: str, name: str, value: str) -> str:
    plaintext = value.encode("utf-8")
    if len(plaintext) > MAX_SECRET_BYTES:
        raise ValueError(f"a secret holds at most {MAX_SECRET_BYTES} bytes")
    return await _seal(aead, data_key, data_key_id, plaintext, secret_aad(tenant_id, name, data_key_id))


async def decrypt_secret(
    aead: Aead, data_key: bytes, data_key_id: str, tenant_id: str, name: str, ciphertext: str
) -> str:
    sealed = parse(ciphertext)
    if sealed.kid != data_key_id:
        raise UnknownKey(sealed.kid)
    plaintext = await aead.open(data_key, sealed.nonce, sealed.body, secret_aad(tenant_id, name, data_key_id))
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise EnvelopeError("malformed", "a secret is UTF-8 text") from None

"""shared.envelope.Aead under CPython, with `cryptography` (the tooling side: the control plane's
key rotation, tests). The Worker's twin is tenant_worker/webcrypto.py; both speak format v1."""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.envelope import EnvelopeError


class CryptographyAead:
    async def seal(self, key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        return AESGCM(key).encrypt(nonce, plaintext, aad)

    async def open(self, key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
        try:
            return AESGCM(key).decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise EnvelopeError("tampered", "the value does not open under this key and binding") from None

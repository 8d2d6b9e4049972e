"""shared.rs256.RsaVerifier on CPython: the `cryptography` library (OpenSSL), for the unit tests.

The Worker's verifier is tenant_worker.webcrypto.WebCryptoRsaVerifier (crypto.subtle); both
take the same RsaPublicKey and answer the same question, so the logic around them is tested here.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from shared.rs256 import RsaPublicKey, b64url_decode


class CryptographyRsaVerifier:
    def __init__(self) -> None:
        self.calls = 0

    async def verify(self, key: RsaPublicKey, message: bytes, signature: bytes) -> bool:
        self.calls += 1
        numbers = rsa.RSAPublicNumbers(
            int.from_bytes(b64url_decode(key.e), "big"), int.from_bytes(b64url_decode(key.n), "big")
        )
        try:
            numbers.public_key().verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return False
        return True

"""RS256 JWS verification (Google's ID tokens against Google's JWKS), without RSA arithmetic of our own.

This module parses the token, refuses every algorithm but RS256, picks the key by `kid` and
checks the key's shape; the RSASSA-PKCS1-v1_5 / SHA-256 check itself (RFC 8017 section 8.2.2)
is done by the runtime's crypto library through the `RsaVerifier` protocol:

    in the Worker   tenant_worker.webcrypto.WebCryptoRsaVerifier   (crypto.subtle.verify, BoringSSL)
    on CPython      tests.rsa_verifier.CryptographyRsaVerifier     (cryptography, OpenSSL)

    keys = keys_from_jwks(jwks_json)
    header, claims = await verify_rs256(token, keys, verifier)

Only time-independent checks happen here; the caller checks iss/aud/exp/nonce.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

from shared.json_depth import exceeds_depth
from shared.keys import b64url_decode as _b64url_decode

_MAX_SEGMENT_DEPTH = 16
MIN_MODULUS_BITS = 2048
MAX_MODULUS_BITS = 8192


class SignatureError(ValueError):
    """The token is malformed, uses another algorithm, names an unknown key or does not verify."""


def b64url_decode(part: str) -> bytes:
    try:
        return _b64url_decode(part)  # shared.keys: the one base64url
    except ValueError:
        raise SignatureError("malformed base64url") from None


@dataclass(frozen=True)
class RsaPublicKey:
    """One RS256 signing key of a JWKS: `n` and `e` as the JWK carries them (base64url, big-endian)."""

    kid: str
    n: str
    e: str
    size: int  # modulus length in bytes: the only signature length that can verify

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> "RsaPublicKey":
        if jwk.get("kty") != "RSA" or jwk.get("alg", "RS256") != "RS256" or jwk.get("use", "sig") != "sig":
            raise SignatureError("not an RS256 signing key")
        n_raw, e_raw = b64url_decode(str(jwk.get("n", ""))), b64url_decode(str(jwk.get("e", "")))
        bits = int.from_bytes(n_raw, "big").bit_length()
        e = int.from_bytes(e_raw, "big")
        if not MIN_MODULUS_BITS <= bits <= MAX_MODULUS_BITS or e < 3 or e % 2 == 0 or len(e_raw) > 8:
            raise SignatureError("weak or malformed RSA key")
        return cls(str(jwk.get("kid", "")), str(jwk["n"]), str(jwk["e"]), (bits + 7) // 8)

    def jwk(self) -> dict[str, str]:
        """The public key as a minimal JWK (what WebCrypto's importKey("jwk") takes)."""
        return {"kty": "RSA", "n": self.n, "e": self.e, "alg": "RS256"}


class RsaVerifier(Protocol):
    """RSASSA-PKCS1-v1_5 with SHA-256: True only if `signature` is `key`'s over `message`."""

    async def verify(self, key: RsaPublicKey, message: bytes, signature: bytes) -> bool: ...


def keys_from_jwks(jwks: Any) -> list[RsaPublicKey]:
    """The usable RS256 keys of a JWKS document; others are skipped, not trusted."""
    out: list[RsaPublicKey] = []
    for jwk in (jwks or {}).get("keys", []) if isinstance(jwks, dict) else []:
        try:
            out.append(RsaPublicKey.from_jwk(jwk))
        except (SignatureError, AttributeError):
            continue
    return out


def parse_rs256(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """(header, claims, signing input, signature) of a well-formed RS256 JWS; nothing verified yet."""
    if not isinstance(token, str) or len(token) > 16384:
        raise SignatureError("token missing or too large")
    parts = token.split(".")
    if len(parts) != 3:
        raise SignatureError("a JWS has three segments")
    try:
        segments = [b64url_decode(part).decode("utf-8") for part in parts[:2]]
    except (ValueError, UnicodeDecodeError):
        raise SignatureError("segment is not JSON") from None
    if any(exceeds_depth(segment, _MAX_SEGMENT_DEPTH) for segment in segments):  # parsed before the signature check
        raise SignatureError("segment nested too deeply")
    try:
        header, claims = (json.loads(segment) for segment in segments)
    except ValueError:
        raise SignatureError("segment is not JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise SignatureError("segment is not a JSON object")
    if header.get("alg") != "RS256":  # refuses none, HS256-with-public-key confusion, etc.
        raise SignatureError(f"algorithm {header.get('alg')!r} not accepted")
    return header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), b64url_decode(parts[2])


async def verify_rs256(
    token: str, keys: Sequence[RsaPublicKey], verifier: RsaVerifier
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a token signed by one of `keys`; SignatureError otherwise.

    "unknown key id" (a `kid` that none of `keys` has) is the caller's cue to refetch the JWKS once.
    """
    header, claims, message, signature = parse_rs256(token)
    kid = header.get("kid")
    candidates = [k for k in keys if k.kid == kid] if kid else list(keys)
    if not candidates:
        raise SignatureError("unknown key id")
    for key in candidates:
        if len(signature) == key.size and await verifier.verify(key, message, signature):
            return header, claims
    raise SignatureError("signature does not verify")

"""RS256 JWS verification in pure Python (pow()), so it runs inside a Worker as under CPython.

Used for Google's ID tokens against Google's JWKS. RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017
section 8.2.2): the signature, raised to e mod n, must equal the exact DER-encoded digest
block we build ourselves; comparing whole blocks avoids parsing attacker-shaped padding.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from shared.json_depth import exceeds_depth
from shared.keys import b64url_decode as _b64url_decode

_MAX_SEGMENT_DEPTH = 16
# DigestInfo prefix for SHA-256 (RFC 8017 section 9.2, note 1).
_SHA256_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")
MIN_MODULUS_BITS = 2048


class SignatureError(ValueError):
    """The token is malformed, uses another algorithm, names an unknown key or does not verify."""


def b64url_decode(part: str) -> bytes:
    try:
        return _b64url_decode(part)  # shared.keys: the one base64url
    except ValueError:
        raise SignatureError("malformed base64url") from None


@dataclass(frozen=True)
class RsaPublicKey:
    kid: str
    n: int
    e: int

    @property
    def size(self) -> int:
        return (self.n.bit_length() + 7) // 8

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> "RsaPublicKey":
        if jwk.get("kty") != "RSA" or jwk.get("alg", "RS256") != "RS256" or jwk.get("use", "sig") != "sig":
            raise SignatureError("not an RS256 signing key")
        n = int.from_bytes(b64url_decode(str(jwk.get("n", ""))), "big")
        e = int.from_bytes(b64url_decode(str(jwk.get("e", ""))), "big")
        if n.bit_length() < MIN_MODULUS_BITS or e < 3 or e % 2 == 0:
            raise SignatureError("weak or malformed RSA key")
        return cls(str(jwk.get("kid", "")), n, e)


def keys_from_jwks(jwks: Any) -> list[RsaPublicKey]:
    """The usable RS256 keys of a JWKS document; others are skipped, not trusted."""
    out: list[RsaPublicKey] = []
    for jwk in (jwks or {}).get("keys", []) if isinstance(jwks, dict) else []:
        try:
            out.append(RsaPublicKey.from_jwk(jwk))
        except SignatureError:
            continue
    return out


def _pkcs1_v15_block(digest: bytes, size: int) -> bytes:
    t = _SHA256_PREFIX + digest
    if size < len(t) + 11:
        raise SignatureError("key too small")
    return b"\x00\x01" + b"\xff" * (size - len(t) - 3) + b"\x00" + t


def verify_rs256(token: str, keys: Sequence[RsaPublicKey]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a token signed by one of `keys`; SignatureError otherwise.

    Only time-independent checks happen here; the caller checks iss/aud/exp/nonce.
    """
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
    kid = header.get("kid")
    candidates = [k for k in keys if k.kid == kid] if kid else list(keys)
    if not candidates:
        raise SignatureError("unknown key id")
    sig = b64url_decode(parts[2])
    digest = hashlib.sha256(f"{parts[0]}.{parts[1]}".encode("ascii")).digest()
    for key in candidates:
        if len(sig) != key.size:
            continue
        s = int.from_bytes(sig, "big")
        if s >= key.n:
            continue
        em = pow(s, key.e, key.n).to_bytes(key.size, "big")
        if hmac.compare_digest(em, _pkcs1_v15_block(digest, key.size)):
            return header, claims
    raise SignatureError("signature does not verify")

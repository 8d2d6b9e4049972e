"""WebCrypto (`crypto.subtle`) for the tenant Worker: shared.envelope.Aead (AES-256-GCM) and
shared.rs256.RsaVerifier (RS256 signatures of Google's ID tokens).

The only module of the tenant Worker that touches `crypto.subtle`; bytes go in and come out, no
JsProxy leaves it. The JS the AEAD runs, per call:

    const key = await crypto.subtle.importKey("raw", keyBytes, "AES-GCM", false, ["encrypt"]);
    const out = await crypto.subtle.encrypt({name: "AES-GCM", iv, additionalData, tagLength: 128}, key, data);

A tag that does not verify makes `decrypt` reject with an OperationError: EnvelopeError("tampered").
"""

from __future__ import annotations

import json
import logging
from typing import Any

from js import Object, Uint8Array, crypto
from pyodide.ffi import JsException, to_js

from shared.envelope import EnvelopeError
from shared.rs256 import RsaPublicKey

log = logging.getLogger("cmgsite.tenant.webcrypto")


def _u8(data: bytes) -> Any:
    array = Uint8Array.new(len(data))
    array.assign(data)
    return array


def _params(nonce: bytes, aad: bytes) -> Any:
    return to_js(
        {"name": "AES-GCM", "iv": _u8(nonce), "additionalData": _u8(aad), "tagLength": 128},
        dict_converter=Object.fromEntries,
    )


async def _key(key: bytes, usage: str) -> Any:
    return await crypto.subtle.importKey("raw", _u8(key), "AES-GCM", False, to_js([usage]))


class WebCryptoAead:
    async def seal(self, key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        out = await crypto.subtle.encrypt(_params(nonce, aad), await _key(key, "encrypt"), _u8(plaintext))
        return bytes(out.to_bytes())

    async def open(self, key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
        try:
            out = await crypto.subtle.decrypt(_params(nonce, aad), await _key(key, "decrypt"), _u8(sealed))
        except JsException:
            raise EnvelopeError("tampered", "the value does not open under this key and binding") from None
        return bytes(out.to_bytes())


class WebCryptoRsaVerifier:
    """shared.rs256.RsaVerifier on the Workers runtime: RSASSA-PKCS1-v1_5 / SHA-256 through WebCrypto.

        const key = await crypto.subtle.importKey("jwk", {kty: "RSA", n, e, alg: "RS256"},
                                                  {name: "RSASSA-PKCS1-v1_5", hash: "SHA-256"}, false, ["verify"]);
        const ok = await crypto.subtle.verify("RSASSA-PKCS1-v1_5", key, signature, message);

    Imported keys are kept per (n, e) for the isolate's life (a JWKS holds two or three keys).
    A key the runtime refuses to import verifies nothing (False), as does a wrong signature.
    """

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str], Any] = {}

    async def _key(self, key: RsaPublicKey) -> Any:
        found = self._keys.get((key.n, key.e))
        if found is None:
            algorithm = to_js({"name": "RSASSA-PKCS1-v1_5", "hash": "SHA-256"}, dict_converter=Object.fromEntries)
            jwk = to_js(key.jwk(), dict_converter=Object.fromEntries)
            found = await crypto.subtle.importKey("jwk", jwk, algorithm, False, to_js(["verify"]))
            if len(self._keys) >= 16:
                self._keys.clear()
            self._keys[(key.n, key.e)] = found
        return found

    async def verify(self, key: RsaPublicKey, message: bytes, signature: bytes) -> bool:
        try:
            ok = await crypto.subtle.verify("RSASSA-PKCS1-v1_5", await self._key(key), _u8(signature), _u8(message))
        except JsException as exc:  # a key the runtime will not import (logged: no secret in a public key)
            log.warning(json.dumps({"event": "rs256_key_refused", "kid": key.kid[:64], "error": str(exc)[:200]}))
            return False
        return ok is True

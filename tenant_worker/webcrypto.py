"""shared.envelope.Aead on the Workers runtime: AES-256-GCM through WebCrypto (`crypto.subtle`).

The only module of the tenant Worker that touches `crypto.subtle`; bytes go in and come out, no
JsProxy leaves it. The JS it runs, per call:

    const key = await crypto.subtle.importKey("raw", keyBytes, "AES-GCM", false, ["encrypt"]);
    const out = await crypto.subtle.encrypt({name: "AES-GCM", iv, additionalData, tagLength: 128}, key, data);

A tag that does not verify makes `decrypt` reject with an OperationError: EnvelopeError("tampered").
"""
from __future__ import annotations

from typing import Any

from js import Object, Uint8Array, crypto
from pyodide.ffi import JsException, to_js

from shared.envelope import EnvelopeError


def _u8(data: bytes) -> Any:
    array = Uint8Array.new(len(data))
    array.assign(data)
    return array


def _params(nonce: bytes, aad: bytes) -> Any:
    return to_js({"name": "AES-GCM", "iv": _u8(nonce), "additionalData": _u8(aad), "tagLength": 128},
                 dict_converter=Object.fromEntries)


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

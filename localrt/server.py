"""The local edge: an ASGI app (served by uvicorn) that hands each request to the dispatcher."""
from __future__ import annotations

import json
import logging
import re
from typing import Any

import js

from localrt.platform import Platform

log = logging.getLogger("cmgsite.localrt")
MAX_BODY_BYTES = 10 * 1024 * 1024
_SAFE_HOST = re.compile(r"^[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?$")


def _plain(status: int, message: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = json.dumps({"error": {"code": "bad_request", "message": message, "request_id": "edge"}}).encode()
    return status, [(b"content-type", b"application/json")], body


class EdgeApp:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.platform.drain()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        status, headers, body = await self._serve(scope, receive)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body if scope["method"] != "HEAD" else b""})

    async def _serve(self, scope: dict[str, Any], receive: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return _plain(400, "client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return _plain(413, "request body too large")
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        raw_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        host = next((v for k, v in raw_headers if k.lower() == "host"), "")
        url_host = host if _SAFE_HOST.match(host) else "invalid.localhost"
        path = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        query = scope.get("query_string", b"").decode("latin-1")
        url = f"http://{url_host}{path}" + (f"?{query}" if query else "")
        try:
            request = js.Request.new(url, method=scope["method"], headers=raw_headers,
                                     body=b"".join(chunks) if scope["method"] not in ("GET", "HEAD") else None)
        except TypeError as exc:
            return _plain(400, str(exc))
        try:
            response = await self.platform.handle(request)
        except Exception:
            log.exception("dispatcher crashed")
            return _plain(500, "internal error in the local runtime")
        out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.raw_items()]
        return response.status, out, response.body or b""

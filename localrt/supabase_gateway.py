"""A thin local stand-in for Supabase's API gateway, in front of a real PostgREST.

What it does, as Supabase's gateway does for the data API:
  * serves PostgREST under `/rest/v1/` (anything else: 404);
  * requires the `apikey` header (or `?apikey=` query parameter) to be one of the project's
    keys (anon or service_role): missing -> 401 "No API key found in request", unknown ->
    401 "Invalid API key";
  * when no `Authorization` header is sent, forwards the apikey as the bearer token, so an
    anon-key call runs as `anon` and a service-key call as `service_role`;
  * combines repeated `Prefer` headers into one, so the database's pre-request guard sees
    every preference PostgREST applies (see _combine_prefer; whether hosted Supabase's
    gateway does the same is not known: docs/supabase-data-layer.md).
Everything else (JWT verification, roles, RLS) is PostgREST's and Postgres's job.

It is a plain ASGI app (no framework), proxying with httpx; served by uvicorn:
    SUPABASE_GATEWAY_UPSTREAM=http://127.0.0.1:3000 SUPABASE_GATEWAY_API_KEYS=key1,key2 \
    python -m uvicorn --factory localrt.supabase_gateway:app_from_env --port 54321
Dev/test tooling only.
"""

from __future__ import annotations

import hmac
import json
import os
from typing import Any, Awaitable, Callable, Iterable
from urllib.parse import parse_qsl, urlencode

import httpx

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REST_PREFIX = "/rest/v1"
# Hop-by-hop and framing headers are the proxy's own business, never forwarded.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "accept-encoding",
}


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _combine_prefer(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Repeated `Prefer` headers as one comma-separated header (RFC 9110 5.3; Prefer is a list).

    PostgREST reads preferences from every Prefer header but shows the database only the last
    one (`request.headers`), so the pre-request guard could not see `count=planned` in an
    earlier one. A Worker's `Headers` combines repeated headers the same way.
    """
    values = [v for k, v in headers if k == "prefer"]
    if len(values) < 2:
        return headers
    rest = [(k, v) for k, v in headers if k != "prefer"]
    return [*rest, ("prefer", ", ".join(values))]


def create_app(upstream: str, api_keys: Iterable[str]) -> ASGIApp:
    """The gateway ASGI app for one PostgREST `upstream` and the project's API keys."""
    keys = [k.encode() for k in api_keys if k]
    upstream = upstream.rstrip("/")
    state: dict[str, httpx.AsyncClient] = {}

    def known_key(candidate: str) -> bool:
        cand = candidate.encode()
        # Compare against every key so timing does not say which one nearly matched.
        return any([hmac.compare_digest(cand, k) for k in keys])

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    state["client"] = httpx.AsyncClient(timeout=30.0, limits=httpx.Limits(max_connections=100))
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if "client" in state:
                        await state.pop("client").aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return

        path: str = scope["path"]
        if path != REST_PREFIX and not path.startswith(REST_PREFIX + "/"):
            await _send_json(send, 404, {"message": "no Route matched with those values"})
            return

        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        apikey = next((v for k, v in headers if k == "apikey"), None) or next(
            (v for k, v in query if k == "apikey"), None
        )
        if not apikey:
            await _send_json(
                send,
                401,
                {
                    "message": "No API key found in request",
                    "hint": "No `apikey` request header or url param was found.",
                },
            )
            return
        if not known_key(apikey):
            await _send_json(
                send,
                401,
                {
                    "message": "Invalid API key",
                    "hint": "Double check your Supabase `anon` or `service_role` API key.",
                },
            )
            return

        forward = _combine_prefer([(k, v) for k, v in headers if k not in _HOP_BY_HOP])
        if not any(k == "authorization" for k, _ in forward):
            forward.append(("authorization", f"Bearer {apikey}"))
        # The key is the gateway's credential, not a PostgREST filter.
        query = [(k, v) for k, v in query if k != "apikey"]
        url = upstream + (path[len(REST_PREFIX) :] or "/")
        if query:
            url += "?" + urlencode(query)
        body = await _read_body(receive)

        client = state.get("client")
        if client is None:  # served without lifespan support
            client = state["client"] = httpx.AsyncClient(timeout=30.0)
        try:
            resp = await client.request(scope["method"], url, headers=forward, content=body)
        except httpx.HTTPError:
            await _send_json(send, 502, {"message": "An invalid response was received from the upstream server"})
            return
        out = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in resp.headers.multi_items()
            if k.lower() not in _HOP_BY_HOP and k.lower() != "content-encoding"
        ]
        out.append((b"content-length", str(len(resp.content)).encode()))
        await send({"type": "http.response.start", "status": resp.status_code, "headers": out})
        await send({"type": "http.response.body", "body": resp.content})

    return app


def app_from_env() -> ASGIApp:
    """uvicorn --factory entry: upstream and keys from the environment."""
    return create_app(
        os.environ["SUPABASE_GATEWAY_UPSTREAM"],
        os.environ["SUPABASE_GATEWAY_API_KEYS"].split(","),
    )

"""Outbound HTTP for Workers on the local runtime: the `fetch` stand-in's transport."""
from __future__ import annotations

import asyncio

import httpx

import js
from pyodide.ffi import JsException

_clients: dict[int, httpx.AsyncClient] = {}


def _client() -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    client = _clients.get(id(loop))
    if client is None or client.is_closed:
        client = _clients[id(loop)] = httpx.AsyncClient(timeout=15.0, follow_redirects=False)
    return client


async def outbound_fetch(request: js.Request) -> js.Response:
    try:
        resp = await _client().request(
            request.method, request.url, headers=request.headers.raw_items(), content=request.body,
        )
    except httpx.HTTPError as exc:
        # workerd surfaces network failures as a JS TypeError: "Network connection lost." etc.
        raise JsException(f"fetch failed: {type(exc).__name__}", "TypeError") from None
    headers = [(k, v) for k, v in resp.headers.multi_items() if k.lower() not in ("content-encoding", "transfer-encoding", "content-length")]
    out = js.Response.new(resp.content, {"status": resp.status_code, "headers": headers})
    out.url = str(resp.url)
    return out

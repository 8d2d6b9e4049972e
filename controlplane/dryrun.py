"""Dry-run at the HTTP edge: reads are sent, writes are printed exactly as they would be sent.

Wrapping the HTTP client (not the logic) means the printed request is the one the real
client builds: same URL, query string and JSON body (credentials are never printed).
Supabase's PostgREST calls go through `DryRunHttp` (our HttpClient); Cloudflare's API goes
through the official SDK, whose httpx transport is `DryRunTransport`.
"""

from __future__ import annotations

import json
import re
from typing import Callable

import httpx

from controlplane.output import Reporter
from shared.outbound_http import HttpClient, HttpResponse

# Builds the response a write would have returned, so the logic after it runs on.
FakeReply = Callable[[str, str, bytes | None], HttpResponse]


def echo_rows(method: str, url: str, body: bytes | None) -> HttpResponse:
    """PostgREST's `return=representation`: the written rows (the request body) or none."""
    if method in ("POST", "PATCH") and body:
        data = json.loads(body)
        return HttpResponse(
            201, {"content-type": "application/json"}, json.dumps(data if isinstance(data, list) else [data]).encode()
        )
    return HttpResponse(200, {"content-type": "application/json"}, b"[]")


class DryRunHttp:
    def __init__(
        self, inner: HttpClient | None, reporter: Reporter, kind: str, fake_reply: FakeReply = echo_rows
    ) -> None:
        self._inner, self._reporter, self._kind, self._fake = inner, reporter, kind, fake_reply

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = 10.0,
    ) -> HttpResponse:
        if method == "GET" and self._inner is not None:
            return await self._inner.request(method, url, headers=headers, body=body, timeout=timeout)
        shown = f"{method} {url}"
        if body:
            shown += " " + body.decode("utf-8", "replace")
        self._reporter.plan(self._kind, shown)
        return self._fake(method, url, body)


# ---- Cloudflare's API: dry-run at the SDK's httpx transport ---------------------------------
_D1_QUERY = re.compile(r"/d1/database/[^/]+/(query|raw)$")


def d1_statements(body: bytes) -> list[str] | None:
    """The SQL of a D1 query request ({"sql"} or {"batch": [{"sql"}, ...]}), or None if it is not one."""
    try:
        data = json.loads(body or b"null")
    except ValueError:
        return None
    queries = data.get("batch") if isinstance(data, dict) and "batch" in data else [data]
    if not isinstance(queries, list) or not all(isinstance(q, dict) and isinstance(q.get("sql"), str) for q in queries):
        return None
    return [q["sql"] for q in queries]


def is_read(method: str, path: str, body: bytes) -> bool:
    """A request that changes nothing: a GET, or a D1 query whose every statement is one SELECT."""
    if method in ("GET", "HEAD"):
        return True
    if method != "POST" or not _D1_QUERY.search(path):
        return False
    statements = d1_statements(body)
    return bool(statements) and all(
        s.strip().upper().startswith("SELECT") and ";" not in s.strip().rstrip(";") for s in statements or []
    )


def _envelope(
    result: object,
    status: int = 200,
    *,
    errors: list[dict[str, object]] | None = None,
    info: dict[str, object] | None = None,
) -> tuple[int, dict[str, object]]:
    out: dict[str, object] = {"success": not errors, "errors": errors or [], "messages": [], "result": result}
    if info is not None:
        out["result_info"] = info
    return status, out


def cloudflare_write_reply(method: str, path: str, body: bytes) -> tuple[int, dict[str, object]]:
    """What Cloudflare's API would answer a write with (its envelope), so the logic after it runs on:
    a new custom hostname is pending, a D1 batch changed nothing that is read back."""
    if method == "POST" and path.endswith("/custom_hostnames"):
        sent = json.loads(body or b"{}")
        return _envelope(
            {
                **sent,
                "id": "dry-run",
                "status": "pending",
                "ssl": {**(sent.get("ssl") or {}), "status": "initializing"},
            },
            201,
        )
    statements = d1_statements(body) if _D1_QUERY.search(path) else None
    if statements is not None:
        return _envelope([{"results": [], "success": True, "meta": {"changes": 0}} for _ in statements])
    return _envelope(None)


def cloudflare_unread_reply(method: str, path: str, body: bytes) -> tuple[int, dict[str, object]]:
    """A read that could not be made, answered as if Cloudflare held nothing: empty lists and
    D1 results, and 404 for a single object (a script, a KV value)."""
    statements = d1_statements(body) if _D1_QUERY.search(path) else None
    if statements is not None:
        return _envelope([{"results": [], "success": True, "meta": {}} for _ in statements])
    if path.endswith("/custom_hostnames"):
        return _envelope([], info={"page": 1, "per_page": 50, "count": 0, "total_count": 0, "total_pages": 1})
    if path.endswith("/keys"):
        return _envelope([], info={"count": 0, "cursor": ""})
    return _envelope(None, 404, errors=[{"code": 0, "message": "not read (dry run)"}])


class DryRunTransport(httpx.AsyncBaseTransport):
    """The Cloudflare SDK's transport in a dry run: reads are sent; every write is printed as
    "would METHOD url body" exactly as the SDK built it (never its credentials) and answered
    with Cloudflare's envelope. A read that cannot be made (no network, credentials refused)
    is answered as if Cloudflare held nothing, after one warning: the dry run then shows every
    write that could be needed, which is what an offline plan can honestly show."""

    def __init__(self, inner: httpx.AsyncBaseTransport, reporter: Reporter, kind: str = "cloudflare api") -> None:
        self._inner, self._reporter, self._kind = inner, reporter, kind
        self._warned = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        method, path = request.method, request.url.path
        if is_read(method, path, body):
            try:
                response = await self._inner.handle_async_request(request)
            except httpx.TransportError as exc:
                return self._unread(request, body, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            if response.status_code not in (401, 403):
                return response
            await response.aread()
            await response.aclose()
            return self._unread(request, body, f"HTTP {response.status_code} (the credentials were refused)")
        shown = f"would {method} {request.url}"
        if body:
            shown += " " + body.decode("utf-8", "replace")
        self._reporter.plan(self._kind, shown)
        status, payload = cloudflare_write_reply(method, path, body)
        return httpx.Response(status, json=payload, request=request)

    def _unread(self, request: httpx.Request, body: bytes, reason: str) -> httpx.Response:
        if not self._warned:
            self._warned = True
            self._reporter.warn(
                f"cannot read Cloudflare's API ({reason}): this dry run goes on as if Cloudflare "
                "held nothing yet, so it shows every write that could be needed"
            )
        status, payload = cloudflare_unread_reply(request.method, request.url.path, body)
        return httpx.Response(status, json=payload, request=request)

    async def aclose(self) -> None:
        await self._inner.aclose()

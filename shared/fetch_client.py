"""shared.outbound_http.HttpClient over the runtime's own `fetch` (the `workers` module), for both
Workers: the tenant Worker's Supabase, DNS-over-HTTPS and OAuth calls, the dispatcher's cron
work (health checks, alert webhooks). The dispatcher's request path never uses it (requests go
to tenants through the dispatch namespace).

pyodide-http's patched requests/urllib need synchronous XMLHttpRequest, which Workers lack;
this is the way out of a Worker. It imports `workers`, so it runs only inside a Worker (tests
on CPython that read modules importing it use tests/cpython_imports.py)."""

from __future__ import annotations

import asyncio

from workers import fetch

from shared.outbound_http import HttpError, HttpResponse


class FetchClient:
    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = 10.0,
    ) -> HttpResponse:
        options: dict[str, object] = {"method": method, "headers": dict(headers or {})}
        if body is not None:
            options["body"] = body
        try:
            resp = await asyncio.wait_for(fetch(url, **options), timeout)
            data = await resp.bytes()
        except Exception as exc:  # a timeout, or the runtime's network error (a JS exception)
            raise HttpError(f"{method} {url.split('?')[0]} failed: {type(exc).__name__}") from None
        return HttpResponse(resp.status, {k.lower(): v for k, v in resp.headers.items()}, data)

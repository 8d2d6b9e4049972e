"""shared.http.HttpClient over the runtime's own `fetch` (the `workers` module).

pyodide-http's patched requests/urllib need synchronous XMLHttpRequest, which Workers
lack; this is the only way out of a tenant Worker. On the local runtime the same
`workers.fetch` is the stand-in's, which sends real HTTP.
"""
from __future__ import annotations

import asyncio

from workers import fetch

from shared.http import HttpError, HttpResponse


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
        except (OSError, asyncio.TimeoutError) as exc:
            raise HttpError(f"{method} {url.split('?')[0]} failed: {type(exc).__name__}") from None
        return HttpResponse(resp.status, {k.lower(): v for k, v in resp.headers.items()}, data)

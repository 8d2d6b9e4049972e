"""shared.http.HttpClient over the runtime's own `fetch`, for the dispatcher's cron work (the
health checks' Supabase calls and alert webhooks). The request path never uses it: requests
go to tenants through the dispatch namespace (dispatcher.namespace). The same shape as
tenant_worker/fetch_client.py; a Worker's package may not import another Worker's.
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
        except Exception as exc:  # the runtime's network errors surface as JS exceptions
            raise HttpError(f"{method} {url.split('?')[0]} failed: {type(exc).__name__}") from None
        return HttpResponse(resp.status, {k.lower(): v for k, v in resp.headers.items()}, data)

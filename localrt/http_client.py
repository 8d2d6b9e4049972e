"""shared.outbound_http.HttpClient under CPython, on httpx.AsyncClient (local runtime and tests only).

    async with HttpxClient() as http:
        resp = await http.request("GET", url, headers={...}, timeout=5.0)

Transport failures (refused connection, timeout, DNS) become shared.outbound_http.HttpError, so the
core handles them the same way as the Workers `fetch` client's failures.
"""

from __future__ import annotations

from types import TracebackType

import httpx

from shared.outbound_http import HttpError, HttpResponse


class HttpxClient:
    """One pooled httpx.AsyncClient; redirects are not followed (as with fetch's "manual")."""

    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        self._client = client or httpx.AsyncClient(follow_redirects=False)

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = 10.0,
    ) -> HttpResponse:
        try:
            resp = await self._client.request(method, url, headers=headers, content=body, timeout=timeout)
        except httpx.HTTPError as exc:  # TransportError, TimeoutException, …
            raise HttpError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        return HttpResponse(
            status=resp.status_code,
            headers={k.lower(): v for k, v in resp.headers.items()},
            body=resp.content,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> "HttpxClient":
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

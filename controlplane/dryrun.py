"""Dry-run at the HTTP edge: reads are sent, writes are printed exactly as they would be sent.

Wrapping the HttpClient (not the logic) means the printed request is the one the real
client builds: same URL, query string and JSON body (credentials are never printed).
"""
from __future__ import annotations

import json
from typing import Callable

from controlplane.output import Reporter
from shared.http import HttpClient, HttpResponse

# Builds the response a write would have returned, so the logic after it runs on.
FakeReply = Callable[[str, str, bytes | None], HttpResponse]


def echo_rows(method: str, url: str, body: bytes | None) -> HttpResponse:
    """PostgREST's `return=representation`: the written rows (the request body) or none."""
    if method in ("POST", "PATCH") and body:
        data = json.loads(body)
        return HttpResponse(201, {"content-type": "application/json"}, json.dumps(data if isinstance(data, list) else [data]).encode())
    return HttpResponse(200, {"content-type": "application/json"}, b"[]")


class DryRunHttp:
    def __init__(self, inner: HttpClient | None, reporter: Reporter, kind: str,
                 fake_reply: FakeReply = echo_rows) -> None:
        self._inner, self._reporter, self._kind, self._fake = inner, reporter, kind, fake_reply

    async def request(self, method: str, url: str, *, headers: dict[str, str] | None = None,
                      body: bytes | None = None, timeout: float = 10.0) -> HttpResponse:
        if method == "GET" and self._inner is not None:
            return await self._inner.request(method, url, headers=headers, body=body, timeout=timeout)
        shown = f"{method} {url}"
        if body:
            shown += " " + body.decode("utf-8", "replace")
        self._reporter.plan(self._kind, shown)
        return self._fake(method, url, body)

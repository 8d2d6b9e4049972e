"""The one HTTP edge the core speaks through.

On Cloudflare the tenant Worker hands the core a client built on the runtime's own
`fetch` (shared.fetch_client); under CPython the local runtime and the tests hand
it one built on httpx (localrt.http_client). Code that builds requests never knows which.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class HttpError(Exception):
    """The request did not produce a response (connection refused, timeout, DNS)."""


class HttpClient(Protocol):
    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = 10.0,
    ) -> HttpResponse:
        """Send one request; raise HttpError when no response arrives."""
        ...

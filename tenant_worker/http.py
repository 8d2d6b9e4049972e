"""What a tenant Worker handler sees and returns: plain Python, no runtime objects."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs

from shared.errors import Branding, error_reply
from shared.models import TenantContext

MAX_BODY_BYTES = 1024 * 1024


class ApiError(Exception):
    """Raised by handlers; becomes `{"error": {...}}` (or a branded page off /api)."""

    def __init__(self, status: int, code: str, message: str, *, extra: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.extra = extra or {}
        self.headers = headers or {}


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    cookies: list[str] = field(default_factory=list)  # full Set-Cookie values


def json_reply(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(data, default=str).encode(), {"content-type": "application/json", **(headers or {})})


def html_reply(page: str, status: int = 200) -> Reply:
    return Reply(status, page.encode(), {"content-type": "text/html; charset=utf-8"})


def redirect_reply(location: str, status: int = 302) -> Reply:
    return Reply(status, b"", {"location": location, "cache-control": "no-store"})


def error_to_reply(path: str, err: ApiError, request_id: str, branding: Branding | None = None) -> Reply:
    r = error_reply(path, err.status, err.code, err.message, request_id, extra=err.extra, headers=err.headers,
                    branding=branding)
    return Reply(r.status, r.body, r.headers)


@dataclass
class Call:
    """One request as a handler sees it: verified tenant context, parsed URL, body reader."""

    tenant: TenantContext
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    params: dict[str, str]
    env: Any
    services: Any
    read_body: Callable[[], Awaitable[bytes]]
    state: dict[str, Any] = field(default_factory=dict)  # filled by middleware (e.g. the session)
    cookies: list[str] = field(default_factory=list)  # Set-Cookie values for whatever reply this call gets

    @property
    def request_id(self) -> str:
        return self.tenant.request_id

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    async def body(self) -> bytes:
        data = await self.read_body()
        if len(data) > MAX_BODY_BYTES:
            raise ApiError(413, "payload_too_large", f"Request body over {MAX_BODY_BYTES} bytes.")
        return data

    async def json(self) -> Any:
        raw = await self.body()
        if not raw:
            raise ApiError(400, "invalid_json", "A JSON body is required.")
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "invalid_json", "The body is not valid JSON.") from None


def parse_query(query: str) -> dict[str, list[str]]:
    return parse_qs(query, keep_blank_values=True, max_num_fields=100)


Handler = Callable[[Call], Awaitable[Reply]]


@dataclass(frozen=True)
class Route:
    """A routing table row: `pattern` uses `<name>` for one path segment."""

    method: str
    pattern: str
    handler: Handler
    name: str = ""

    def compile(self) -> re.Pattern[str]:
        regex = re.sub(r"<([a-z_]+)>", r"(?P<\1>[^/]+)", re.escape(self.pattern))  # escape leaves < > alone
        return re.compile(f"^{regex}$")

"""What a tenant Worker handler sees and returns: plain Python, no runtime objects."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict

from shared.branding import Brand
from shared.error_pages import error_reply
from shared.json_depth import exceeds_depth
from shared.models import TenantContext

WHOLE = re.compile(r"[0-9]{1,6}")  # a query number: plain ASCII digits, nothing int() would also take

MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 32  # request bodies are flat objects; deep nesting would crash Pyodide (shared.json_depth)


class RequestBody(BaseModel):
    """Base of every request-body model: unknown fields refused, and strict types, so
    `true` is not the integer 1, `"5"` is not 5 and 1.0 is not an int."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ApiError(Exception):
    """Raised by handlers; becomes `{"error": {...}}` (or a branded page off /api)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.extra = extra or {}
        self.headers = headers or {}


class StreamBody:
    """A body the runtime streams without Python holding it: an upload's request body, an R2
    object's contents. Opaque to handlers; only the adapters at the JS boundary look inside
    (tenant_worker.app builds the Response, tenant_worker.r2_files hands it to R2)."""

    __slots__ = ("handle",)

    def __init__(self, handle: Any) -> None:
        self.handle = handle


@dataclass
class Reply:
    status: int = 200
    body: bytes | StreamBody = b""
    headers: dict[str, str] = field(default_factory=dict)
    cookies: list[str] = field(default_factory=list)  # full Set-Cookie values


def json_reply(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status, json.dumps(data, default=str).encode(), {"content-type": "application/json", **(headers or {})}
    )


def html_reply(page: str, status: int = 200) -> Reply:
    return Reply(status, page.encode(), {"content-type": "text/html; charset=utf-8"})


def redirect_reply(location: str, status: int = 302) -> Reply:
    return Reply(status, b"", {"location": location, "cache-control": "no-store"})


def error_to_reply(path: str, err: ApiError, request_id: str, branding: Brand | None = None) -> Reply:
    """The error as JSON under /api/*, else a page: with the tenant's `branding`, the page links home
    and to sign in again."""
    r = error_reply(
        path,
        err.status,
        err.code,
        err.message,
        request_id,
        extra=err.extra,
        headers=err.headers,
        branding=branding,
        way_back=branding is not None,
    )
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
    scheme: str = "https"  # of the URL the Worker was asked for (http only on the local platform)
    body_kind: str = "json"  # the route's Route.body: "raw" bodies are streamed by the handler, never read here
    raw_body: StreamBody | None = None  # the request body as the runtime's stream ("raw" routes only)
    _body: bytes | None = field(default=None, repr=False)

    @property
    def request_id(self) -> str:
        return self.tenant.request_id

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def page_args(self, default: int = 50, most: int = 200) -> tuple[int, int]:
        """`limit` and `offset` of a listing; anything but plain digits in range is a 400."""
        raw_limit, raw_offset = self.arg("limit") or str(default), self.arg("offset") or "0"
        if not WHOLE.fullmatch(raw_limit) or not WHOLE.fullmatch(raw_offset):  # int() takes " 5", "1_0", "٣"
            raise ApiError(400, "invalid_query", "limit and offset must be whole numbers.")
        limit, offset = int(raw_limit), int(raw_offset)
        if not 1 <= limit <= most or not 0 <= offset <= 100_000:
            raise ApiError(400, "invalid_query", f"limit must be 1..{most} and offset 0..100000.")
        return limit, offset

    async def body(self) -> bytes:
        """The request body, read once (middleware and handler share it); 413 past the cap."""
        if self.body_kind == "raw":  # a streamed upload: reading it here would buffer it whole
            raise ApiError(500, "internal_error", "Something went wrong on our side.")
        if self._body is None:
            declared = self.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
                raise ApiError(413, "payload_too_large", f"Request body over {MAX_BODY_BYTES} bytes.")
            data = await self.read_body()
            if len(data) > MAX_BODY_BYTES:
                raise ApiError(413, "payload_too_large", f"Request body over {MAX_BODY_BYTES} bytes.")
            self._body = data
        return self._body


class _BadJson(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _BadJson("duplicate key")
    return out


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999999 parses as inf
        raise _BadJson("number out of range")
    return value


def _no_constant(name: str) -> Any:
    raise _BadJson(f"{name} is not JSON")


def _check_text(data: Any) -> None:
    """Escaped lone surrogates (`"\\ud800"`) are valid JSON syntax but no Unicode text."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise _BadJson("not Unicode text") from None


def parse_json(raw: bytes) -> Any:
    """Strict JSON from a request body: ApiError 400 `invalid_json` for anything RFC 8259 and
    we do not both accept (bad UTF-8, NaN/Infinity, duplicate keys, huge numbers, deep nesting).
    Depth is measured before parsing: in Pyodide a deep document crashes the isolate."""
    try:
        text = raw.decode("utf-8")  # not json.loads(bytes), which also guesses UTF-16/32
        if exceeds_depth(text, MAX_JSON_DEPTH):
            raise _BadJson(f"nested deeper than {MAX_JSON_DEPTH}")
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_float=_finite, parse_constant=_no_constant)
        _check_text(data)
        return data
    except _BadJson as exc:
        raise ApiError(400, "invalid_json", f"The body is not valid JSON ({exc}).") from None
    except (ValueError, UnicodeDecodeError):  # syntax, bad UTF-8, ints past Python's digit limit
        raise ApiError(400, "invalid_json", "The body is not valid JSON.") from None


def parse_query(query: str) -> dict[str, list[str]]:
    return parse_qs(query, keep_blank_values=True, max_num_fields=100)


Handler = Callable[[Call], Awaitable[Reply]]


@dataclass(frozen=True)
class Route:
    """A routing table row: `pattern` uses `<name>` for one path segment.

    `body`: "json" (the default: a state change's body must be JSON, read whole, ≤ 1 MiB) or
    "raw" (the handler streams the body itself, e.g. a file upload; request_rules applies the
    upload rule instead of the JSON one)."""

    method: str
    pattern: str
    handler: Handler
    name: str = ""
    body: str = "json"

    def compile(self) -> re.Pattern[str]:
        regex = re.sub(r"<([a-z_]+)>", r"(?P<\1>[^/]+)", re.escape(self.pattern))  # escape leaves < > alone
        return re.compile(f"^{regex}$")

"""An async client for Supabase's data API (PostgREST) over shared.outbound_http.HttpClient.

Built per request, in one of two ways:

    # The normal path: a tenant-scoped JWT (shared.jwt.mint_tenant_jwt) from a verified tenant
    # context and session; RLS decides. The tenant Worker builds it in supabase_access.tenant_db.
    db = SupabaseClient(http, url=SUPABASE_URL, api_key=ANON_KEY, access_token=tenant_jwt)
    rows = await db.select("profiles", columns="id,email", eq={"tenant_id": "partner1"},
                           order="email.asc", limit=50)

    # Only for usage flushes, the audit log and the control plane: bypasses RLS.
    svc = SupabaseClient.as_service_role(http, url=SUPABASE_URL, service_role_key=KEY)
    await svc.rpc("record_usage", {"usage_rows": [...]})   # never lowers a recorded counter

Methods: select, insert, upsert, update, delete, rpc. Writes return the affected rows
(`Prefer: return=representation`), so a write that RLS filtered out returns []. Errors come
back as SupabaseError(status, code, message, details, hint) from PostgREST's JSON error
body; transport failures stay shared.outbound_http.HttpError.

Table, column and function names are checked against a strict pattern and filter values
are URL-encoded, so no caller input can add operators or parameters to the query string.
No third-party imports beyond the shared core: it runs in the Worker as under CPython.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping, Sequence
from urllib.parse import quote

from shared.outbound_http import HttpClient, HttpResponse

_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_COLUMNS_RE = re.compile(r"^(\*|[a-z_][a-z0-9_]{0,62}(,[a-z_][a-z0-9_]{0,62})*)$")
_ORDER_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}(\.(asc|desc))?(\.(nullsfirst|nullslast))?$")

FilterValue = str | int | float | bool | None
Row = dict[str, Any]


class SupabaseError(Exception):
    """PostgREST answered with an error (its JSON: code, message, details, hint)."""

    def __init__(
        self, status: int, code: str | None, message: str, details: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(f"{status} {code or '-'}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.hint = hint

    @classmethod
    def from_response(cls, resp: HttpResponse) -> "SupabaseError":
        try:
            body = resp.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            return cls(resp.status, None, resp.body[:200].decode("utf-8", "replace") or "no body")
        return cls(
            resp.status,
            body.get("code"),
            str(body.get("message") or body.get("msg") or "error"),
            body.get("details"),
            body.get("hint"),
        )


def _decoded(resp: HttpResponse) -> Any:
    """A success answer's JSON; an unreadable one is an upstream error, not our crash."""
    try:
        return resp.json()
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise SupabaseError(resp.status, None, "unreadable answer from the data API") from None


def _name(value: str, what: str = "name") -> str:
    if not _NAME_RE.match(value):
        raise ValueError(f"invalid {what}: {value!r}")
    return value


def _literal(value: FilterValue) -> str:
    if value is None:
        return "is.null"
    if isinstance(value, bool):
        return "is." + ("true" if value else "false")
    return "eq." + quote(str(value), safe="")


class SupabaseClient:
    """PostgREST calls as one principal (a tenant user's JWT, or the service role)."""

    def __init__(self, http: HttpClient, *, url: str, api_key: str, access_token: str, timeout: float = 10.0) -> None:
        self._http = http
        self._rest = url.rstrip("/") + "/rest/v1"
        self._timeout = timeout
        self._headers = {
            "apikey": api_key,
            "authorization": f"Bearer {access_token}",
            "accept": "application/json",
        }

    @classmethod
    def as_service_role(
        cls, http: HttpClient, *, url: str, service_role_key: str, timeout: float = 10.0
    ) -> "SupabaseClient":
        """Bypasses RLS: for usage, audit and the control plane only (see design.md)."""
        return cls(http, url=url, api_key=service_role_key, access_token=service_role_key, timeout=timeout)

    # ---- operations ---------------------------------------------------------------------
    async def select(
        self,
        table: str,
        *,
        columns: str = "*",
        eq: Mapping[str, FilterValue] | None = None,
        order: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[Row]:
        params = [("select", self._columns(columns))] + self._filters(eq)
        if order:
            orders = [order] if isinstance(order, str) else list(order)
            for o in orders:
                if not _ORDER_RE.match(o):
                    raise ValueError(f"invalid order: {o!r}")
            params.append(("order", ",".join(orders)))
        if limit is not None:
            params.append(("limit", str(int(limit))))
        if offset is not None:
            params.append(("offset", str(int(offset))))
        return await self._rows("GET", table, params)

    async def insert(self, table: str, rows: Row | Sequence[Row], *, columns: str = "*") -> list[Row]:
        return await self._rows(
            "POST", table, [("select", self._columns(columns))], body=rows, prefer="return=representation"
        )

    async def upsert(
        self,
        table: str,
        rows: Row | Sequence[Row],
        *,
        on_conflict: str,
        columns: str = "*",
        ignore_duplicates: bool = False,
    ) -> list[Row]:
        resolution = "ignore-duplicates" if ignore_duplicates else "merge-duplicates"
        return await self._rows(
            "POST",
            table,
            [("on_conflict", self._columns(on_conflict)), ("select", self._columns(columns))],
            body=rows,
            prefer=f"return=representation,resolution={resolution}",
        )

    async def update(self, table: str, values: Row, *, eq: Mapping[str, FilterValue], columns: str = "*") -> list[Row]:
        if not eq:
            raise ValueError("update needs at least one filter (no accidental whole-table writes)")
        return await self._rows(
            "PATCH",
            table,
            [("select", self._columns(columns))] + self._filters(eq),
            body=values,
            prefer="return=representation",
        )

    async def delete(self, table: str, *, eq: Mapping[str, FilterValue], columns: str = "*") -> list[Row]:
        if not eq:
            raise ValueError("delete needs at least one filter (no accidental whole-table deletes)")
        return await self._rows(
            "DELETE", table, [("select", self._columns(columns))] + self._filters(eq), prefer="return=representation"
        )

    async def rpc(self, function: str, args: Mapping[str, Any] | None = None) -> Any:
        resp = await self._send("POST", f"rpc/{_name(function, 'function')}", [], body=dict(args or {}))
        return _decoded(resp) if resp.body else None

    # ---- plumbing -----------------------------------------------------------------------
    @staticmethod
    def _columns(columns: str) -> str:
        cleaned = columns.replace(" ", "")
        if not _COLUMNS_RE.match(cleaned):
            raise ValueError(f"invalid column list: {columns!r}")
        return cleaned

    @staticmethod
    def _filters(eq: Mapping[str, FilterValue] | None) -> list[tuple[str, str]]:
        return [(_name(col, "column"), _literal(val)) for col, val in (eq or {}).items()]

    async def _rows(
        self, method: str, table: str, params: list[tuple[str, str]], *, body: Any = None, prefer: str | None = None
    ) -> list[Row]:
        resp = await self._send(method, _name(table, "table"), params, body=body, prefer=prefer)
        data = _decoded(resp) if resp.body else []
        return data if isinstance(data, list) else [data]

    async def _send(
        self, method: str, path: str, params: list[tuple[str, str]], *, body: Any = None, prefer: str | None = None
    ) -> HttpResponse:
        headers = dict(self._headers)
        payload: bytes | None = None
        if body is not None:
            headers["content-type"] = "application/json"
            payload = json.dumps(body, separators=(",", ":")).encode("utf-8")
        if prefer:
            headers["prefer"] = prefer
        # Values are already encoded (filters) or pattern-checked (names, orders).
        query = "&".join(f"{k}={v}" for k, v in params)
        url = f"{self._rest}/{path}" + (f"?{query}" if query else "")
        resp = await self._http.request(method, url, headers=headers, body=payload, timeout=self._timeout)
        if not resp.ok:
            raise SupabaseError.from_response(resp)
        return resp

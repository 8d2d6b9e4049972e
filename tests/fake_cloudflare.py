"""A local fake of Cloudflare's v4 API (real HTTP on loopback) for the control plane's tests.

It answers the requests the official `cloudflare` SDK (the pinned one) sends for the calls the
control plane makes, in the API's wire format: paths, query parameters and JSON bodies in,
the v4 envelope ({"success", "errors": [{"code", "message"}], "messages", "result",
"result_info"}) out, with the fields the SDK's models and paginators read:

- custom hostnames on a zone (Cloudflare for SaaS): list (`hostname.exact`, `page`/`per_page`
  pages, `result_info.total_pages`), create, get, delete;
- Workers KV: values get (the raw value, not an envelope) / put / delete, keys listed by
  `prefix` with a `cursor` and `limit`;
- R2 objects in a bucket: list (`prefix`, `cursor`, `per_page`, with http_metadata), get (the
  bytes), put (the body, its Content-Type kept), delete;
- scripts in a dispatch namespace: get, put, delete (`force`);
- D1: `POST …/d1/database/<id>/query` with `{"sql", "params"}` or `{"batch": [...]}`, run on a
  SQLite file (a migrated D1) with the params bound, every statement of a request in one
  transaction, as D1 runs a batch (one statement per query here). Params must be strings, as
  the API's schema says.

As the real API answers: a request without credentials is 400 (code 9106, "Missing
X-Auth-Key, X-Auth-Email or Authorization headers"); a bearer token it does not know is 403
(code 9109, "Invalid access token"); a good token on another account's resources is 403
(code 10000, "Authentication error"); an unknown route is 404 with the envelope.

    with FakeCloudflare(token="t", account_id="acc", zone_id="zone", d1_file=path) as cf:
        cf.url                      # CLOUDFLARE_API_BASE_URL
        cf.activate("shop.example") # certificate issued, hostname active
        cf.fail("POST custom_hostnames", 500, times=3)   # the next 3 such requests fail
        cf.requests                 # [(method, path with query, json body or None)]
        cf.d1_queries               # [(sql, params)] in the order D1 ran them
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

D1_DATABASE_ID = "d1-0000-test"
Answer = tuple[int, Any, bool]  # (status, payload, is_envelope)


@dataclass(frozen=True)
class RawBody:
    """A non-envelope answer with its own Content-Type (an R2 object's bytes)."""

    data: bytes
    content_type: str


class FakeCloudflare:
    def __init__(
        self,
        *,
        token: str,
        account_id: str,
        zone_id: str,
        d1_file: Path | None = None,
        d1_database_id: str = D1_DATABASE_ID,
    ) -> None:
        self.token, self.account_id, self.zone_id = token, account_id, zone_id
        self.d1_file, self.d1_database_id = d1_file, d1_database_id
        self.hostnames: dict[str, dict[str, Any]] = {}  # id -> custom hostname object
        self.kv: dict[tuple[str, str], str] = {}
        self.r2: dict[tuple[str, str], bytes] = {}  # (bucket, key) -> body
        self.r2_types: dict[tuple[str, str], str] = {}  # (bucket, key) -> the object's Content-Type
        self.r2_ignore_prefix = False  # test control: a listing that returns every key (a broken filter)
        self.scripts: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.d1_queries: list[tuple[str, list[Any]]] = []
        self._failures: dict[str, list[Any]] = {}  # "POST custom_hostnames" -> [status, times, code, message]
        self._lock = threading.RLock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/client/v4"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeCloudflare":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ---- test controls ------------------------------------------------------------------
    def activate(self, hostname: str) -> None:
        with self._lock:
            for h in self.hostnames.values():
                if h["hostname"] == hostname:
                    h["status"] = "active"
                    h["ssl"]["status"] = "active"
                    h.pop("ownership_verification", None)

    def by_hostname(self, hostname: str) -> dict[str, Any] | None:
        return next((h for h in self.hostnames.values() if h["hostname"] == hostname), None)

    def add_hostname(self, hostname: str) -> dict[str, Any]:
        """A custom hostname created outside the control plane (e.g. to fill pages)."""
        status, payload, _ = self._custom_hostnames(
            "POST", None, {}, {"hostname": hostname, "ssl": {"method": "http", "type": "dv"}}
        )
        assert status == 201, payload
        return payload["result"]

    def fail(
        self,
        what: str,
        status: int,
        *,
        times: int = 1,
        code: int = 1000,
        message: str = "injected failure",
        html: str | None = None,
    ) -> None:
        """The next `times` requests matching `what` ("POST custom_hostnames", "GET scripts",
        "DELETE kv", "GET kv keys", "POST d1", ...) are answered with this error: the API's
        envelope, or an HTML page (what a proxy in front of the API answers) when `html` is given."""
        self._failures[what] = [status, times, code, message, html]

    def _injected(self, what: str) -> Answer | None:
        with self._lock:
            failure = self._failures.get(what)
            if not failure:
                return None
            failure[1] -= 1
            if failure[1] <= 0:
                del self._failures[what]
            status, _, code, message, html = failure
            return (status, Html(html), False) if html is not None else (status, _err(code, message), True)

    # ---- the API ------------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Answer:
        parts = urlsplit(raw_path)
        path, query = parts.path, parse_qs(parts.query, keep_blank_values=True)
        data = None
        r2_object = re.search(r"/r2/buckets/[^/]+/objects/.", path) is not None  # its body is the object's bytes
        if body and not r2_object and headers.get("content-type", "").startswith("application/json"):
            try:
                data = json.loads(body)
            except ValueError:
                return 400, _err(6007, "Malformed JSON in request body"), True
        self.requests.append((method, raw_path, data))
        if not headers.get("authorization"):
            return 400, _err(9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers"), True
        if headers.get("authorization") != f"Bearer {self.token}":
            return 403, _err(9109, "Invalid access token"), True
        if not path.startswith("/client/v4/"):
            return 404, _err(7003, "Could not route to " + path), True
        path = path[len("/client/v4") :]

        m = re.fullmatch(r"/zones/([^/]+)/custom_hostnames(?:/([^/]+))?", path)
        if m:
            if m.group(1) != self.zone_id:
                return 404, _err(1001, "Invalid zone identifier"), True
            return self._injected(f"{method} custom_hostnames") or self._custom_hostnames(
                method, m.group(2), query, data
            )
        m = re.fullmatch(r"/accounts/([^/]+)/(storage/kv|workers/dispatch|d1/database)/(.+)", path)
        if m and m.group(1) != self.account_id:
            return 403, _err(10000, "Authentication error"), True
        m = re.fullmatch(r"/accounts/[^/]+/storage/kv/namespaces/([^/]+)/keys", path)
        if m and method == "GET":
            return self._injected("GET kv keys") or self._kv_keys(m.group(1), query)
        m = re.fullmatch(r"/accounts/[^/]+/storage/kv/namespaces/([^/]+)/values/(.+)", path)
        if m:
            return self._injected(f"{method} kv") or self._kv(method, m.group(1), unquote(m.group(2)), body)
        m = re.fullmatch(r"/accounts/([^/]+)/r2/buckets/([^/]+)/objects(?:/(.+))?", path)
        if m:
            if m.group(1) != self.account_id:
                return 403, _err(10000, "Authentication error"), True
            return self._r2(
                method, m.group(2), None if m.group(3) is None else unquote(m.group(3)), query, body, headers
            )
        m = re.fullmatch(r"/accounts/[^/]+/workers/dispatch/namespaces/([^/]+)/scripts/([^/]+)", path)
        if m:
            return self._injected(f"{method} scripts") or self._script(method, m.group(1), unquote(m.group(2)), data)
        m = re.fullmatch(r"/accounts/[^/]+/d1/database/([^/]+)/query", path)
        if m and method == "POST":
            if m.group(1) != self.d1_database_id or self.d1_file is None:
                return 404, _err(7404, f"The database {m.group(1)} could not be found"), True
            return self._injected("POST d1") or self._d1_query(data)
        return 404, _err(7003, "Could not route to " + path + ", perhaps your object identifier is invalid?"), True

    def _custom_hostnames(self, method: str, ident: str | None, query: dict[str, list[str]], data: Any) -> Answer:
        with self._lock:
            if ident is None and method == "GET":
                items = sorted(self.hostnames.values(), key=lambda h: h["created_at"] + h["id"])
                exact = (query.get("hostname.exact") or query.get("hostname") or [None])[0]
                if exact is not None:
                    items = [h for h in items if h["hostname"] == exact]
                page, per_page = int(query.get("page", ["1"])[0]), int(query.get("per_page", ["20"])[0])
                if not 5 <= per_page <= 50 or page < 1:
                    return 400, _err(1004, "per_page must be between 5 and 50"), True
                chunk = items[(page - 1) * per_page : page * per_page]
                info = {
                    "page": page,
                    "per_page": per_page,
                    "count": len(chunk),
                    "total_count": len(items),
                    "total_pages": max(1, -(-len(items) // per_page)),
                }
                return 200, _ok(chunk, info), True
            if ident is None and method == "POST":
                hostname = (data or {}).get("hostname")
                ssl = (data or {}).get("ssl") or {}
                if not hostname or not isinstance(hostname, str):
                    return 400, _err(1411, "Invalid custom hostname: hostname is required"), True
                if ssl.get("method") not in ("http", "txt", "email") or ssl.get("type") != "dv":
                    return 400, _err(1413, "Invalid SSL method or type"), True
                if self.by_hostname(hostname):
                    return 409, _err(1406, "Duplicate custom hostname found."), True
                hid = str(uuid.uuid4())
                obj = {
                    "id": hid,
                    "hostname": hostname,
                    "status": "pending",
                    "ssl": {
                        "id": str(uuid.uuid4()),
                        "type": "dv",
                        "method": ssl["method"],
                        "status": "initializing",
                        "settings": ssl.get("settings", {}),
                    },
                    "ownership_verification": {
                        "type": "txt",
                        "name": f"_cf-custom-hostname.{hostname}",
                        "value": str(uuid.uuid4()),
                    },
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
                self.hostnames[hid] = obj
                return 201, _ok(obj), True
            if ident is not None and ident in self.hostnames:
                if method == "GET":
                    return 200, _ok(self.hostnames[ident]), True
                if method == "DELETE":
                    del self.hostnames[ident]
                    return 200, _ok({"id": ident}), True
            return 404, _err(1436, "The custom hostname was not found."), True

    def _kv_keys(self, ns: str, query: dict[str, list[str]]) -> Answer:
        """Key listing with a cursor (pages of `limit`, 10 to 1000, default 1000), as the API pages it."""
        prefix = query.get("prefix", [""])[0]
        limit = int(query.get("limit", ["1000"])[0])
        if not 10 <= limit <= 1000:
            return 400, _err(10025, "limit must be between 10 and 1000"), True
        start = int(query.get("cursor", ["0"])[0] or 0)
        with self._lock:
            names = sorted(k for (n, k) in self.kv if n == ns and k.startswith(prefix))
        page = names[start : start + limit]
        cursor = str(start + limit) if start + limit < len(names) else ""
        return 200, _ok([{"name": k} for k in page], {"count": len(page), "cursor": cursor}), True

    def _kv(self, method: str, ns: str, key: str, body: bytes) -> Answer:
        with self._lock:
            if method == "GET":
                if (ns, key) not in self.kv:
                    return 404, _err(10009, "get: 'key not found'"), True
                return 200, self.kv[(ns, key)], False
            if method == "PUT":
                self.kv[(ns, key)] = body.decode()
                return 200, _ok(None), True
            if method == "DELETE":
                self.kv.pop((ns, key), None)  # deleting a missing key succeeds, as on Cloudflare
                return 200, _ok(None), True
        return 405, _err(7001, f"Method {method} not available for that URI."), True

    def _r2(
        self,
        method: str,
        bucket: str,
        key: str | None,
        query: dict[str, list[str]],
        body: bytes,
        headers: dict[str, str],
    ) -> Answer:
        """R2 objects: a prefix listing with a cursor (pages of per_page, with http_metadata),
        GET (the bytes, Content-Type the object's), PUT (the body, its Content-Type kept), DELETE."""
        with self._lock:
            if key is None and method == "GET":
                prefix = "" if self.r2_ignore_prefix else query.get("prefix", [""])[0]
                per_page = int(query.get("per_page", ["1000"])[0])
                start = int(query.get("cursor", ["0"])[0] or 0)
                keys = sorted(k for (b, k) in self.r2 if b == bucket and k.startswith(prefix))
                page = keys[start : start + per_page]
                more = start + per_page < len(keys)
                items = [
                    {
                        "key": k,
                        "size": len(self.r2[(bucket, k)]),
                        **(
                            {"http_metadata": {"contentType": self.r2_types[(bucket, k)]}}
                            if (bucket, k) in self.r2_types
                            else {}
                        ),
                    }
                    for k in page
                ]
                return (
                    200,
                    _ok(
                        items,
                        {"cursor": str(start + per_page) if more else "", "is_truncated": more, "per_page": per_page},
                    ),
                    True,
                )
            if key is not None and method == "GET":
                if (bucket, key) not in self.r2:
                    return 404, _err(10007, "The specified key does not exist."), True
                return (
                    200,
                    RawBody(self.r2[(bucket, key)], self.r2_types.get((bucket, key), "application/octet-stream")),
                    False,
                )
            if key is not None and method == "PUT":
                self.r2[(bucket, key)] = body
                if headers.get("content-type"):
                    self.r2_types[(bucket, key)] = headers["content-type"]
                else:
                    self.r2_types.pop((bucket, key), None)
                return 200, _ok({"key": key, "size": len(body)}), True
            if key is not None and method == "DELETE":
                self.r2.pop((bucket, key), None)
                self.r2_types.pop((bucket, key), None)
                return 200, _ok({"key": key}), True
        return 405, _err(7001, f"Method {method} not available for that URI."), True

    def _script(self, method: str, ns: str, name: str, data: Any) -> Answer:
        with self._lock:
            if method == "PUT":
                self.scripts[(ns, name)] = {"id": name, "script": {"id": name}, **(data or {})}
                return 200, _ok(self.scripts[(ns, name)]), True
            if (ns, name) not in self.scripts:
                return 404, _err(10007, "workers.api.error.script_not_found"), True
            if method == "GET":
                return 200, _ok(self.scripts[(ns, name)]), True
            if method == "DELETE":
                del self.scripts[(ns, name)]
                return 200, _ok(None), True
        return 405, _err(7001, f"Method {method} not available for that URI."), True

    def _d1_query(self, data: Any) -> Answer:
        if not isinstance(data, dict):
            return 400, _err(7400, "The request is malformed: a JSON object is expected"), True
        queries = data.get("batch") if "batch" in data else [data]
        if not isinstance(queries, list) or not queries:
            return 400, _err(7400, "The request is malformed: batch must be a non-empty array"), True
        for q in queries:
            params = q.get("params", []) if isinstance(q, dict) else None
            if (
                not isinstance(q, dict)
                or not isinstance(q.get("sql"), str)
                or not isinstance(params, list)
                or not all(isinstance(p, str) for p in params)
            ):
                return 400, _err(7400, "The request is malformed: each query is {sql: string, params: [string]}"), True
        assert self.d1_file is not None
        results = []
        with self._lock:
            conn = sqlite3.connect(self.d1_file, isolation_level=None)
            conn.row_factory = sqlite3.Row
            try:
                conn.execute("BEGIN")
                for q in queries:
                    params = q.get("params", [])
                    self.d1_queries.append((q["sql"], params))
                    before = conn.total_changes
                    cursor = conn.execute(q["sql"], params)
                    rows = [dict(r) for r in cursor.fetchall()]
                    changes = conn.total_changes - before
                    results.append(
                        {
                            "results": rows,
                            "success": True,
                            "meta": {
                                "changed_db": changes > 0,
                                "changes": changes,
                                "duration": 0.1,
                                "last_row_id": cursor.lastrowid or 0,
                                "rows_read": len(rows),
                                "rows_written": changes,
                                "served_by_primary": True,
                                "size_after": Path(self.d1_file).stat().st_size,
                            },
                        }
                    )
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                return 400, _err(7500, f"{exc}: SQLITE_ERROR"), True
            finally:
                conn.close()
        return 200, _ok(results), True

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, payload, envelope = fake.handle(self.command, self.path, headers, body)
                if isinstance(payload, RawBody):
                    raw, content_type = payload.data, payload.content_type
                else:
                    raw = json.dumps(payload).encode() if envelope else str(payload).encode()
                    content_type = (
                        "application/json"
                        if envelope
                        else "text/html"
                        if isinstance(payload, Html)
                        else "application/octet-stream"
                    )
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:
                return None

        return Handler


class Html(str):
    """A non-API answer (an HTML error page)."""


def _ok(result: Any, info: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {"success": True, "errors": [], "messages": [], "result": result}
    if info is not None:
        out["result_info"] = info
    return out


def _err(code: int, message: str) -> dict[str, Any]:
    return {"success": False, "errors": [{"code": code, "message": message}], "messages": [], "result": None}

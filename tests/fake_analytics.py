"""A loopback fake of Cloudflare's Workers Analytics Engine SQL API (tests of the remote path).

    POST /client/v4/accounts/<account_id>/analytics_engine/sql
    Authorization: Bearer <token>            body: the SQL text (optionally ending FORMAT JSON)
    200 {"meta": [{"name", "type"}], "data": [{...}], "rows": n, "rows_before_limit_at_least": n}

As the real API: integer columns (UInt64: sums of `_sample_interval`, counts) are quoted as
strings, floats are numbers; a wrong token is 401 with Cloudflare's error envelope, SQL it
cannot run is 422 with a text body. The data is a local-store SQLite file
(localrt.metrics_store), so the same points can be read both ways. Every query is kept in
`queries` so tests can count round trips.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any, Callable

from localrt.metrics_store import connect

_PATH = re.compile(r"^/client/v4/accounts/([^/]+)/analytics_engine/sql$")


class FakeAnalytics:
    def __init__(self, store: Path, *, account_id: str, token: str) -> None:
        self.store, self.account_id, self.token = store, account_id, token
        self.queries: list[str] = []
        self.fail_with: int | None = None  # answer every query with this status

    def run(self, sql: str) -> tuple[int, Any]:
        text = sql.strip().rstrip(";")
        m = re.search(r"\s+FORMAT\s+(\w+)\s*$", text, re.I)
        if m:
            text = text[: m.start()]
        if not self.store.exists():
            return 200, {"meta": [], "data": [], "rows": 0, "rows_before_limit_at_least": 0}
        conn = connect(self.store)
        try:
            cur = conn.execute(text)
            names = [d[0] for d in cur.description or []]
            rows = [tuple(r) for r in cur.fetchall()]
        except sqlite3.Error as exc:
            return 422, f"Query error: {exc}"
        finally:
            conn.close()
        types = {}
        for i, n in enumerate(names):
            values = [r[i] for r in rows if r[i] is not None]
            if values and all(isinstance(v, int) for v in values):
                types[n] = "UInt64"
            elif values and all(isinstance(v, (int, float)) for v in values):
                types[n] = "Float64"
            else:
                types[n] = "String"
        data = [{n: (str(v) if types[n] == "UInt64" else v) for n, v in zip(names, r, strict=True)} for r in rows]
        return 200, {
            "meta": [{"name": n, "type": types[n]} for n in names],
            "data": data,
            "rows": len(data),
            "rows_before_limit_at_least": len(data),
        }

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        m = _PATH.match(scope["path"])
        if scope["method"] != "POST" or not m:
            return await _send(send, 404, {"success": False, "errors": [{"code": 7003, "message": "No route"}]})
        # As the v4 API answers: no credentials 9106, a token it does not know 9109, a good token
        # on another account 10000 (tests/fake_cloudflare.py).
        if not headers.get("authorization"):
            return await _send(
                send,
                400,
                {
                    "success": False,
                    "errors": [{"code": 9106, "message": "Missing X-Auth-Key, X-Auth-Email or Authorization headers"}],
                },
            )
        if headers.get("authorization") != f"Bearer {self.token}":
            return await _send(
                send, 403, {"success": False, "errors": [{"code": 9109, "message": "Invalid access token"}]}
            )
        if m.group(1) != self.account_id:
            return await _send(
                send, 403, {"success": False, "errors": [{"code": 10000, "message": "Authentication error"}]}
            )
        sql = body.decode("utf-8")
        self.queries.append(sql)
        if self.fail_with is not None:
            return await _send(send, self.fail_with, "upstream trouble")
        status, answer = self.run(sql)
        await _send(send, status, answer)


async def _send(send: Callable[..., Any], status: int, payload: Any) -> None:
    if isinstance(payload, str):
        body, ctype = payload.encode(), b"text/plain; charset=utf-8"
    else:
        body, ctype = json.dumps(payload).encode(), b"application/json"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})

"""Workers KV on the local runtime: SQLite-backed, with expirationTtl honoured."""
from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

from pyodide.ffi import JsException

MIN_TTL_SECONDS = 60  # Cloudflare refuses shorter expirationTtl values


class KVNamespace:
    def __init__(self, path: Path | str = ":memory:", *, clock: Callable[[], float] = time.time) -> None:
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL)")
        self._lock = threading.Lock()
        self._clock = clock

    async def get(self, key: str, options: Any = None) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value, expires FROM kv WHERE key = ?", (key,)).fetchone()
        if row is None or (row[1] is not None and row[1] <= self._clock()):
            return None
        return row[0]

    async def put(self, key: str, value: str, options: dict[str, Any] | None = None) -> None:
        if not key or len(key.encode()) > 512:
            raise JsException("KV PUT failed: 414 UTF-8 encoded length of key exceeds 512 bytes.")
        ttl = (options or {}).get("expirationTtl")
        if ttl is not None and int(ttl) < MIN_TTL_SECONDS:
            raise JsException(f"KV PUT failed: 400 Invalid expiration_ttl of {ttl}. Expiration TTL must be at least 60.")
        expires = self._clock() + int(ttl) if ttl is not None else None
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO kv (key, value, expires) VALUES (?, ?, ?)", (key, str(value), expires))

    async def delete(self, key: str) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM kv WHERE key = ?", (key,))

    async def list(self, options: dict[str, Any] | None = None) -> dict[str, Any]:
        prefix = (options or {}).get("prefix", "")
        now = self._clock()
        with self._lock:
            rows = self._conn.execute(
                "SELECT key FROM kv WHERE key LIKE ? ESCAPE '\\' AND (expires IS NULL OR expires > ?) ORDER BY key",
                (prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%", now),
            ).fetchall()
        return {"keys": [{"name": r[0]} for r in rows], "list_complete": True}

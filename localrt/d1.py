"""The local D1 database for the control plane: the SQLite file `wrangler d1 ... --local` and
the platform's workerd (Miniflare) both use, written in place (SQLite's WAL locking lets the
running platform and this writer share it).

Call shapes are the SDK-wrapped ones: `await db.prepare(sql).bind(*args).first()`,
`.all()` → {"results", "success", "meta"}, `.run()`, `await db.batch([...])`, `db.exec(sql)`.
SQLite errors surface as D1Error("D1_ERROR: ..."), with the runtime's message prefixes.
"""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from localrt.workerd import node_env

ROOT = Path(__file__).resolve().parent.parent
D1_NAME = "cmgsite"


def wrangler_d1_file(persist_dir: Path) -> Path | None:
    """The SQLite file wrangler keeps for the local D1 (named by a hash of the database id)."""
    folder = persist_dir / "v3" / "d1" / "miniflare-D1DatabaseObject"
    files = [p for p in folder.glob("*.sqlite") if p.name != "metadata.sqlite"]
    return files[0] if len(files) == 1 else None


def apply_migrations_with_wrangler(persist_dir: Path, *, config: str = "wrangler.dispatcher.toml") -> Path:
    """Run `wrangler d1 migrations apply cmgsite --local` for real; returns the SQLite file."""
    cmd = [
        str(ROOT / "node_modules" / ".bin" / "wrangler"),
        "d1",
        "migrations",
        "apply",
        D1_NAME,
        "--local",
        "--persist-to",
        str(persist_dir),
        "-c",
        config,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180, env={**node_env(), "CI": "true"})
    if proc.returncode != 0:
        raise RuntimeError(f"wrangler d1 migrations apply failed:\n{proc.stdout}\n{proc.stderr}")
    path = wrangler_d1_file(persist_dir)
    if path is None:
        raise RuntimeError(f"wrangler left no D1 database under {persist_dir}")
    return path


def copy_database(src: Path, dst: Path) -> None:
    """Copy a D1 SQLite file. wrangler's is in WAL mode: go through SQLite's backup API, not the file."""
    source, target = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        with target:
            source.backup(target)
    finally:
        source.close()
        target.close()


class D1Error(Exception):
    """A D1 failure, worded as the runtime words it."""

    def __init__(self, message: str, name: str = "Error") -> None:
        super().__init__(message)
        self.name = name


class D1Statement:
    def __init__(self, db: "D1Database", sql: str, args: tuple[Any, ...] = ()) -> None:
        self._db, self._sql, self._args = db, sql, args

    def bind(self, *args: Any) -> "D1Statement":
        for a in args:
            if not isinstance(a, (str, int, float, bytes, type(None))) or isinstance(a, bool):
                raise D1Error(f"D1_TYPE_ERROR: Type '{type(a).__name__}' not supported for value '{a}'", "TypeError")
        return D1Statement(self._db, self._sql, args)

    async def first(self, column: str | None = None) -> Any:
        rows = self._db.execute(self._sql, self._args)["results"]
        if not rows:
            return None
        if column is not None:
            if column not in rows[0]:
                raise D1Error(f"D1_COLUMN_NOTFOUND: Column not found ({column})")
            return rows[0][column]
        return rows[0]

    async def all(self) -> dict[str, Any]:
        return self._db.execute(self._sql, self._args)

    async def run(self) -> dict[str, Any]:
        return self._db.execute(self._sql, self._args)

    async def raw(self) -> list[list[Any]]:
        return [list(r.values()) for r in self._db.execute(self._sql, self._args)["results"]]


class D1Database:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._conn.execute("PRAGMA cache_size = -32000")  # 32 MB, like a warm D1 primary
        self._lock = threading.Lock()

    def prepare(self, sql: str) -> D1Statement:
        return D1Statement(self, sql)

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> dict[str, Any]:
        started = time.perf_counter()
        with self._lock:
            try:
                cur = self._conn.execute(sql, args)
                rows = [dict(r) for r in cur.fetchall()]
            except sqlite3.Error as exc:
                raise D1Error(f"D1_ERROR: {exc}") from None
            meta = {
                "changes": self._conn.total_changes,
                "last_row_id": cur.lastrowid,
                "duration": (time.perf_counter() - started) * 1000,
                "rows_read": len(rows),
            }
        return {"results": rows, "success": True, "meta": meta}

    async def batch(self, statements: list[D1Statement]) -> list[dict[str, Any]]:
        with self._lock:
            self._conn.execute("BEGIN")
        try:
            out = [await s.run() for s in statements]
        except Exception:
            with self._lock:
                self._conn.execute("ROLLBACK")
            raise
        with self._lock:
            self._conn.execute("COMMIT")
        return out

    async def exec(self, sql: str) -> dict[str, Any]:
        with self._lock:
            try:
                self._conn.executescript(sql)
            except sqlite3.Error as exc:
                raise D1Error(f"D1_EXEC_ERROR: {exc}") from None
        return {"count": sql.count(";"), "duration": 0}

    def close(self) -> None:
        self._conn.close()

"""Durable Objects on the local runtime: namespaces, stubs, input gates, SQLite storage, alarms.

Call shapes follow the real SDK (workers/rpc.py, workers/entrypoints.py) and the runtime:

    ns = env.USAGE                          # a DurableObjectNamespace binding
    stub = ns.getByName("partner1")         # or ns.get(ns.idFromName("partner1"))
    decision = await stub.consume("ai_calls", 1, "partner1", "starter")   # RPC method call
    resp = await stub.fetch("https://do/x") # workers.Response, as _FetcherWrapper gives it

    # inside the object (class X(DurableObject)):
    cur = self.ctx.storage.sql.exec("SELECT v FROM t WHERE k = ?", key)
    cur.toArray(), cur.one(), cur.rowsRead, cur.rowsWritten
    await self.ctx.storage.setAlarm(epoch_ms); await self.ctx.storage.getAlarm()

Semantics kept from Cloudflare: one live instance per id in the process; events (RPC calls,
fetch, alarms) reach one object one at a time in arrival order; this is stricter than
Cloudflare's input gate, which also lets events in while the object awaits non-storage
I/O, so objects must not rely on it across their own awaits. Each object's SQL storage is
a SQLite file under the state dir and survives a restart of the local platform. Alarms are
kept in an index next to the objects, fire on the running event loop, are retried with
backoff when the handler raises (up to 6 times, as on Cloudflare), and are re-armed when a
platform on the same state dir starts (`ensure_started`).
"""
from __future__ import annotations

import asyncio
import copy
import datetime as dt
import hashlib
import importlib
import inspect
import json
import logging
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import js
import workers
from pyodide.ffi import JsException

log = logging.getLogger("cmgsite.localrt.do")

ALARM_MAX_RETRIES = 6
ALARM_RETRY_BASE_SECONDS = 2.0
_ID_RE = re.compile(r"^[0-9a-f]{64}$")
_RESERVED = re.compile(r"\b_cf_", re.IGNORECASE)  # Cloudflare reserves _cf_* tables
_NOT_RPC = frozenset({"fetch", "alarm", "constructor", "webSocketMessage", "webSocketClose", "webSocketError"})


# ---- ids ---------------------------------------------------------------------------------
class DurableObjectId:
    """A 64-hex id; from a name it is a stable hash, so the same name reaches the same object."""

    def __init__(self, hex_id: str, name: str | None = None) -> None:
        if not _ID_RE.match(hex_id):
            raise JsException("Invalid Durable Object ID: must be 64 hex digits", "TypeError")
        self._hex, self.name = hex_id, name

    def toString(self) -> str:
        return self._hex

    def equals(self, other: "DurableObjectId") -> bool:
        return isinstance(other, DurableObjectId) and other._hex == self._hex

    def __str__(self) -> str:
        return self._hex

    def __repr__(self) -> str:
        return f"DurableObjectId({self._hex[:12]}…, name={self.name!r})"


# ---- SQL storage ---------------------------------------------------------------------------
class SqlStorageCursor:
    """The result of `sql.exec`: iterate rows (dicts), or toArray()/one()/raw()."""

    def __init__(self, columns: list[str], rows: list[tuple[Any, ...]], rows_read: int, rows_written: int) -> None:
        self.columnNames = columns
        self._rows = rows
        self._pos = 0
        self.rowsRead = rows_read
        self.rowsWritten = rows_written

    def _dict(self, row: tuple[Any, ...]) -> dict[str, Any]:
        return dict(zip(self.columnNames, row))

    def toArray(self) -> list[dict[str, Any]]:
        out = [self._dict(r) for r in self._rows[self._pos:]]
        self._pos = len(self._rows)
        return out

    def one(self) -> dict[str, Any]:
        rest = self._rows[self._pos:]
        if len(rest) != 1:
            got = "no results" if not rest else "more than one row"
            raise JsException(f"Expected exactly one result from SQL query, but got {got}.")
        self._pos = len(self._rows)
        return self._dict(rest[0])

    def raw(self) -> Iterator[list[Any]]:
        while self._pos < len(self._rows):
            self._pos += 1
            yield list(self._rows[self._pos - 1])

    def next(self) -> dict[str, Any]:
        if self._pos >= len(self._rows):
            return {"done": True}
        self._pos += 1
        return {"done": False, "value": self._dict(self._rows[self._pos - 1])}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while self._pos < len(self._rows):
            self._pos += 1
            yield self._dict(self._rows[self._pos - 1])


def _binding(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bytes)):
        return int(value) if isinstance(value, bool) else value
    raise JsException(f"Unsupported type for SQL binding: {type(value).__name__}", "TypeError")


class SqlStorage:
    """`ctx.storage.sql`: synchronous SQLite, one statement (or a script without bindings)."""

    _checked: dict[str, bool] = {}  # query text → uses a reserved name (queries repeat)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def exec(self, query: str, *bindings: Any) -> SqlStorageCursor:
        reserved = self._checked.get(query)
        if reserved is None:
            reserved = bool(_RESERVED.search(query))
            if len(self._checked) < 4096:
                self._checked[query] = reserved
        if reserved:
            raise JsException("not authorized: tables prefixed _cf_ are reserved: SQLITE_AUTH")
        args = tuple(_binding(b) for b in bindings)
        before = self._conn.total_changes
        try:
            cur = self._conn.execute(query, args)
            rows = cur.fetchall()
            columns = [d[0] for d in cur.description or ()]
        except (sqlite3.Warning, sqlite3.ProgrammingError) as exc:
            if args or "one statement" not in str(exc):
                raise JsException(f"{exc}: SQLITE_ERROR") from None
            self._conn.executescript(query)
            rows, columns = [], []
        except sqlite3.Error as exc:
            raise JsException(f"{exc}: SQLITE_ERROR") from None
        return SqlStorageCursor(columns, rows, len(rows), self._conn.total_changes - before)

    @property
    def databaseSize(self) -> int:
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        size = self._conn.execute("PRAGMA page_size").fetchone()[0]
        return int(pages * size)


class DurableObjectStorage:
    """`ctx.storage` of a SQLite-backed object: sql, a small KV API, transactions, alarms."""

    def __init__(self, conn: sqlite3.Connection, alarms: "_AlarmIndex", key: "ObjectKey") -> None:
        self._conn, self._alarms, self._key = conn, alarms, key
        self.sql = SqlStorage(conn)
        conn.execute("CREATE TABLE IF NOT EXISTS _cf_KV (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    async def get(self, key: str) -> Any:
        row = self._conn.execute("SELECT value FROM _cf_KV WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    async def put(self, key: str, value: Any) -> None:
        self._conn.execute("INSERT OR REPLACE INTO _cf_KV (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    async def delete(self, key: str) -> bool:
        return self._conn.execute("DELETE FROM _cf_KV WHERE key = ?", (key,)).rowcount > 0

    def transactionSync(self, callback: Callable[[], Any]) -> Any:
        self._conn.execute("SAVEPOINT txn")
        try:
            result = callback()
        except BaseException:
            self._conn.execute("ROLLBACK TO txn")
            self._conn.execute("RELEASE txn")
            raise
        self._conn.execute("RELEASE txn")
        return result

    async def setAlarm(self, scheduled_time: Any, options: Any = None) -> None:
        if isinstance(scheduled_time, dt.datetime):
            at_ms = scheduled_time.timestamp() * 1000
        elif isinstance(scheduled_time, (int, float)) and not isinstance(scheduled_time, bool):
            at_ms = float(scheduled_time)
        else:
            raise JsException("setAlarm() expects a Date or a number of milliseconds", "TypeError")
        self._alarms.set(self._key, at_ms)

    async def getAlarm(self, options: Any = None) -> float | None:
        return self._alarms.get(self._key)

    async def deleteAlarm(self, options: Any = None) -> None:
        self._alarms.delete(self._key)

    async def sync(self) -> None:
        return None


class DurableObjectAbort(BaseException):
    """Raised by ctx.abort(), a BaseException as in the SDK so `except Exception` cannot swallow it."""


class DurableObjectState:
    """The `ctx` an object is constructed with."""

    def __init__(self, instance: "_Instance", object_id: DurableObjectId, storage: DurableObjectStorage) -> None:
        self._instance = instance
        self.id = object_id
        self.storage = storage

    def blockConcurrencyWhile(self, callback: Callable[[], Any]) -> "asyncio.Future[Any]":
        """Run `callback`; no event reaches the object until it is done (as in a constructor)."""
        future = asyncio.ensure_future(callback())
        self._instance.blockers.append(future)
        return future

    def waitUntil(self, awaitable: Any) -> None:
        task = asyncio.ensure_future(awaitable)
        self._instance.background.add(task)
        task.add_done_callback(self._instance.background.discard)

    def abort(self, reason: str | None = None) -> None:
        """Reset the object: the next event reaches a fresh instance (storage is kept)."""
        raise DurableObjectAbort(reason or "Durable Object abort requested")


# ---- the alarm index ----------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectKey:
    script: str
    class_name: str
    object_id: str


class _AlarmIndex:
    """Alarms of every object, persisted (a file next to the objects) and armed on the loop."""

    def __init__(self, path: Path, on_change: Callable[[ObjectKey, float | None], None]) -> None:
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS alarms (script TEXT, class TEXT, id TEXT, name TEXT,"
                           " at_ms REAL NOT NULL, retries INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (script, class, id))")
        self._on_change = on_change
        self.names: dict[ObjectKey, str | None] = {}

    def set(self, key: ObjectKey, at_ms: float, retries: int = 0) -> None:
        self._conn.execute("INSERT OR REPLACE INTO alarms VALUES (?, ?, ?, ?, ?, ?)",
                           (key.script, key.class_name, key.object_id, self.names.get(key), at_ms, retries))
        self._on_change(key, at_ms)

    def get(self, key: ObjectKey) -> float | None:
        row = self._conn.execute("SELECT at_ms FROM alarms WHERE script = ? AND class = ? AND id = ?",
                                 (key.script, key.class_name, key.object_id)).fetchone()
        return None if row is None else row[0]

    def retries(self, key: ObjectKey) -> int:
        row = self._conn.execute("SELECT retries FROM alarms WHERE script = ? AND class = ? AND id = ?",
                                 (key.script, key.class_name, key.object_id)).fetchone()
        return 0 if row is None else int(row[0])

    def delete(self, key: ObjectKey) -> None:
        self._conn.execute("DELETE FROM alarms WHERE script = ? AND class = ? AND id = ?",
                           (key.script, key.class_name, key.object_id))
        self._on_change(key, None)

    def pending(self) -> list[tuple[ObjectKey, str | None, float]]:
        rows = self._conn.execute("SELECT script, class, id, name, at_ms FROM alarms").fetchall()
        return [(ObjectKey(s, c, i), n, at) for s, c, i, n, at in rows]

    def close(self) -> None:
        self._conn.close()


# ---- instances, stubs, namespaces ---------------------------------------------------------
@dataclass
class _Instance:
    key: ObjectKey
    obj: Any = None
    conn: sqlite3.Connection | None = None
    gate: asyncio.Lock | None = None
    loop: asyncio.AbstractEventLoop | None = None
    blockers: list["asyncio.Future[Any]"] = field(default_factory=list)
    background: set["asyncio.Future[Any]"] = field(default_factory=set)

    def gate_for_loop(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self.gate is None or self.loop is not loop:  # a lock belongs to one loop
            self.gate, self.loop = asyncio.Lock(), loop
        return self.gate


_SCALARS = frozenset({str, int, float, bool, type(None), bytes})


def _clone(value: Any, what: str = "value") -> Any:
    """Structured clone, as RPC does: plain data only, never a shared mutable object."""
    if type(value) in _SCALARS:
        return value
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, (tuple, bytearray)):  # the SDK refuses these (python_to_rpc)
        raise TypeError(f"{type(value)} cannot be sent over RPC.")
    if isinstance(value, list):
        return [_clone(v, what) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("RPC dict keys must be strings")
        return {k: _clone(v, what) for k, v in value.items()}
    if isinstance(value, dt.datetime):
        return copy.copy(value)
    raise JsException(f"DataCloneError: {type(value).__name__} could not be cloned ({what}).", "DataCloneError")


class DurableObjectStub:
    """What getByName/get return: RPC methods by attribute, and fetch."""

    def __init__(self, namespace: "DurableObjectNamespace", object_id: DurableObjectId) -> None:
        self._ns = namespace
        self.id = object_id
        self.name = object_id.name

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_") or method in _NOT_RPC:
            raise AttributeError(method)

        async def rpc(*args: Any, **kwargs: Any) -> Any:
            if kwargs:  # JS methods take positional arguments only
                raise TypeError("RPC methods take positional arguments only")
            sent = [_clone(a, "argument") for a in args]
            result = await self._ns._deliver(self.id, method, sent)
            return _clone(result, "result")

        rpc.__name__ = method
        return rpc

    async def fetch(self, resource: Any, **options: Any) -> "workers.Response":
        async def to_object(request: js.Request) -> js.Response:
            response = await self._ns._deliver(self.id, "fetch", [workers.Request(request)])
            if not isinstance(response, workers.Response):
                raise JsException("Durable Object fetch() must return a Response", "TypeError")
            return response.js_object

        return await workers.fetch(resource, fetcher=to_object, **options)


class DurableObjectNamespace:
    """One class's objects for one script (`[[durable_objects.bindings]]`)."""

    def __init__(self, runtime: "DurableObjects", script: str, class_name: str, module: str) -> None:
        self._rt, self.script, self.class_name, self.module = runtime, script, class_name, module
        self.dir = runtime.root / script / class_name
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "namespace.json").write_text(json.dumps({"module": module, "class": class_name}))
        self._instances: dict[str, _Instance] = {}
        self._cls: Any = None

    # -- the binding's API --
    def idFromName(self, name: str) -> DurableObjectId:
        if not isinstance(name, str):
            raise JsException("idFromName() expects a string", "TypeError")
        digest = hashlib.sha256(f"{self.script}\x00{self.class_name}\x00{name}".encode()).hexdigest()
        return DurableObjectId(digest, name)

    def idFromString(self, hex_id: str) -> DurableObjectId:
        return DurableObjectId(str(hex_id).lower())

    def newUniqueId(self, options: Any = None) -> DurableObjectId:
        return DurableObjectId(secrets.token_hex(32))

    def get(self, object_id: DurableObjectId, options: Any = None) -> DurableObjectStub:
        if not isinstance(object_id, DurableObjectId):
            raise JsException("get() expects a DurableObjectId", "TypeError")
        return DurableObjectStub(self, object_id)

    def getByName(self, name: str, options: Any = None) -> DurableObjectStub:
        return self.get(self.idFromName(name))

    def jurisdiction(self, name: str) -> "DurableObjectNamespace":
        return self  # one location locally: every jurisdiction is this machine

    # -- local plumbing --
    def _class(self) -> Any:
        if self._cls is None:
            self._cls = getattr(importlib.import_module(self.module), self.class_name)
        return self._cls

    def key(self, object_id: DurableObjectId) -> ObjectKey:
        return ObjectKey(self.script, self.class_name, object_id.toString())

    def _instance(self, object_id: DurableObjectId) -> _Instance:
        hex_id = object_id.toString()
        inst = self._instances.get(hex_id)
        if inst is None:
            key = self.key(object_id)
            if object_id.name is not None:
                self._rt.alarms.names[key] = object_id.name
            inst = self._instances[hex_id] = _Instance(key)
        if inst.obj is None:
            env = self._rt.env_of(self.script)
            if env is None:
                raise JsException(f"Durable Object namespace {self.script}/{self.class_name} has no script")
            conn = sqlite3.connect(str(self.dir / f"{hex_id}.sqlite"), isolation_level=None, check_same_thread=False)
            # One live instance per id owns its file: an exclusive lock spares the shared-memory
            # index and lock calls on every commit; WAL + NORMAL survives a process restart.
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            inst.conn = conn
            storage = DurableObjectStorage(conn, self._rt.alarms, inst.key)
            inst.obj = self._class()(DurableObjectState(inst, object_id, storage), env)
        return inst

    async def _deliver(self, object_id: DurableObjectId, method: str, args: list[Any]) -> Any:
        """One event to one object, through its gate."""
        self._rt.ensure_started()
        inst = self._instance(object_id)
        async with inst.gate_for_loop():
            while inst.blockers:
                await inst.blockers.pop(0)
            target = getattr(inst.obj, method, None)
            if target is None and method == "alarm":
                return None  # an object without an alarm handler ignores its alarms
            if method not in ("fetch", "alarm") and (target is None or method.startswith("_")
                                                    or not callable(target)):
                raise JsException(f'The RPC receiver does not implement the method "{method}".', "TypeError")
            try:
                result = target(*args)
                if inspect.isawaitable(result):
                    result = await result
            except JsException:
                raise
            except Exception as exc:  # crosses the boundary as a JS Error with the message
                raise JsException(f"{type(exc).__name__}: {exc}") from None
            except DurableObjectAbort as abort:
                self._reset(inst)
                raise JsException(f"Durable Object reset because its code was aborted: {abort}") from None
            return result

    def _reset(self, inst: _Instance) -> None:
        if inst.conn is not None:
            inst.conn.close()
        inst.obj, inst.conn = None, None

    def close(self) -> None:
        for inst in self._instances.values():
            if inst.conn is not None:
                inst.conn.close()
        self._instances.clear()


class DurableObjects:
    """Every Durable Object namespace of the local platform, keyed by (script, class)."""

    def __init__(self, root: Path, env_of: Callable[[str], Any], *, clock: Callable[[], float] = time.time) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.env_of = env_of
        self.clock = clock
        self._namespaces: dict[tuple[str, str], DurableObjectNamespace] = {}
        self._timers: dict[ObjectKey, asyncio.TimerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.alarm_tasks: set["asyncio.Future[Any]"] = set()
        self.alarms = _AlarmIndex(self.root / "_alarms.sqlite", self._arm)

    def namespace(self, script: str, class_name: str, module: str) -> DurableObjectNamespace:
        """The one namespace object for a script's class (the same across script reloads)."""
        key = (script, class_name)
        ns = self._namespaces.get(key)
        if ns is None:
            ns = self._namespaces[key] = DurableObjectNamespace(self, script, class_name, module)
        return ns

    def ensure_started(self) -> None:
        """Arm every persisted alarm on the running loop (first use, or after a loop change)."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        self._loop = loop
        self._timers.clear()
        for key, name, at_ms in self.alarms.pending():
            if name is not None:
                self.alarms.names.setdefault(key, name)
            self._arm(key, at_ms)

    def _arm(self, key: ObjectKey, at_ms: float | None) -> None:
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        if at_ms is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # armed by ensure_started once a loop runs
        if self._loop is not loop:
            self.ensure_started()
            return
        delay = max(0.0, at_ms / 1000 - self.clock())
        self._timers[key] = loop.call_later(delay, self._fire, key, at_ms)

    def _fire(self, key: ObjectKey, at_ms: float) -> None:
        self._timers.pop(key, None)
        task = asyncio.ensure_future(self._run_alarm(key, at_ms))
        self.alarm_tasks.add(task)
        task.add_done_callback(self.alarm_tasks.discard)

    async def _run_alarm(self, key: ObjectKey, at_ms: float) -> None:
        ns = self._namespace_of(key)
        if ns is None or self.alarms.get(key) != at_ms:
            return  # the script is gone, or the alarm was moved or deleted meanwhile
        retries = self.alarms.retries(key)
        object_id = DurableObjectId(key.object_id, self.alarms.names.get(key))
        self.alarms.delete(key)  # as on Cloudflare: getAlarm() is null while the handler runs
        try:
            await ns._deliver(object_id, "alarm", [{"retryCount": retries, "isRetry": retries > 0}])
        except Exception as exc:
            log.warning("alarm of %s/%s failed (retry %d): %s", key.script, key.class_name, retries, exc)
            if self.alarms.get(key) is None and retries < ALARM_MAX_RETRIES:
                delay = ALARM_RETRY_BASE_SECONDS * (2 ** retries)
                self.alarms.set(key, (self.clock() + delay) * 1000, retries + 1)

    def _namespace_of(self, key: ObjectKey) -> DurableObjectNamespace | None:
        ns = self._namespaces.get((key.script, key.class_name))
        if ns is not None:
            return ns
        meta = self.root / key.script / key.class_name / "namespace.json"
        if self.env_of(key.script) is None or not meta.exists():
            return None
        spec = json.loads(meta.read_text())
        return self.namespace(key.script, spec["class"], spec["module"])

    async def drain(self) -> None:
        """Wait for alarm handlers that are running now."""
        while self.alarm_tasks:
            await asyncio.gather(*list(self.alarm_tasks), return_exceptions=True)

    def close(self) -> None:
        """Stop timers and close every file (the platform is going away)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self.alarm_tasks):  # a handler mid-flush must not touch closed files
            task.cancel()
        for ns in self._namespaces.values():
            ns.close()
        self.alarms.close()


def durable_object_bindings(runtime: DurableObjects, classes: dict[str, str]) -> Callable[[Any], dict[str, Any]]:
    """A binding provider: `{binding: class name}` for every script whose module defines the class."""

    def provide(spec: Any) -> dict[str, Any]:
        module = importlib.import_module(spec.module)
        return {binding: runtime.namespace(spec.name, cls, spec.module)
                for binding, cls in classes.items() if hasattr(module, cls)}

    return provide

"""Test plumbing: one local platform on the real workerd, shared by the end-to-end tests.

    def test_x(platform): httpx.get(platform.url + "/api/health", headers={"Host": ...})

The platform is the run command's, on free loopback ports: the dispatcher and one workerd per
tenant script (localrt/node/host.mjs), D1 and KV persisted where wrangler looks, the seeded
demo tenants wired to the session's PostgreSQL + PostgREST and to the fake OAuth providers.
Tests that change it (a suspended tenant, a removed script) put it back themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import uvicorn

from dispatcher.routing import kv_key
from localrt.d1 import D1Database
from localrt.namespace import NamespaceRegistry, ScriptSpec
from localrt.platform import StatePaths
from localrt.workerd import WorkerdHost


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """Serves an ASGI app (the fake OAuth providers) with uvicorn on a loopback port, in a thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            server_header=False,
            date_header=False,
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("local server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@dataclass
class Platform:
    host: WorkerdHost
    paths: StatePaths
    registry: NamespaceRegistry
    d1: D1Database
    wrangler_state: Path

    @property
    def url(self) -> str:
        return self.host.url

    @property
    def port(self) -> int:
        return self.host.port

    def get(self, host: str, path: str = "/api/health", **kw: Any) -> httpx.Response:
        headers = {"Host": host, **kw.pop("headers", {})}
        return httpx.get(self.url + path, headers=headers, timeout=30, **kw)

    # -- the namespace ---------------------------------------------------------------------
    def deploy(self, spec: ScriptSpec, secrets: dict[str, str] | None = None) -> None:
        """Upload a script and wait until it answers (a Python Worker takes seconds to start)."""
        self.registry.deploy(spec, secrets)
        self.host.sync()

    def remove(self, name: str) -> None:
        self.registry.remove(name)
        self.host.sync()

    @contextlib.contextmanager
    def script_replaced(
        self, name: str, spec: ScriptSpec | None, secrets: dict[str, str] | None = None
    ) -> Iterator[None]:
        """Replace (or, with None, remove) a script for the block; the original comes back after."""
        original, original_secrets = self.registry.get(name), self.registry.secrets_of(name)
        try:
            if spec is None:
                self.remove(name)
            else:
                self.deploy(spec, secrets)
            yield
        finally:
            if original is not None:
                self.deploy(original, original_secrets)

    def set_secret(self, script: str, name: str, value: str | None) -> None:
        """Change one tenant secret and restart that tenant's Worker (`wrangler secret put`)."""
        values = self.registry.secrets_of(script)
        if value is None:
            values.pop(name, None)
        else:
            values[name] = value
        spec = self.registry.get(script)
        assert spec is not None, script
        self.deploy(spec, values)

    def subrequests(self) -> dict[str, dict[str, int]]:
        """What each Worker asked of the outside since the last call (the host's ledger; zeroed)."""
        return dict(self.host._control("POST", "/subrequests")["subrequests"])

    def invocations(self) -> list[dict[str, Any]]:
        return list(self.host._control("GET", "/invocations")["invocations"])

    @contextlib.contextmanager
    def fault(self, script: str, kind: str) -> Iterator[None]:
        """The namespace fails for `script` as Cloudflare's does on a limit hit or crash."""
        self.host.set_fault(script, kind)
        try:
            yield
        finally:
            self.host.set_fault(script, None)

    # -- routing data ------------------------------------------------------------------------
    def sql(self, sql: str, *args: Any) -> Any:
        return asyncio.run(self.d1.prepare(sql).bind(*args).run())

    def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return list(asyncio.run(self.d1.prepare(sql).bind(*args).all())["results"])

    def kv_get(self, host: str) -> str | None:
        return self.host._control("POST", "/kv/get", {"binding": "TENANT_CACHE", "key": kv_key(host)})["value"]

    def kv_put(self, host: str, value: str) -> None:
        self.host._control(
            "POST", "/kv/put", {"binding": "TENANT_CACHE", "key": kv_key(host), "value": value, "ttl": 300}
        )

    def purge(self, host: str) -> None:
        self.host.purge_kv(kv_key(host))

    def set_status(self, tenant_id: str, status: str, hosts: list[str]) -> None:
        """Change a tenant's status the way the control plane does: D1, then purge KV."""
        self.sql("UPDATE tenants SET status = ?1 WHERE tenant_id = ?2", status, tenant_id)
        for h in hosts:
            self.purge(h)

    def log_text(self) -> str:
        return (self.paths.root / "workerd.log").read_text(errors="replace")


def raw_request(platform: "Platform", head: str, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    """One HTTP/1.1 request written by hand (headers that declare a body we never send), and
    its answer: the server must answer from the headers alone."""
    with socket.create_connection(("127.0.0.1", platform.port), timeout=60) as s:
        s.sendall(head.encode("latin-1") + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head_part, _, rest = data.partition(b"\r\n\r\n")
        status = int(head_part.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in head_part.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(rest) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
    return status, json.loads(rest[:length])


def pid_listening_on(port: int) -> int | None:
    """The process that listens on a loopback TCP port (its socket inode in /proc/net/tcp)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[3] == "0A" and int(parts[1].split(":")[1], 16) == port:
            inode = parts[9]
    if inode is None:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]" for fd in os.listdir(f"/proc/{pid}/fd")):
                return int(pid)
        except OSError:
            continue
    return None

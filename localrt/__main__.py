"""`python -m localrt run`: the whole platform on 127.0.0.1:8787, in the foreground, on workerd.

Starts a private PostgreSQL (migrated and seeded) and the real PostgREST behind the local
Supabase gateway, applies the D1 migrations with wrangler (the same SQLite file `wrangler
d1 ... --local` uses), seeds the demo tenants, builds the Worker bundles and serves them
from workerd (localrt/node/host.mjs: the dispatcher and one workerd per tenant script)
until Ctrl-C or SIGTERM, then stops everything it started. State is kept between runs.

One run per state directory (a lock in it; a second run refuses and touches nothing). The
demo tenants are seeded into a new state directory only: later runs keep whatever the
operator changed (suspended, re-tiered, removed), unless `--reseed-demo` asks for the demo
values back. Every run refreshes the local Supabase URL and keys in the tenant scripts'
secrets, since those belong to the local stack, not to the operator.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import logging
import os
import secrets
import signal
import socket
import sys
import time
import tomllib
from pathlib import Path
from typing import IO, Any

from localrt.d1 import D1Database, apply_migrations_with_wrangler, wrangler_d1_file
from localrt.demo import ensure_platform_keys, seed_demo, set_dispatcher_supabase
from localrt.devvars import read_dev_vars, write_dev_vars
from localrt.platform import StatePaths
from localrt.postgres import PgCluster
from localrt.supabase_stack import JwtKeyFollower, SupabaseStack
from localrt.workerd import HostError, WorkerdHost
from shared.keys import Keyring

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("cmgsite.localrt")


def default_state_dir() -> Path:
    """The local platform's state: CMGSITE_STATE_DIR, else .local/ in the checkout."""
    return Path(os.environ.get("CMGSITE_STATE_DIR") or ROOT / ".local")


def default_wrangler_state() -> Path:
    """wrangler's --persist-to for D1/KV: CMGSITE_WRANGLER_STATE, else .wrangler/state."""
    return Path(os.environ.get("CMGSITE_WRANGLER_STATE") or ROOT / ".wrangler" / "state")


def supabase_secrets_path(state_dir: Path) -> Path:
    """Where the local Supabase's URL and keys are written for the tenant CLI and scripts."""
    return state_dir / "secrets" / "supabase.dev.vars"


def dispatcher_vars() -> dict[str, str]:
    """The dispatcher's [vars], read from the deployed config so local and deployed agree."""
    parsed = tomllib.loads((ROOT / "wrangler.dispatcher.toml").read_text())
    return {k: str(v) for k, v in parsed.get("vars", {}).items()}


class StateInUse(Exception):
    """Another run command holds this state directory."""


def lock_state(state: Path) -> IO[str]:
    """Hold `<state>/run.lock` for this process's life; refuse if another run holds it."""
    path = state / "run.lock"
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise StateInUse(
            f"another `run` (pid {holder}) is using {state}: stop it first, or give this one "
            "its own --state-dir, --wrangler-state and ports"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def busy_ports(host: str, ports: dict[str, int]) -> list[str]:
    """The options whose port cannot be bound on `host` now (in use by another program)."""
    busy = []
    for option, port in ports.items():
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            # As the platform binds it: connections of a previous run in TIME_WAIT do not make the
            # port busy, another program listening on it does.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                busy.append(f"{option} {port}")
    return busy


def demo_marker(state: Path) -> Path:
    return state / "demo-seeded.json"


def refresh_stack_secrets(registry: Any, supabase: dict[str, str]) -> None:
    """Point every registered tenant script at this run's local Supabase; leave the rest alone."""
    for name in registry.names():
        spec = registry.get(name)
        if spec is None:
            continue
        values = registry.secrets_of(name)
        if all(values.get(k) == v for k, v in supabase.items()):
            continue
        registry.deploy(spec, secrets={**values, **supabase})


def _jwt_secret(state_dir: Path) -> str:
    values = read_dev_vars(supabase_secrets_path(state_dir))
    return values.get("SUPABASE_JWT_SECRET") or secrets.token_urlsafe(48)


class _Stop(Exception):
    pass


def _terminate(signum: int, frame: Any) -> None:
    raise _Stop(signal.Signals(signum).name)


def run(args: argparse.Namespace) -> int:
    state: Path = args.state_dir
    state.mkdir(parents=True, exist_ok=True)
    try:
        lock = lock_state(state)
    except StateInUse as exc:
        log.error("%s", exc)
        return 1
    cluster = PgCluster(state / "pg", port=args.pg_port)
    loopback = {"--supabase-port": args.supabase_port}
    if not cluster.is_running():  # a cluster left running by an earlier run of this state is reused
        loopback["--pg-port"] = args.pg_port
    busy = busy_ports(args.host, {"--port": args.port}) + busy_ports("127.0.0.1", loopback)
    if busy:
        lock.close()
        log.error(
            "port in use on this machine: %s. Stop what holds it, or choose another (python -m localrt run "
            "--help lists the options)",
            ", ".join(busy),
        )
        return 1
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    stack: SupabaseStack | None = None
    host: WorkerdHost | None = None
    try:
        reseed = args.reseed_demo or not demo_marker(state).exists()
        fresh_pg = not (cluster.data_dir / "PG_VERSION").is_file()
        log.info("starting PostgreSQL on 127.0.0.1:%d (data in %s)", args.pg_port, cluster.data_dir)
        cluster.init()
        cluster.start()
        applied = cluster.apply_migrations()
        if reseed or fresh_pg:
            cluster.seed()
        log.info(
            "Supabase migrations applied (%d new)%s",
            len(applied),
            ", demo seed loaded" if reseed or fresh_pg else "; demo tenants kept as they are",
        )
        stack = SupabaseStack(cluster, jwt_secret=_jwt_secret(state), port=args.supabase_port)
        paths = StatePaths(state)
        follower = JwtKeyFollower(stack, paths.platform_secrets)  # rotation keys (`tenants.py keys rotate jwt`)
        follower.tick()
        stack.start()
        supabase = {
            "SUPABASE_URL": stack.url,
            "SUPABASE_ANON_KEY": stack.anon_key,
            "SUPABASE_SERVICE_ROLE_KEY": stack.service_role_key,
            "SUPABASE_JWT_SECRET": stack.jwt_secret,
        }
        write_dev_vars(supabase_secrets_path(state), {**supabase, "SUPABASE_DB_URL": cluster.dsn})
        rotation = read_dev_vars(paths.platform_secrets).get("SUPABASE_JWT_KEYS")
        tenant_secrets = {**supabase, **ensure_platform_keys(paths.platform_secrets)}
        if rotation:  # tenants sign with the rotation keyring's active key (controlplane.keys)
            tenant_secrets["SUPABASE_JWT_SECRET"] = Keyring.parse(rotation).active_only().format()
        log.info("Supabase data API (real PostgREST) at %s/rest/v1/", stack.url)

        log.info("applying D1 migrations with wrangler (local)")
        fresh_d1 = wrangler_d1_file(args.wrangler_state) is None
        d1_path = apply_migrations_with_wrangler(args.wrangler_state)
        if reseed or fresh_d1:
            asyncio.run(
                seed_demo(D1Database(d1_path), paths.registry(), paths.dispatcher_secrets, extra_secrets=tenant_secrets)
            )
            demo_marker(state).write_text(json.dumps({"seeded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
        else:
            refresh_stack_secrets(paths.registry(), tenant_secrets)
        set_dispatcher_supabase(paths.dispatcher_secrets, supabase)
        log.info("demo tenants ready; building the Workers and starting workerd (first start takes a while)")
        host = WorkerdHost(
            paths.namespace,
            paths.secrets,
            args.wrangler_state,
            state,
            port=args.port,
            host=args.host,
            dispatcher_vars=dispatcher_vars(),
            python_snapshot_dir=None if args.no_snapshots else state / "python-snapshots",
        )
        host.start()
        started = next((e for e in host.events if e.get("event") == "ready"), {})
        log.info(
            "serving on http://%s:%d from workerd (dispatcher + %d tenant Workers ready in %.1f s); "
            "try: curl -H 'Host: partner1.cozyartzmedia.com' http://%s:%d/api/health",
            args.host,
            args.port,
            len(started.get("scripts", [])),
            started.get("start_ms", 0) / 1000,
            args.host,
            args.port,
        )
        while host.running():
            time.sleep(0.5)
            follower.tick()
        log.error("the platform host exited unexpectedly (see %s)", state / "workerd.log")
        return 1
    except _Stop as stop:
        log.info("%s: stopping", stop)
    except HostError as exc:
        log.error("%s", exc)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finish cleaning up even if signalled again
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if host is not None:
            host.stop()
        if stack is not None:
            stack.stop()
        if cluster.is_running():
            cluster.stop()
        log.info("stopped workerd, PostgREST, the gateway and PostgreSQL; state kept in %s", state)
        lock.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localrt", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "run",
        help="start PostgreSQL + PostgREST, migrate, seed and serve the local platform",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address the platform (the dispatcher) listens on")
    p.add_argument("--port", type=int, default=8787, help="the platform's port")
    p.add_argument("--pg-port", type=int, default=54322, help="PostgreSQL's port (127.0.0.1)")
    p.add_argument("--supabase-port", type=int, default=54321, help="the Supabase API's port (127.0.0.1)")
    p.add_argument(
        "--state-dir",
        type=Path,
        default=default_state_dir(),
        help="PostgreSQL, the namespace, secrets, snapshots, logs (env CMGSITE_STATE_DIR)",
    )
    p.add_argument(
        "--wrangler-state",
        type=Path,
        default=default_wrangler_state(),
        help="D1 and KV, where `wrangler --local` keeps them (env CMGSITE_WRANGLER_STATE)",
    )
    p.add_argument(
        "--no-snapshots",
        action="store_true",
        help="start every Python Worker by importing (by default a memory snapshot per bundle is saved "
        "in STATE_DIR/python-snapshots on the first start and restored after)",
    )
    p.add_argument(
        "--reseed-demo",
        action="store_true",
        help="restore the three demo tenants' seed values (by default only a new state directory is seeded)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

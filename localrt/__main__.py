"""`python -m localrt run`: the whole platform on 127.0.0.1:8787, in the foreground.

Starts a private PostgreSQL (migrated and seeded) and the real PostgREST behind the local
Supabase gateway, applies the D1 migrations with wrangler (the same SQLite file `wrangler
d1 ... --local` uses), seeds the demo tenants, serves until Ctrl-C or SIGTERM, then stops
everything it started. State (database, secrets, KV, namespace) is kept between runs.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

import uvicorn

from localrt import install_shims

install_shims()

from localrt.auth_kv import auth_kv_binding  # noqa: E402
from localrt.d1 import apply_migrations_with_wrangler  # noqa: E402
from localrt.demo import seed_demo  # noqa: E402
from localrt.devvars import read_dev_vars, write_dev_vars  # noqa: E402
from localrt.platform import build_platform  # noqa: E402
from localrt.postgres import PgCluster  # noqa: E402
from localrt.server import EdgeApp  # noqa: E402
from localrt.supabase_stack import SupabaseStack  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("cmgsite.localrt")


def supabase_secrets_path(state_dir: Path) -> Path:
    """Where the local Supabase's URL and keys are written for the tenant CLI and scripts."""
    return state_dir / "secrets" / "supabase.dev.vars"


def _jwt_secret(state_dir: Path) -> str:
    values = read_dev_vars(supabase_secrets_path(state_dir))
    return values.get("SUPABASE_JWT_SECRET") or secrets.token_urlsafe(48)


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM before uvicorn took over: unwind through `finally`


def run(args: argparse.Namespace) -> int:
    state: Path = args.state_dir
    state.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _terminate)
    cluster = PgCluster(state / "pg", port=args.pg_port)
    stack: SupabaseStack | None = None
    try:
        log.info("starting PostgreSQL on 127.0.0.1:%d (data in %s)", args.pg_port, cluster.data_dir)
        cluster.init()
        cluster.start()
        applied = cluster.apply_migrations()
        cluster.seed()
        log.info("Supabase migrations applied (%d new), seed loaded", len(applied))
        stack = SupabaseStack(cluster, jwt_secret=_jwt_secret(state), port=args.supabase_port)
        stack.start()
        supabase = {
            "SUPABASE_URL": stack.url, "SUPABASE_ANON_KEY": stack.anon_key,
            "SUPABASE_SERVICE_ROLE_KEY": stack.service_role_key, "SUPABASE_JWT_SECRET": stack.jwt_secret,
        }
        write_dev_vars(supabase_secrets_path(state), {**supabase, "SUPABASE_DB_URL": cluster.dsn})
        log.info("Supabase data API (real PostgREST) at %s/rest/v1/", stack.url)

        log.info("applying D1 migrations with wrangler (local)")
        d1_path = apply_migrations_with_wrangler(args.wrangler_state)
        platform = build_platform(state, d1_path, extra_bindings=[auth_kv_binding(state / "auth_kv.sqlite")])
        asyncio.run(seed_demo(platform, extra_secrets=supabase))
        log.info("seeded demo tenants; serving on http://%s:%d", args.host, args.port)
        config = uvicorn.Config(EdgeApp(platform), host=args.host, port=args.port, server_header=False,
                                date_header=False, log_level="info", lifespan="on")
        uvicorn.Server(config).run()
    except KeyboardInterrupt:
        log.info("interrupted")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finish cleaning up even if signalled again
        if stack is not None:
            stack.stop()
        if cluster.is_running():
            cluster.stop()
        log.info("stopped PostgREST, the gateway and PostgreSQL; state kept in %s", state)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localrt", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="start PostgreSQL + PostgREST, migrate, seed and serve the local platform")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8787)
    p.add_argument("--pg-port", type=int, default=54322)
    p.add_argument("--supabase-port", type=int, default=54321)
    p.add_argument("--state-dir", type=Path, default=ROOT / ".local")
    p.add_argument("--wrangler-state", type=Path, default=ROOT / ".wrangler" / "state")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

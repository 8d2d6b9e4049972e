"""`python -m localrt run`: the whole platform on 127.0.0.1:8787, in the foreground.

Applies the D1 migrations with wrangler (same SQLite file `wrangler d1 ... --local` uses),
seeds the demo tenants, serves until Ctrl-C or SIGTERM, then stops what it started.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

import uvicorn

from localrt import install_shims

install_shims()

from localrt.d1 import apply_migrations_with_wrangler  # noqa: E402
from localrt.demo import seed_demo  # noqa: E402
from localrt.platform import build_platform  # noqa: E402
from localrt.server import EdgeApp  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localrt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="migrate, seed and serve the local platform")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8787)
    run.add_argument("--state-dir", type=Path, default=ROOT / ".local")
    run.add_argument("--wrangler-state", type=Path, default=ROOT / ".wrangler" / "state")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log = logging.getLogger("cmgsite.localrt")

    log.info("applying D1 migrations with wrangler (local)")
    d1_path = apply_migrations_with_wrangler(args.wrangler_state)
    platform = build_platform(args.state_dir, d1_path)
    asyncio.run(seed_demo(platform))
    log.info("seeded demo tenants; serving on http://%s:%d", args.host, args.port)
    config = uvicorn.Config(EdgeApp(platform), host=args.host, port=args.port, server_header=False,
                            date_header=False, log_level="info", lifespan="on")
    uvicorn.Server(config).run()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

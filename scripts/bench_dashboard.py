#!/usr/bin/env python3
"""Benchmark: the platform dashboard for 1,000 tenants vs 10 (issue 12: ≤ 1.5×). Rerun:

    .venv/bin/python scripts/bench_dashboard.py [--small 10] [--big 1000] [--requests 21] [--rounds 3]

Starts its own throwaway stack on loopback ports (a PostgreSQL cluster in a temp dir with the
migrations and seed, PostgREST behind the apikey gateway, the platform host on workerd with the
three demo tenants and the METRICS binding; the development database is never touched). Then,
as the primary tenant's super_admin (a session cookie signed with the primary tenant's secret):
with --small tenants in `public.tenants` (the demo ones plus `scale-N` rows, each with a month
of usage), and with --big, alternating --rounds times (so load on the machine falls on both
sizes alike), it measures the p50 latency of
  - `GET /api/platform/dashboard` (the JSON: totals over every tenant, the first page of 50), and
  - `GET /platform` (the server-rendered page, a client of the same data),
through the dispatcher, after one untimed warm-up each. The view makes one Supabase query
(public.platform_dashboard: the totals computed in SQL over all tenants, one sorted page of rows)
plus the metrics queries for that page, whatever the count (asserted by
tests/test_dashboards.py::test_the_platform_view_costs_the_same_queries_for_1000_tenants_as_for_10).
Prints one JSON report: both p50s and the big/small ratio for each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from localrt.__main__ import dispatcher_vars  # noqa: E402
from localrt.d1 import D1Database, apply_migrations_with_wrangler  # noqa: E402
from localrt.demo import seed_demo  # noqa: E402
from localrt.platform import StatePaths  # noqa: E402
from localrt.postgres import PgCluster  # noqa: E402
from localrt.supabase_stack import SupabaseStack, find_free_port  # noqa: E402
from localrt.workerd import WorkerdHost, build_all  # noqa: E402
from shared.session import issue_session  # noqa: E402
from tenant_worker.sessions import SESSION_COOKIE  # noqa: E402

PRIMARY_HOST, PRIMARY_SCRIPT = "cozyartzmedia.com", "cmgsite-primary-tenant"
STAFF = "00000000-0000-4000-8000-000000000001"  # seed.sql: super_admin of the primary tenant
PREFIX = "scale-"


def count(conn: Any, sql: str, *args: Any) -> int:
    row = conn.execute(sql, args).fetchone()
    assert row is not None
    return int(row[0])


def resize(cluster: PgCluster, total: int) -> int:
    """Add or remove `scale-N` tenants (each with a month of AI usage) until `public.tenants` holds `total`."""
    with cluster.connect() as conn:
        base = count(conn, "select count(*) from public.tenants where tenant_id not like %s", PREFIX + "%")
        want = total - base
        if want < 0:
            raise SystemExit(f"the database already holds {base} tenants besides the scale ones")
        conn.execute(
            "delete from public.tenants where tenant_id like %s and tenant_id not in"
            " (select 'scale-' || i from generate_series(1, %s::int) i)",
            (PREFIX + "%", want),
        )
        have = count(conn, "select count(*) from public.tenants where tenant_id like %s", PREFIX + "%")
        if want > have:
            span = (have + 1, want)
            conn.execute(
                "insert into public.tenants (tenant_id, name, domain, type, subscription_tier, script_name)"
                " select 'scale-' || i, 'Scale ' || i, 'scale-' || i || '.example.com', 'custom-domain',"
                " (array['starter','growth','enterprise'])[1 + i %% 3], 'cmgsite-scale-' || i"
                " from generate_series(%s::int, %s::int) i",
                span,
            )
            conn.execute(
                "insert into public.tenant_usage (tenant_id, usage_type, period, usage_count)"
                " select 'scale-' || i, 'ai_calls', to_char(now(), 'YYYY-MM'), i %% 7"
                " from generate_series(%s::int, %s::int) i",
                span,
            )
        conn.execute("analyze public.tenants")
        return count(conn, "select count(*) from public.tenants")


def samples(client: httpx.Client, url: str, headers: dict[str, str], n: int) -> tuple[list[float], httpx.Response]:
    r = client.get(url, headers=headers)  # warm-up (untimed)
    assert r.status_code == 200, (url, r.status_code, r.text[:300])
    out = []
    for _ in range(n):
        began = time.perf_counter()
        r = client.get(url, headers=headers)
        out.append(time.perf_counter() - began)
        assert r.status_code == 200, (url, r.status_code, r.text[:300])
    return out, r


def measure(client: httpx.Client, host: WorkerdHost, cookie: dict[str, str], n: int, into: dict[str, Any]) -> None:
    headers = {"Host": PRIMARY_HOST, **cookie}
    json_s, r = samples(client, host.url + "/api/platform/dashboard", headers, n)
    page_s, page = samples(client, host.url + "/platform", headers, n)
    into.setdefault("json", []).extend(json_s)
    into.setdefault("page", []).extend(page_s)
    into.update(
        {
            "tenants_total": r.json()["total"],
            "tenants_on_page": len(r.json()["tenants"]),
            "json_bytes": len(r.content),
            "page_bytes": len(page.content),
        }
    )


def summary(raw: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in raw.items() if k not in ("json", "page")}
    out["json_p50_ms"] = round(statistics.median(raw["json"]) * 1000, 1)
    out["page_p50_ms"] = round(statistics.median(raw["page"]) * 1000, 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=10)
    ap.add_argument("--big", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=21, help="timed requests per view, size and round (p50 of all)")
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="the sizes alternate this many times (small, big, small, ...), so load on the machine falls on both alike",
    )
    args = ap.parse_args()
    build_all()
    from tests.support import free_port  # the same helper the tests use

    work = Path(tempfile.mkdtemp(prefix="cmgsite-bench-dashboard-"))
    os.chmod(work, 0o711)  # the unprivileged postgres user must reach the data dir inside
    cluster = PgCluster(data_dir=work / "pg", port=find_free_port(), fast=True)
    stack: SupabaseStack | None = None
    host: WorkerdHost | None = None
    try:
        cluster.start()
        cluster.apply_migrations()
        cluster.seed()
        stack = SupabaseStack(cluster, jwt_secret=secrets.token_urlsafe(48), port=find_free_port())
        stack.start()
        wrangler_state = work / "wrangler"
        d1 = D1Database(apply_migrations_with_wrangler(wrangler_state))
        paths = StatePaths(work / "state")
        registry = paths.registry()
        supabase = {
            "SUPABASE_URL": stack.url,
            "SUPABASE_ANON_KEY": stack.anon_key,
            "SUPABASE_JWT_SECRET": stack.jwt_secret,
            "SUPABASE_SERVICE_ROLE_KEY": stack.service_role_key,
        }
        asyncio.run(seed_demo(d1, registry, paths.dispatcher_secrets, extra_secrets=supabase))
        host = WorkerdHost(
            paths.namespace,
            paths.secrets,
            wrangler_state,
            paths.root,
            port=free_port(),
            dispatcher_vars=dispatcher_vars(),
        )
        host.start(build=False)
        token = issue_session(
            registry.secrets_of(PRIMARY_SCRIPT)["SESSION_SECRET"],
            tenant_id="cozyartz",
            user_id=STAFF,
            role="super_admin",
            now=time.time(),
        )
        cookie = {"cookie": f"{SESSION_COOKIE}={token}"}
        raw: dict[str, dict[str, Any]] = {"small": {}, "big": {}}
        with httpx.Client(timeout=60) as client:
            for _ in range(args.rounds):
                for size, total in (("small", args.small), ("big", args.big)):
                    if resize(cluster, total) != total:
                        raise SystemExit(f"could not make {total} tenants")
                    measure(client, host, cookie, args.requests, raw[size])
        small, big = summary(raw["small"]), summary(raw["big"])
        if (small["tenants_total"], big["tenants_total"]) != (args.small, args.big):
            raise SystemExit(f"the dashboard counted {small['tenants_total']} and {big['tenants_total']} tenants")
        print(
            json.dumps(
                {
                    "small": small,
                    "big": big,
                    "requests": args.requests,
                    "rounds": args.rounds,
                    "json_ratio": round(big["json_p50_ms"] / small["json_p50_ms"], 2),
                    "page_ratio": round(big["page_p50_ms"] / small["page_p50_ms"], 2),
                },
                indent=2,
            )
        )
        return 0
    finally:
        if host is not None:
            host.stop()
        if stack is not None:
            stack.stop()
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Dispatcher benchmarks (issue #2). Rerun: .venv/bin/python scripts/bench_dispatch.py

1. Hot path: per-request CPU of a cached route forwarded to a tenant's /api/health, as a
   ratio to a no-op Worker handler driven the same way, in the same run.
2. Route resolution, cache cold: D1 with 10 vs 100,000 tenants (an index lookup, not a scan).
3. Import time of the dispatcher entry module under CPython (python -X importtime).
Figures are ratios measured in one run on this machine; absolute numbers are for context.
"""
from __future__ import annotations

import asyncio
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import localrt  # noqa: E402,F401  (workers/js stand-ins)
import js  # noqa: E402
import workers  # noqa: E402
from dispatcher.routing import RouteResolver  # noqa: E402
from localrt.d1 import D1Database, apply_migrations_with_wrangler, copy_database  # noqa: E402
from localrt.demo import seed_demo  # noqa: E402
from localrt.platform import build_platform  # noqa: E402


class NoOp(workers.WorkerEntrypoint):
    async def fetch(self, request):
        return workers.Response("ok")


def cpu_per_call(fn, n: int) -> float:
    async def run() -> float:
        start = time.process_time()
        for _ in range(n):
            await fn()
        return (time.process_time() - start) / n

    return asyncio.run(run())


def bench_hot_path(template: Path, work: Path, n: int = 3000) -> dict[str, float]:
    d1 = work / "hot.sqlite"
    copy_database(template, d1)
    platform = build_platform(work / "state", d1)
    asyncio.run(seed_demo(platform))

    def request() -> js.Request:
        return js.Request.new("http://partner1.cozyartzmedia.com/api/health",
                              headers=[("host", "partner1.cozyartzmedia.com"), ("accept", "application/json")])

    from dispatcher.entry import Default as DispatcherEntry

    async def dispatch() -> None:
        platform._entry_cls = DispatcherEntry
        resp = await platform.handle(request())
        assert resp.status == 200, resp.status

    async def noop() -> None:
        # The same edge path and runtime, with a handler that answers at once.
        platform._entry_cls = NoOp
        resp = await platform.handle(request())
        assert resp.status == 200, resp.status

    async def tenant_only() -> None:
        # The tenant Worker's share: its /api/health with a valid context, no dispatcher.
        from shared.context import context_headers, derive_tenant_key
        from shared.models import TenantContext, TenantType
        from shared.tiers import Tier

        ctx = TenantContext("partner1", TenantType.PARTNER_SUBDOMAIN, Tier.GROWTH, "partner1.cozyartzmedia.com",
                            "0123456789abcdef", int(time.time()))
        key = derive_tenant_key(platform.dispatcher_env.CONTEXT_SIGNING_SECRET, "partner1")
        req = js.Request.new("http://partner1.cozyartzmedia.com/api/health",
                             headers=list(context_headers(ctx, key).items()))
        resp = await platform.namespace.get("cmgsite-partner-tenant").fetch(req)
        assert resp.status == 200

    cpu_per_call(dispatch, 200)  # warm: route cached in the isolate, modules imported
    cpu_per_call(tenant_only, 50)
    rounds = [(cpu_per_call(dispatch, n // 5), cpu_per_call(noop, n // 5), cpu_per_call(tenant_only, n // 5))
              for _ in range(5)]
    d = statistics.median(r[0] for r in rounds)
    o = statistics.median(r[1] for r in rounds)
    t = statistics.median(r[2] for r in rounds)
    return {"dispatch_us": d * 1e6, "noop_us": o * 1e6, "ratio": d / o, "tenant_us": t * 1e6,
            "dispatcher_own_ratio": (d - t) / o}


def _fill(path: Path, count: int) -> list[str]:
    conn = sqlite3.connect(path)
    hosts = [f"t{i}.example.com" for i in range(count)]
    with conn:
        conn.executemany(
            "INSERT INTO tenants (id, name, type, status, tier, script_name) VALUES (?, ?, 'custom-domain', 'active', 'starter', ?)",
            ((f"t{i}", f"Tenant {i}", f"script-{i}") for i in range(count)))
        conn.executemany("INSERT INTO tenant_domains (domain, tenant_id, domain_type) VALUES (?, ?, 'custom')",
                         ((h, f"t{i}") for i, h in enumerate(hosts)))
    conn.close()
    return hosts


def bench_resolution(template: Path, work: Path, n: int = 3000, rounds: int = 7) -> dict[str, float]:
    from dispatcher.routing import ROUTE_SQL

    dbs: dict[int, tuple[D1Database, list[str]]] = {}
    for count in (10, 100_000):
        path = work / f"routes-{count}.sqlite"
        copy_database(template, path)
        hosts = _fill(path, count)
        rng = random.Random(count)
        dbs[count] = (D1Database(path), [rng.choice(hosts) for _ in range(n)])

    async def lookups(count: int) -> float:
        db, picks = dbs[count]
        start = time.process_time()
        for h in picks:
            assert await RouteResolver(db, None).resolve(h) is not None  # fresh resolver: cache cold
        return (time.process_time() - start) / n

    samples: dict[int, list[float]] = {10: [], 100_000: []}
    asyncio.run(lookups(10)), asyncio.run(lookups(100_000))  # warm SQLite's page cache
    for _ in range(rounds):  # interleaved, so machine noise hits both alike
        for count in samples:
            samples[count].append(asyncio.run(lookups(count)))
    out: dict[str, Any] = {f"lookup_us_{c}": statistics.median(v) * 1e6 for c, v in samples.items()}
    plan = dbs[100_000][0].execute("EXPLAIN QUERY PLAN " + ROUTE_SQL, ("t1.example.com",))["results"]
    out["plan_100000"] = " | ".join(r["detail"] for r in plan)
    out["ratio"] = out["lookup_us_100000"] / out["lookup_us_10"]
    for db, _ in dbs.values():
        db.close()
    return out


def bench_import(runs: int = 7) -> dict[str, float]:
    code = "import localrt; import workers, js; import dispatcher.entry"
    totals = []
    for _ in range(runs):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=ROOT, capture_output=True, text=True)
        for line in proc.stderr.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) == 3 and parts[2] == "dispatcher.entry":
                totals.append(int(parts[1]) / 1000)
    return {"dispatcher_entry_ms": statistics.median(totals)}


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        template = apply_migrations_with_wrangler(work / "wrangler")
        hot = bench_hot_path(template, work)
        res = bench_resolution(template, work)
    imp = bench_import()
    print("Dispatcher benchmarks (one run, this machine)")
    print(f"  hot path CPU/request: dispatch+forward to /api/health {hot['dispatch_us']:.0f} us, "
          f"no-op handler {hot['noop_us']:.0f} us -> ratio {hot['ratio']:.2f}x (target <= 3x)")
    print(f"    of which the tenant Worker's /api/health {hot['tenant_us']:.0f} us; the dispatcher's own share "
          f"{hot['dispatch_us'] - hot['tenant_us']:.0f} us -> {hot['dispatcher_own_ratio']:.2f}x the no-op")
    print(f"  route resolution, cache cold: 10 tenants {res['lookup_us_10']:.1f} us, 100,000 tenants "
          f"{res['lookup_us_100000']:.1f} us -> ratio {res['ratio']:.2f} (target <= 1.5)")
    print(f"    query plan (100,000): {res['plan_100000']}")
    print(f"  import time of dispatcher.entry (cumulative, median of 7): {imp['dispatcher_entry_ms']:.1f} ms (target <= 150 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

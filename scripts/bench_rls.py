"""Benchmark: what Row Level Security costs, and what the local PostgREST serves.

    .venv/bin/python scripts/bench_rls.py [--rows 1000000] [--tenants 1000] [--out docs/benchmarks-rls.md]

1. RLS overhead. In a throwaway cluster of its own (temp dir, loopback port; the dev
   database is never touched) it loads `public.bench_items` with --rows rows spread evenly
   over --tenants tenants, with RLS forced and the Supabase-style policy
   `tenant_id = (select auth.jwt() ->> 'tenant_id')`, and an index led by tenant_id. The
   same queries then run, interleaved on one connection:
     - as `authenticated` with tenant claims, RLS adding the tenant filter;
     - as `service_role` (BYPASSRLS) with the tenant filter written out.
   Two shapes: a tenant's page of rows (`order by id limit 50`) and a single row by id.
   Reported: median/p95 latency of each and the RLS/service ratio (target <= 1.3), and the
   EXPLAIN of each (index scans expected).
2. Requests per second through the real PostgREST: a single-row tenant-scoped GET, a fresh
   tenant JWT minted for every request, 10 concurrent clients, bounded in count and time,
   loopback only; via the apikey gateway and against PostgREST directly.
Figures are printed and written to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from localrt.postgres import PgCluster  # noqa: E402
from localrt.supabase_stack import POSTGREST_BIN, SupabaseStack, find_free_port  # noqa: E402
from shared.jwt import HS256Signer, mint_tenant_jwt  # noqa: E402

SCHEMA = """
create table public.bench_items (
  id         bigint primary key,
  tenant_id  text not null,
  title      text not null,
  amount     numeric(12, 2) not null,
  created_at timestamptz not null default now()
);
create index bench_items_tenant_id_id on public.bench_items (tenant_id, id);
alter table public.bench_items enable row level security;
alter table public.bench_items force row level security;
create policy bench_items_select on public.bench_items for select to authenticated
  using (tenant_id = (select auth.jwt() ->> 'tenant_id'));
revoke all on public.bench_items from anon, authenticated, service_role;
grant select on public.bench_items to authenticated, service_role;
"""

QUERIES = {
    "page": (
        "select id, title, amount from public.bench_items order by id limit 50",
        "select id, title, amount from public.bench_items where tenant_id = %(t)s order by id limit 50",
    ),
    "row": (
        "select id, title, amount from public.bench_items where id = %(id)s",
        "select id, title, amount from public.bench_items where id = %(id)s and tenant_id = %(t)s",
    ),
}


def tenant_name(i: int) -> str:
    return f"bench-{i:04d}"


def load(cluster: PgCluster, rows: int, tenants: int) -> float:
    started = time.perf_counter()
    with cluster.connect() as conn:
        conn.execute("drop table if exists public.bench_items")
        conn.execute(SCHEMA)
        # Row g belongs to tenant g % tenants, so any id names its tenant.
        conn.execute(
            "insert into public.bench_items (id, tenant_id, title, amount)"
            " select g, 'bench-' || lpad((g %% %(n)s)::text, 4, '0'), 'item ' || g, (g %% 997) / 10.0"
            " from generate_series(1, %(rows)s) g",
            {"n": tenants, "rows": rows},
        )
        conn.execute("vacuum analyze public.bench_items")
    return time.perf_counter() - started


def become(conn: psycopg.Connection, role: str, tenant: str) -> None:
    claims = {"sub": str(uuid.uuid4()), "role": role, "tenant_id": tenant, "tenant_role": "client"}
    conn.execute(
        "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
        (role, json.dumps(claims)),
        prepare=True,
    )


def explain(conn: psycopg.Connection, role: str, query: str, params: dict[str, object]) -> str:
    with conn.transaction():
        become(conn, role, str(params["t"]))
        plan = conn.execute("explain (costs off) " + query, params).fetchall()
        conn.execute("reset role")
    return "\n".join(r[0] for r in plan)


def time_sql(cluster: PgCluster, rows: int, tenants: int, iterations: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    rng = random.Random(7)
    with cluster.connect() as conn:
        conn.autocommit = False
        for shape, (rls_q, svc_q) in QUERIES.items():
            samples: dict[str, list[float]] = {"rls": [], "service": []}
            for i in range(iterations + 200):  # the first 200 warm caches and plans
                t = rng.randrange(tenants)
                row_id = rng.randrange(1, rows // tenants) * tenants + t
                params = {"t": tenant_name(t), "id": row_id}
                order = (("rls", "authenticated", rls_q), ("service", "service_role", svc_q))
                for label, role, query in order if i % 2 else order[::-1]:  # alternate who goes first
                    become(conn, role, tenant_name(t))
                    start = time.perf_counter()
                    got = conn.execute(query, params, prepare=True).fetchall()
                    elapsed = time.perf_counter() - start
                    conn.rollback()
                    assert got, f"{label} {shape} returned nothing"
                    if i >= 200:
                        samples[label].append(elapsed * 1e6)
            for label, values in samples.items():
                values.sort()
                results[f"{shape}/{label}"] = {
                    "median_us": statistics.median(values),
                    "p95_us": values[int(len(values) * 0.95)],
                    "mean_us": statistics.fmean(values),
                }
            results[f"{shape}/ratio"] = {
                "median": results[f"{shape}/rls"]["median_us"] / results[f"{shape}/service"]["median_us"],
                "mean": results[f"{shape}/rls"]["mean_us"] / results[f"{shape}/service"]["mean_us"],
            }
    return results


class KeepAliveConnection:
    """A bare HTTP/1.1 keep-alive GET client: the load generator must cost far less CPU per
    request than what it measures (httpx spends milliseconds per request on this box)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, target: str, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (
            f"GET {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            + "\r\n"
        )
        self.writer.write(head.encode("latin-1"))
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length, chunked = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if not chunked:
            return status, await self.reader.readexactly(length)
        body = b""
        while size := int((await self.reader.readline()).split(b";")[0], 16):
            body += await self.reader.readexactly(size)
            await self.reader.readline()
        await self.reader.readline()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def http_load(
    base: str,
    apikey: str,
    secret: str,
    rows: int,
    tenants: int,
    *,
    clients: int,
    max_requests: int,
    max_seconds: float,
    warmup: int = 300,
) -> dict[str, float]:
    url = httpx.URL(base)
    signer = HS256Signer(secret)
    sent = ok = errors = 0
    latencies: list[float] = []
    stop_at = 0.0

    async def worker(conn: KeepAliveConnection, seed: int, measure: bool) -> None:
        nonlocal sent, ok, errors
        rng = random.Random(seed)
        while sent < (max_requests if measure else warmup) and (not measure or time.perf_counter() < stop_at):
            sent += 1
            t = rng.randrange(tenants)
            row_id = rng.randrange(1, rows // tenants) * tenants + t
            token = mint_tenant_jwt(
                signer,
                user_id=str(uuid.uuid4()),
                tenant_id=tenant_name(t),
                tenant_role="client",
                is_primary=False,
                now=time.time(),
            )
            start = time.perf_counter()
            status, body = await conn.get(
                f"{url.path.rstrip('/')}/bench_items?id=eq.{row_id}&select=id,title,amount",
                {"apikey": apikey, "authorization": f"Bearer {token}"},
            )
            if measure:
                latencies.append(time.perf_counter() - start)
                if status == 200 and len(json.loads(body)) == 1:
                    ok += 1
                else:
                    errors += 1

    conns = [KeepAliveConnection(url.host, url.port or 80) for _ in range(clients)]
    try:
        await asyncio.gather(*(worker(c, s, False) for s, c in enumerate(conns)))
        sent = 0
        stop_at = time.perf_counter() + max_seconds
        started = time.perf_counter()
        await asyncio.gather(*(worker(c, 100 + s, True) for s, c in enumerate(conns)))
        elapsed = time.perf_counter() - started
    finally:
        for c in conns:
            c.close()
    latencies.sort()
    return {
        "requests": ok + errors,
        "ok": ok,
        "errors": errors,
        "seconds": elapsed,
        "req_per_s": (ok + errors) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p95_ms": latencies[int(len(latencies) * 0.95)] * 1000,
    }


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def postgres_pids(cluster: PgCluster) -> list[int]:
    """The postmaster of this cluster and its children (the backends PostgREST talks to)."""
    postmaster = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                pids.append(int(stat.parent.name))
        except (FileNotFoundError, ValueError, IndexError):
            continue
    return pids


def cpu_snapshot(groups: dict[str, Callable[[], list[int]]]) -> dict[str, dict[int, float]]:
    return {name: {p: cpu_seconds(p) for p in pids()} for name, pids in groups.items()}


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    # Backends born during the window count from zero.
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def report(
    args: argparse.Namespace,
    load_s: float,
    sql_res: dict[str, dict[str, float]],
    plans: dict[str, str],
    http_res: dict[str, dict[str, float]],
    pg_version: str,
) -> str:
    pgrst = subprocess.run([str(POSTGREST_BIN), "--version"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# RLS and PostgREST benchmark",
        "",
        f"Produced by `scripts/bench_rls.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
        f"{os.cpu_count()} CPU cores, {platform.python_implementation()} {platform.python_version()}, "
        f"{pg_version}, {pgrst}. Everything on one machine over loopback: the database, PostgREST, the "
        "gateway and the load generator share the same cores. Load average when the report was written "
        f"(other work on the machine skews every figure): {' / '.join(f'{x:.1f}' for x in os.getloadavg())}.",
        "",
        f"## RLS overhead ({args.rows:,} rows, {args.tenants:,} tenants, {args.iterations:,} timed queries per cell)",
        "",
        f"Data load: {load_s:.1f} s. Latency is client-observed per query on one connection "
        "(role and claims set beforehand, as PostgREST does per request), RLS and service-role runs interleaved.",
        "",
        "| query | RLS (authenticated + claims) median / p95 | service_role + explicit filter median / p95 "
        "| ratio (median) | ratio (mean) |",
        "|---|---|---|---|---|",
    ]
    for shape, label in (("page", "tenant's first 50 rows, ordered by id"), ("row", "one row by id")):
        r, s, q = sql_res[f"{shape}/rls"], sql_res[f"{shape}/service"], sql_res[f"{shape}/ratio"]
        lines.append(
            f"| {label} | {r['median_us']:.0f} µs / {r['p95_us']:.0f} µs | {s['median_us']:.0f} µs / "
            f"{s['p95_us']:.0f} µs | **{q['median']:.2f}** | {q['mean']:.2f} |"
        )
    lines += ["", "Target ratio <= 1.3. Plans (`explain (costs off)`):", ""]
    for name, plan in plans.items():
        lines += [f"{name}:", "```", plan, "```"]
    if http_res:
        lines += [
            "",
            f"## PostgREST requests per second ({args.clients} concurrent clients)",
            "",
            "`GET /bench_items?id=eq.N&select=id,title,amount` for a random tenant's row, a fresh tenant JWT "
            f"(HS256, minted in the load generator) per request; at most {args.max_requests:,} requests "
            f"or {args.seconds:.0f} s per target, after a warm-up.",
            "",
            "| target | requests | errors | req/s | p50 | p95 | CPU ms/request: PostgREST, PostgreSQL, "
            "gateway, load generator | req/s per core for PostgREST + PostgreSQL alone |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, h in http_res.items():
            per_core = 1000 / max(h["cpu_postgrest_ms"] + h["cpu_postgres_ms"], 1e-9)
            lines.append(
                f"| {name} | {h['requests']:,.0f} | {h['errors']:,.0f} | **{h['req_per_s']:,.0f}** | "
                f"{h['p50_ms']:.1f} ms | {h['p95_ms']:.1f} ms | {h['cpu_postgrest_ms']:.2f}, "
                f"{h['cpu_postgres_ms']:.2f}, {h['cpu_gateway_ms']:.2f}, {h['cpu_loadgen_ms']:.2f} | {per_core:,.0f} |"
            )
        direct = http_res.get("PostgREST directly")
        if direct:
            cpu = direct["cpu_postgrest_ms"] + direct["cpu_postgres_ms"]
            lines += [
                "",
                f"PostgREST and PostgreSQL together spent {cpu:.2f} ms of CPU per request, so with "
                f"all {os.cpu_count()} cores to themselves they would serve about "
                f"{1000 / cpu * (os.cpu_count() or 1):,.0f} req/s on this machine. The wall-clock req/s "
                "above is lower because the load generator and other work share those cores.",
            ]
        lines += [
            "",
            "For comparison, PostgREST's published figure is about 5,300 req/s for a similar single-row read "
            "at 10 clients on a large dedicated machine. Here the Python load generator (and, for the first row, "
            "the Python gateway) compete with PostgREST and PostgreSQL for the same two cores, so these numbers "
            "are a floor for this box rather than PostgREST's ceiling.",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=1_000)
    parser.add_argument("--iterations", type=int, default=3_000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--max-requests", type=int, default=30_000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "benchmarks-rls.md"
    )
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="bench-rls-"))
    os.chmod(base, 0o711)
    cluster = PgCluster(data_dir=base / "data", port=find_free_port(), dbname="cmgsite_bench", fast=True)
    stack: SupabaseStack | None = None
    try:
        cluster.start()
        cluster.apply_migrations()
        with cluster.connect() as conn:
            pg_version = conn.execute("select split_part(version(), ' on ', 1)").fetchone()[0]  # type: ignore[index]
        print(f"loading {args.rows:,} rows over {args.tenants:,} tenants ...", flush=True)
        load_s = load(cluster, args.rows, args.tenants)
        print(f"loaded in {load_s:.1f} s; timing SQL ...", flush=True)
        sql_res = time_sql(cluster, args.rows, args.tenants, args.iterations)
        with cluster.connect() as conn:
            conn.autocommit = False
            p = {"t": tenant_name(42), "id": 5 * args.tenants + 42}
            plans = {
                f"{shape} as authenticated (RLS)": explain(conn, "authenticated", QUERIES[shape][0], p)
                for shape in QUERIES
            } | {
                f"{shape} as service_role (explicit filter)": explain(conn, "service_role", QUERIES[shape][1], p)
                for shape in QUERIES
            }
        for name, plan in plans.items():
            assert "Index" in plan, f"no index scan for {name}:\n{plan}"
        http_res: dict[str, dict[str, float]] = {}
        if not args.no_http:
            secret = secrets.token_urlsafe(48)
            stack = SupabaseStack(cluster, jwt_secret=secret, port=find_free_port(), db_pool=10)
            stack.start()
            # CPU used per request by each party: a figure that other load on the machine hardly moves.
            pgrst_pid, gateway_pid = stack.process_ids
            groups: dict[str, Callable[[], list[int]]] = {
                "postgrest": lambda: [pgrst_pid],
                "gateway": lambda: [gateway_pid],
                "postgres": lambda: postgres_pids(cluster),
                "loadgen": lambda: [os.getpid()],
            }
            for name, url in (
                ("gateway /rest/v1 -> PostgREST", stack.rest_url),
                ("PostgREST directly", stack.postgrest_url),
            ):
                print(f"HTTP load: {name} ...", flush=True)
                before = cpu_snapshot(groups)
                res = asyncio.run(
                    http_load(
                        url,
                        stack.anon_key,
                        secret,
                        args.rows,
                        args.tenants,
                        clients=args.clients,
                        max_requests=args.max_requests,
                        max_seconds=args.seconds,
                    )
                )
                after = cpu_snapshot(groups)
                # The warm-up is inside the CPU window too: count its requests.
                total = res["requests"] + 300
                for g in groups:
                    res[f"cpu_{g}_ms"] = cpu_delta(before[g], after[g]) * 1000 / total
                http_res[name] = res
        text = report(args, load_s, sql_res, plans, http_res, pg_version)
        print(text)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"written to {args.out}")
    finally:
        if stack is not None:
            stack.stop()
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

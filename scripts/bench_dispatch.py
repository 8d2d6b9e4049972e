#!/usr/bin/env python3
"""Benchmarks of the Workers on the real runtime (workerd). Rerun:

    .venv/bin/python scripts/bench_dispatch.py [--requests 2000] [--soak 10000]

Starts its own platform host (dispatcher + tenant Workers on workerd, as the run command
does, no Supabase needed for these paths) on free loopback ports and reports, in one run:
1. Hot path, cached route: GET /api/health through dispatcher → tenant Worker, p50 latency
   as a ratio to a no-op Python Worker on the same workerd build, called directly.
2. The dispatcher's own cost: dispatcher → a JS no-op Worker in the namespace, same ratio.
3. Each Worker's time from start to first response (the host's events), and the import
   cost of the dispatcher and tenant entry modules inside workerd: that time minus a no-op
   Python Worker's (a clock inside the isolate does not advance while Python runs, so the
   modules cannot time themselves).
4. Memory (RSS) of each Worker's workerd process after a 2,000-request warm-up and after
   --soak more requests.
5. Subrequests per warm `/api/health` (a second, untimed host with the counting bindings
   of the test mode and the deployed isolate cache): the dispatcher should make only the
   dispatch, the tenant Worker none. The other request types' counts are asserted in
   tests/test_subrequests.py.
Ratios are the claims; absolute milliseconds are for context (2-core machine, loopback).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
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
from localrt.namespace import ScriptSpec  # noqa: E402
from localrt.platform import StatePaths  # noqa: E402
from localrt.workerd import WorkerdHost, build_all, bundle  # noqa: E402

NOOP_PY = '''from workers import Response, WorkerEntrypoint


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        return Response("ok")
'''
NOOP_JS = 'export default { fetch() { return new Response("ok"); } };\n'
def p50(client: httpx.Client, url: str, host: str, n: int) -> float:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        r = client.get(url, headers={"Host": host})
        samples.append(time.perf_counter() - t)
        assert r.status_code == 200, (url, host, r.status_code, r.text[:200])
    return statistics.median(samples) * 1000


def rss_of_workerds(root_pid: int) -> dict[int, int]:
    """RSS (MiB) of the workerd processes under this run's host (not anyone else's)."""
    parents = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            parents[int(pid)] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue

    def under(pid: int) -> bool:
        while pid > 1:
            if pid == root_pid:
                return True
            pid = parents.get(pid, 1)
        return False

    out = {}
    for pid in (p for p in parents if under(p)):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"workerd" in cmd and b"serve" in cmd:
                status = Path(f"/proc/{pid}/status").read_text()
                rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
                out[int(pid)] = rss // 1024
        except (OSError, StopIteration):
            continue
    return out


def count_subrequests(paths: StatePaths, wrangler_state: Path, bench: Path, py_modules: str, n: int = 100) -> dict[str, Any]:
    """A second host with the counting bindings (test mode; not timed) and the deployed isolate
    cache: what one warm `/api/health` asks of KV, D1, the namespace and the outside."""
    from tests.support import free_port  # noqa: E402

    host = WorkerdHost(paths.namespace, paths.secrets, wrangler_state, paths.root, port=free_port(),
                       dispatcher_vars=dispatcher_vars(), test_faults=True,
                       extra_bundles={"noop_py": {"root": str(bench), "main": "noop.py", "pythonModules": py_modules},
                                      "noop_js": {"root": str(bench), "main": "noop.mjs"}})
    host.start(build=False)
    try:
        with httpx.Client(timeout=30) as client:
            for _ in range(3):
                client.get(host.url + "/api/health", headers={"Host": "partner1.cozyartzmedia.com"})
            time.sleep(0.5)
            host._control("POST", "/subrequests")
            for _ in range(n):
                client.get(host.url + "/api/health", headers={"Host": "partner1.cozyartzmedia.com"})
            time.sleep(0.5)
            counts = host._control("POST", "/subrequests")["subrequests"]
    finally:
        host.stop()
    per = {script: {kind: round(v / n, 2) for kind, v in kinds.items()} for script, kinds in counts.items()}
    return {"warm_api_health_dispatcher": per.get("cmgsite-tenant-dispatcher", {}),
            "warm_api_health_tenant": per.get("cmgsite-partner-tenant", {}), "requests": n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--soak", type=int, default=10000)
    args = ap.parse_args()
    build_all()
    work = Path(tempfile.mkdtemp(prefix="cmgsite-bench-"))
    try:
        wrangler_state = work / "wrangler"
        d1 = D1Database(apply_migrations_with_wrangler(wrangler_state))
        paths = StatePaths(work / "state")
        registry = paths.registry()
        asyncio.run(seed_demo(d1, registry, paths.dispatcher_secrets))
        bench = work / "bench"
        bench.mkdir()
        (bench / "noop.py").write_text(NOOP_PY)
        (bench / "noop.mjs").write_text(NOOP_JS)
        py_modules = bundle("tenant_worker")["pythonModules"]
        registry.deploy(ScriptSpec("bench-noop-py", bundle="noop_py"), {})
        registry.deploy(ScriptSpec("bench-noop-js", bundle="noop_js"), {})
        asyncio.run(d1.exec(
            "INSERT INTO tenants (id, name, type, tier, script_name) VALUES "
            "('bench-js', 'Bench', 'custom-domain', 'starter', 'bench-noop-js');"
            "INSERT INTO tenant_domains (domain, tenant_id, domain_type) VALUES ('bench-js.example', 'bench-js', 'custom');"))
        from tests.support import free_port  # noqa: E402  (the same helper the tests use)

        began = time.perf_counter()
        host = WorkerdHost(paths.namespace, paths.secrets, wrangler_state, paths.root, port=free_port(),
                           dispatcher_vars=dispatcher_vars(), test_faults=False,
                           extra_bundles={"noop_py": {"root": str(bench), "main": "noop.py", "pythonModules": py_modules},
                                          "noop_js": {"root": str(bench), "main": "noop.mjs"}})
        host.start(build=False)
        startup = time.perf_counter() - began
        try:
            failed = [e for e in host.events if e.get("event") == "script_failed"]
            if failed:
                raise SystemExit(f"a bench Worker did not start: {failed}")
            ports = {n: s["port"] for n, s in host.status()["scripts"].items()}
            starts = {e["script"]: e["start_ms"] for e in host.events if e.get("event") == "script_ready"}
            ready = next(e for e in host.events if e.get("event") == "ready")
            starts["dispatcher"] = ready["dispatcher_start_ms"]
            with httpx.Client(timeout=30) as client:
                for h in ("partner1.cozyartzmedia.com", "bench-js.example"):
                    p50(client, host.url + "/api/health", h, 50)  # warm: routes cached, isolates hot
                p50(client, f"http://127.0.0.1:{ports['bench-noop-py']}/", "noop", 50)
                n = args.requests
                noop = p50(client, f"http://127.0.0.1:{ports['bench-noop-py']}/", "noop", n)
                hot = p50(client, host.url + "/api/health", "partner1.cozyartzmedia.com", n)
                own = p50(client, host.url + "/", "bench-js.example", n)
                for i in range(2000):
                    client.get(host.url + "/api/health", headers={"Host": ("partner1.cozyartzmedia.com",
                                                                             "partner-seo.com")[i % 2]})
                rss_before = rss_of_workerds(host._proc.pid)
                for i in range(args.soak):
                    client.get(host.url + "/api/health", headers={"Host": ("partner1.cozyartzmedia.com",
                                                                             "partner-seo.com")[i % 2]})
                rss_after = rss_of_workerds(host._proc.pid)
        finally:
            host.stop()
        subrequests = count_subrequests(paths, wrangler_state, bench, py_modules)
        report = {
            "hot_path_p50_ms": round(hot, 2), "noop_python_p50_ms": round(noop, 2),
            "hot_path_ratio": round(hot / noop, 2), "dispatcher_to_js_noop_p50_ms": round(own, 2),
            "dispatcher_own_ratio": round(own / noop, 2),
            "start_to_first_response_ms": starts,
            "import_cost_ms_vs_noop_python": {"dispatcher": starts["dispatcher"] - starts["bench-noop-py"],
                                              "tenant_worker": starts["cmgsite-partner-tenant"] - starts["bench-noop-py"]},
            "host_ready_s": round(startup, 1),
            "workerd_rss_mib_before_after_soak": {str(pid): [rss_before.get(pid), rss_after.get(pid)]
                                                  for pid in sorted(set(rss_before) | set(rss_after))},
            "soak_requests": args.soak, "requests": args.requests,
            "subrequests_per_request": subrequests,
        }
        print(json.dumps(report, indent=2))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

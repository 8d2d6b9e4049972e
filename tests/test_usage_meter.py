"""The UsageMeter Durable Object on the real workerd, reached as tenants reach it: through the
tenant API (the meter is keyed by the verified tenant context, never a client-sent id).

Counters (ai_calls) are covered in test_usage_http.py and the flush in test_usage_flush.py;
the pure period/limit/backoff logic in test_usage_core.py. Here: a level (domains) under
concurrency, and levels surviving a restart of the tenant's workerd.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from tests.support import Platform
from tests.usage_support import usage_tenant


def test_concurrent_domain_adds_with_4_slots_left_allow_exactly_4(platform: Platform, pg_cluster: Any) -> None:
    with usage_tenant(platform, pg_cluster, "growth") as t:
        tag = uuid.uuid4().hex[:8]
        names = [f"c{i}-{tag}.usage-test.example" for i in range(20)]

        async def go() -> list[httpx.Response]:
            headers = {"Host": t.host, **t.session("admin")}
            async with httpx.AsyncClient(base_url=platform.url, timeout=120) as client:
                return await asyncio.gather(
                    *(client.post("/api/domains", json={"domain": n}, headers=headers) for n in names)
                )

        results = asyncio.run(go())
        created = [r for r in results if r.status_code == 201]
        assert len(created) == 4, [r.status_code for r in results]
        # Supabase holds the domain level now (its row lock decides); each 201 reports the count after it.
        assert all(2 <= r.json()["usage"]["used"] <= 5 for r in created)
        assert all(r.status_code == 429 for r in results if r.status_code != 201)
        with pg_cluster.connect() as conn:
            rows = conn.execute(
                "select count(*) from public.tenant_domains where tenant_id = %s", (t.tenant_id,)
            ).fetchone()
        assert rows == (5,)  # the meter and Supabase agree
        assert t.usage("admin")["domains"]["used"] == 5


def test_levels_and_counters_survive_a_restart_and_stay_per_tenant(platform: Platform, pg_cluster: Any) -> None:
    with usage_tenant(platform, pg_cluster, "growth") as t, usage_tenant(platform, pg_cluster, "growth") as other:
        name = f"keep-{uuid.uuid4().hex[:8]}.usage-test.example"
        assert t.post("/api/domains", json={"domain": name}, auth=t.session("admin")).status_code == 201
        assert t.generate().status_code == 200
        platform.set_secret(t.script, "UNRELATED_SECRET", "restart")  # a new workerd for the script
        after = t.usage("admin")
        assert (after["domains"]["used"], after["ai_calls"]["used"]) == (2, 1)
        theirs = other.usage("admin")
        assert (theirs["domains"]["used"], theirs["ai_calls"]["used"]) == (1, 0)

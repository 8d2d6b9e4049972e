"""Attacks on usage history (issue 10, item 2), on the real workerd and the real Supabase stack.

The defect: Supabase recorded `ai_calls = 14` for the month, a meter with new storage held 4,
and after one call the flush wrote 5. The meter never read what Supabase had, so a new or reset
Durable Object handed the tenant its quota again and rewrote billing history downwards.

Every test here starts a meter from empty storage (a throwaway tenant, tests/usage_support.py)
against history written beforehand with the superuser, as the service role would have written it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

import httpx

from tests.support import Platform, free_port
from tests.test_usage_flush import FAST_FLUSH, wait_for
from tests.usage_support import UsageTenant, usage_tenant

FAIL = "[[fail:3040]] tagline"  # the local model fails on this prompt: a call that ran would be a 502


def month() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m")


def record(
    t: UsageTenant, count: int, kind: str = "ai_calls", period: str | None = None, limit: int | None = 100
) -> None:
    with t.pg.connect() as conn:
        conn.execute(
            "insert into public.tenant_usage (tenant_id, usage_type, period, usage_count, usage_limit)"
            " values (%s, %s, %s, %s, %s) on conflict (tenant_id, usage_type, period)"
            " do update set usage_count = excluded.usage_count, usage_limit = excluded.usage_limit",
            (t.tenant_id, kind, period or month(), count, limit),
        )


def recorded(t: UsageTenant) -> tuple[int, int | None] | None:
    """(usage_count, usage_limit) of this month's ai_calls row."""
    with t.pg.connect() as conn:
        return conn.execute(
            "select usage_count, usage_limit from public.tenant_usage where tenant_id = %s"
            " and usage_type = 'ai_calls' and period = %s",
            (t.tenant_id, month()),
        ).fetchone()


def test_a_fresh_meter_counts_on_from_the_recorded_history(platform: Platform, pg_cluster: Any) -> None:
    with usage_tenant(platform, pg_cluster, "starter", vars_=FAST_FLUSH) as t:
        record(t, 14)
        record(t, 60, period="2020-01")  # another month's history does not count in this one
        r = t.generate()  # the first thing this meter ever does
        assert r.status_code == 200, r.text
        assert (r.json()["usage"]["used"], r.json()["usage"]["remaining"]) == (15, 85)
        wait_for(lambda: t.usage_rows().get(("ai_calls", month())) == 15)
        assert t.usage()["ai_calls"]["used"] == 15
        assert t.usage_rows()[("ai_calls", "2020-01")] == 60


def test_the_usage_report_of_a_fresh_meter_shows_the_recorded_history(platform: Platform, pg_cluster: Any) -> None:
    with usage_tenant(platform, pg_cluster, "starter", vars_=FAST_FLUSH) as t:
        record(t, 14)
        assert t.usage()["ai_calls"] | {"resets_at": None} == {
            "used": 14,
            "limit": 100,
            "remaining": 86,
            "period": month(),
            "resets_at": None,
        }
        assert t.generate().json()["usage"]["used"] == 15


def test_history_at_the_limit_leaves_no_quota_to_hand_out_again(platform: Platform, pg_cluster: Any) -> None:
    with usage_tenant(platform, pg_cluster, "starter", vars_=FAST_FLUSH) as t:
        record(t, 100)
        r = t.generate()
        assert r.status_code == 429, r.text
        assert (r.json()["error"]["used"], r.json()["error"]["limit"]) == (100, 100)
        assert t.usage_rows()[("ai_calls", month())] == 100


def test_a_meter_behind_the_record_cannot_lower_it(platform: Platform, pg_cluster: Any) -> None:
    """The meter loaded 14 and counts on; meanwhile the record says 50 (another writer, a restore).
    Its next flush sends 16: the record keeps 50, so billing history never goes down."""
    with usage_tenant(platform, pg_cluster, "starter", vars_=FAST_FLUSH) as t:
        record(t, 14)
        assert t.generate().json()["usage"]["used"] == 15
        wait_for(lambda: recorded(t) == (15, 100))
        record(t, 50, limit=None)  # no limit: the flush (which sends 100) shows when it arrived
        assert t.generate().json()["usage"]["used"] == 16  # the live quota is the meter's
        wait_for(lambda: recorded(t) != (50, None))
        assert recorded(t) == (50, 100)


def test_concurrent_first_consumes_load_history_once(platform: Platform, pg_cluster: Any) -> None:
    """95 recorded, limit 100, 20 concurrent first calls: exactly 5 run, numbered 96..100."""
    with usage_tenant(platform, pg_cluster, "starter", vars_=FAST_FLUSH) as t:
        record(t, 95)

        async def go() -> list[httpx.Response]:
            headers = {"Host": t.host, **t.session()}
            async with httpx.AsyncClient(base_url=platform.url, timeout=120) as client:
                return await asyncio.gather(
                    *(client.post("/api/ai/generate", json={"prompt": f"p{i}"}, headers=headers) for i in range(20))
                )

        results = asyncio.run(go())
        allowed = [r for r in results if r.status_code == 200]
        assert sorted(r.json()["usage"]["used"] for r in allowed) == [96, 97, 98, 99, 100]
        assert all(r.status_code == 429 and r.json()["error"]["used"] == 100 for r in results if r.status_code != 200)
        wait_for(lambda: t.usage_rows().get(("ai_calls", month())) == 100)
        assert t.usage()["ai_calls"]["used"] == 100


def test_unreadable_history_fails_closed_and_runs_no_model(platform: Platform, pg_cluster: Any) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens: the history cannot be read
    with usage_tenant(platform, pg_cluster, "starter", vars_=FAST_FLUSH, secrets_={"SUPABASE_URL": down}) as t:
        record(t, 14)
        for _ in range(3):
            r = t.generate(FAIL)  # a model call would answer 502 ai_unavailable
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "usage_unavailable" and int(r.headers["retry-after"]) > 0
        assert f'"usage_history_unavailable", "tenant_id": "{t.tenant_id}"' in t.platform.log_text()
        real = t.platform.registry.secrets_of("cmgsite-custom-tenant")["SUPABASE_URL"]
        assert t.platform.registry.secrets_of(t.script)["SUPABASE_SERVICE_ROLE_KEY"] not in t.platform.log_text()
        t.platform.set_secret(t.script, "SUPABASE_URL", real)
        r = t.generate()
        assert r.status_code == 200 and r.json()["usage"]["used"] == 15  # nothing was counted while it failed
        wait_for(lambda: t.usage_rows().get(("ai_calls", month())) == 15)

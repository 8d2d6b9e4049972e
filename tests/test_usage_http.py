"""Metered endpoints end to end on the real workerd: dispatcher → tenant Worker → UsageMeter DO → AI.

Each test gets a throwaway tenant (tests/usage_support.py): counters cannot be put back on a
demo tenant. The AI binding is localrt/node/local-ai.mjs; a prompt with `[[fail:3040]]` makes
it fail the way Workers AI does.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from typing import Any, Iterator

import httpx
import pytest

from shared.usage import next_month_start
from tests.cpython_imports import import_worker_module
from tests.support import Platform, raw_request
from tests.usage_support import UsageTenant, usage_tenant

FAIL = "[[fail:3040]] tagline"
DEFAULT_AI_MODEL = import_worker_module("tenant_worker.config").DEFAULT_AI_MODEL


@pytest.fixture
def starter(platform: Platform, pg_cluster: Any) -> Iterator[UsageTenant]:
    with usage_tenant(platform, pg_cluster, "starter") as t:
        yield t


@pytest.fixture
def growth(platform: Platform, pg_cluster: Any) -> Iterator[UsageTenant]:
    with usage_tenant(platform, pg_cluster, "growth") as t:
        yield t


def test_starter_tenant_gets_its_101st_ai_call_refused_with_the_429_body(starter: UsageTenant) -> None:
    with httpx.Client(base_url=starter.platform.url, timeout=60) as client:
        headers = {"Host": starter.host, **starter.session()}
        for i in range(100):
            r = client.post("/api/ai/generate", json={"prompt": f"tagline {i}"}, headers=headers)
            assert r.status_code == 200, r.text
            assert r.json()["usage"]["used"] == i + 1
        refused = client.post("/api/ai/generate", json={"prompt": "one more"}, headers=headers)
    now = time.time()
    assert refused.status_code == 429
    error = refused.json()["error"]
    reset = next_month_start(now)
    assert error == {
        "code": "usage_limit_exceeded",
        "message": error["message"],
        "kind": "ai_calls",
        "limit": 100,
        "used": 100,
        "resets_at": reset.isoformat().replace("+00:00", "Z"),
        "request_id": refused.headers["x-request-id"],
    }
    assert "100" in error["message"]
    retry_after = int(refused.headers["retry-after"])
    assert abs(retry_after - (reset.timestamp() - now)) <= 5
    assert starter.usage()["ai_calls"] == {
        "used": 100,
        "limit": 100,
        "remaining": 0,
        "period": datetime.now(timezone.utc).strftime("%Y-%m"),
        "resets_at": reset.isoformat().replace("+00:00", "Z"),
    }


def test_300_concurrent_calls_with_100_left_allow_exactly_100(starter: UsageTenant) -> None:
    """The meter's check-and-count is atomic under real concurrency: never past the limit."""

    async def go() -> list[httpx.Response]:
        headers = {"Host": starter.host, **starter.session()}
        async with httpx.AsyncClient(
            base_url=starter.platform.url, timeout=120, limits=httpx.Limits(max_connections=50)
        ) as client:
            return await asyncio.gather(
                *(client.post("/api/ai/generate", json={"prompt": f"p{i}"}, headers=headers) for i in range(300))
            )

    results = asyncio.run(go())
    allowed = [r for r in results if r.status_code == 200]
    assert len(allowed) == 100
    assert sorted(r.json()["usage"]["used"] for r in allowed) == list(range(1, 101))  # each its own slot
    refused = [r for r in results if r.status_code != 200]
    assert all(r.status_code == 429 and r.json()["error"]["used"] == 100 for r in refused)
    assert starter.usage()["ai_calls"]["used"] == 100


def test_a_generation_answers_from_the_model_and_counts_one_call(growth: UsageTenant) -> None:
    """The product's side only: one model call per generation, the model's text and the model
    named, one unit counted. (What the text says is the local stand-in's business, not ours.)"""
    growth.platform.subrequests()  # zero the host's ledger
    r = growth.generate("Name a bakery", max_tokens=8)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"response", "model", "usage"}
    assert isinstance(body["response"], str) and body["response"].strip()
    assert body["model"] == DEFAULT_AI_MODEL  # no AI_MODEL var on this tenant: the product's default
    assert (body["usage"]["used"], body["usage"]["limit"], body["usage"]["remaining"]) == (1, 250, 249)
    assert growth.platform.subrequests().get(growth.script, {}).get("ai") == 1  # exactly one AI.run
    assert growth.usage()["ai_calls"]["used"] == 1


def test_a_failed_model_call_is_refunded(starter: UsageTenant) -> None:
    assert starter.generate().status_code == 200
    for _ in range(3):
        r = starter.generate(FAIL)
        assert r.status_code == 502 and r.json()["error"]["code"] == "ai_unavailable"
        assert "3040" not in r.text and "Capacity" not in r.text
    assert starter.usage()["ai_calls"]["used"] == 1


def test_refunds_keep_the_limit_exact_at_the_edge(starter: UsageTenant) -> None:
    """99 used, then a failed call and a good one: the good one still fits."""
    for i in range(99):
        assert starter.generate(f"t{i}").status_code == 200
    assert starter.generate(FAIL).status_code == 502
    assert starter.generate().status_code == 200
    assert starter.generate().status_code == 429


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 8001}, "prompt"),
        ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "hi", "max_tokens": 5000}, "max_tokens"),
        ({"prompt": "hi", "model": "@cf/expensive/model"}, "model"),
        ({"prompt": ["hi"]}, "prompt"),
    ],
)
def test_bad_generation_input_is_422_and_costs_nothing(
    starter: UsageTenant, body: dict[str, object], field: str
) -> None:
    r = starter.post("/api/ai/generate", json=body)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_body" and field in r.json()["error"]["fields"]
    assert starter.usage()["ai_calls"]["used"] == 0


def test_not_json_and_oversized_bodies_cost_nothing(starter: UsageTenant) -> None:
    json_type = {"Content-Type": "application/json"}
    r = starter.post("/api/ai/generate", content=b"{nope", headers=json_type)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    # Refused from the declared length, before any of the body is read (so the client need
    # not send it: locally a tenant answering mid-upload can break the loopback hop).
    cookie = starter.session()["cookie"]
    status, body = raw_request(
        starter.platform,
        f"POST /api/ai/generate HTTP/1.1\r\nHost: {starter.host}\r\n"
        f"Cookie: {cookie}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {2 * 1024 * 1024}\r\nConnection: close\r\n",
    )
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    assert starter.usage()["ai_calls"]["used"] == 0


def test_anonymous_callers_burn_no_quota(starter: UsageTenant) -> None:
    r = starter.generate(auth={})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    assert httpx.get(starter.platform.url + "/api/usage", headers={"Host": starter.host}, timeout=30).status_code == 401
    assert starter.usage()["ai_calls"]["used"] == 0


def test_a_session_from_another_tenant_is_refused(platform: Platform, pg_cluster: Any, starter: UsageTenant) -> None:
    with usage_tenant(platform, pg_cluster, "growth") as other:
        # A real session of the other tenant, and one claiming our tenant signed with the other's key.
        for forged in (other.session(), other.session(tenant_id=starter.tenant_id)):
            r = starter.generate(auth=forged)
            assert r.status_code == 401
        assert other.usage()["ai_calls"]["used"] == 0
    assert starter.usage()["ai_calls"]["used"] == 0


def test_client_sent_tenant_headers_do_not_pick_the_meter(
    platform: Platform, pg_cluster: Any, starter: UsageTenant
) -> None:
    """An attacker at one tenant claiming to be another spends their own quota, never the other's."""
    with usage_tenant(platform, pg_cluster, "growth") as attacker:
        forged = {"X-Tenant-Id": starter.tenant_id, "X-Tenant-Tier": "enterprise", "X-Tenant-Host": starter.host}
        for _ in range(3):
            assert attacker.generate(headers=forged).status_code == 200
        assert attacker.usage()["ai_calls"] | {"used": 3, "limit": 250} == attacker.usage()["ai_calls"]
    assert starter.usage()["ai_calls"]["used"] == 0


def test_tenants_have_their_own_limits_and_counters(starter: UsageTenant, growth: UsageTenant) -> None:
    assert starter.generate().json()["usage"]["limit"] == 100
    assert growth.generate().json()["usage"]["limit"] == 250
    seo, p1 = starter.usage(), growth.usage()
    assert (seo["ai_calls"]["used"], p1["ai_calls"]["used"]) == (1, 1)
    assert (seo["domains"]["limit"], p1["domains"]["limit"]) == (1, 5)
    assert (seo["storage"]["limit"], p1["storage"]["limit"]) == (1024**3, 10 * 1024**3)


def test_counters_survive_a_restart_of_the_tenant_worker(starter: UsageTenant) -> None:
    for _ in range(3):
        assert starter.generate().status_code == 200
    starter.platform.set_secret(starter.script, "UNRELATED_SECRET", "x")  # a new workerd for the script
    assert starter.usage()["ai_calls"]["used"] == 3
    assert starter.generate().json()["usage"]["used"] == 4


def test_a_tier_upgrade_lifts_the_limit_on_the_next_call(starter: UsageTenant) -> None:
    for i in range(100):
        assert starter.generate(f"t{i}").status_code == 200
    assert starter.generate().status_code == 429
    starter.set_tier("growth")
    r = starter.generate()
    assert r.status_code == 200 and (r.json()["usage"]["used"], r.json()["usage"]["limit"]) == (101, 250)
    starter.set_tier("starter")  # a downgrade refuses from the next call too
    r = starter.generate()
    assert r.status_code == 429 and (r.json()["error"]["used"], r.json()["error"]["limit"]) == (101, 100)

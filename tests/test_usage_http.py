"""Metered endpoints end to end over real HTTP: dispatcher → tenant Worker → UsageMeter."""
from __future__ import annotations

import asyncio
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from localrt.demo import seed_demo
from localrt.platform import Platform, build_platform
from shared.session import issue_session
from shared.usage import next_month_start
from tenant_worker.auth import SESSION_COOKIE
from tests.support import LiveServer, fresh_platform, serve

SESSION_SECRET = secrets.token_urlsafe(48)
SEO, P1 = "partner-seo.com", "partner1.cozyartzmedia.com"
USERS = {  # seeded profile ids (migrations/supabase/seed.sql)
    ("partner-seo", "client"): "00000000-0000-4000-8000-000000000022",
    ("partner-seo", "admin"): "00000000-0000-4000-8000-000000000021",
    ("partner1", "client"): "00000000-0000-4000-8000-000000000012",
}
TENANT_OF = {SEO: "partner-seo", P1: "partner1"}


def session(tenant_id: str, role: str = "client") -> dict[str, str]:
    token = issue_session(SESSION_SECRET, tenant_id=tenant_id, user_id=USERS[(tenant_id, role)], role=role,  # type: ignore[arg-type]
                          now=time.time())
    return {"cookie": f"{SESSION_COOKIE}={token}"}


def seeded(workdir: Path, d1_template: Path) -> Platform:
    p = fresh_platform(d1_template, workdir)
    # No flush during these tests: there is no Supabase here (test_usage_flush has one).
    asyncio.run(seed_demo(p, extra_secrets={"SESSION_SECRET": SESSION_SECRET},
                          extra_vars={"USAGE_FLUSH_DELAY_MS": "3600000"}))
    return p


@pytest.fixture
def usage_platform(d1_template: Path, tmp_path: Path) -> Platform:
    return seeded(tmp_path / "platform", d1_template)


@pytest.fixture
def site(usage_platform: Platform) -> Iterator[LiveServer]:
    with serve(usage_platform) as server:
        yield server


def generate(live: LiveServer, host: str, prompt: str = "Write a tagline", *, auth: dict[str, str] | None = None,
             **extra: object) -> httpx.Response:
    headers = {"Host": host, **(session(TENANT_OF[host]) if auth is None else auth), **extra.pop("headers", {})}  # type: ignore[dict-item]
    return httpx.post(live.url + "/api/ai/generate", json={"prompt": prompt, **extra}, headers=headers, timeout=10)


def usage(live: LiveServer, host: str) -> dict[str, object]:
    r = httpx.get(live.url + "/api/usage", headers={"Host": host, **session(TENANT_OF[host])}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["usage"]


def test_starter_tenant_gets_its_101st_ai_call_refused_with_the_429_body(site: LiveServer) -> None:
    with httpx.Client(base_url=site.url, timeout=10) as client:
        headers = {"Host": SEO, **session("partner-seo")}
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
        "code": "usage_limit_exceeded", "message": error["message"], "kind": "ai_calls", "limit": 100, "used": 100,
        "resets_at": reset.isoformat().replace("+00:00", "Z"), "request_id": refused.headers["x-request-id"],
    }
    assert "100" in error["message"]
    retry_after = int(refused.headers["retry-after"])
    assert abs(retry_after - (reset.timestamp() - now)) <= 5
    assert usage(site, SEO)["ai_calls"] == {"used": 100, "limit": 100, "remaining": 0,
                                            "period": datetime.now(timezone.utc).strftime("%Y-%m"),
                                            "resets_at": reset.isoformat().replace("+00:00", "Z")}


def test_a_generation_answers_from_the_model_and_counts_one_call(site: LiveServer, usage_platform: Platform) -> None:
    r = generate(site, P1, "Name a bakery", max_tokens=8)
    assert r.status_code == 200
    body = r.json()
    assert len(body["response"].split()) == 8 and body["model"].startswith("@cf/")
    assert body["response"] == generate(site, P1, "Name a bakery", max_tokens=8).json()["response"]  # deterministic
    assert (body["usage"]["used"], body["usage"]["limit"]) == (1, 250)
    assert usage_platform.ai is not None and usage_platform.ai.calls == 2


def test_a_failed_model_call_is_refunded(site: LiveServer, usage_platform: Platform) -> None:
    assert generate(site, SEO).status_code == 200
    assert usage_platform.ai is not None
    usage_platform.ai.fail_next(3)
    for _ in range(3):
        r = generate(site, SEO)
        assert r.status_code == 502 and r.json()["error"]["code"] == "ai_unavailable"
    assert usage(site, SEO)["ai_calls"]["used"] == 1


def test_refunds_keep_the_limit_exact_at_the_edge(site: LiveServer, usage_platform: Platform) -> None:
    """99 used, then a failed call and a good one: the good one still fits."""
    assert usage_platform.ai is not None
    env = usage_platform.namespace.env_of("cmgsite-custom-tenant")
    site.call(lambda: env.USAGE.getByName("partner-seo").consume("ai_calls", 99, "partner-seo", "starter"))
    usage_platform.ai.fail_next(1)
    assert generate(site, SEO).status_code == 502
    assert generate(site, SEO).status_code == 200
    assert generate(site, SEO).status_code == 429


@pytest.mark.parametrize("body, field", [
    ({}, "prompt"), ({"prompt": ""}, "prompt"), ({"prompt": "x" * 8001}, "prompt"),
    ({"prompt": "hi", "max_tokens": 0}, "max_tokens"), ({"prompt": "hi", "max_tokens": 5000}, "max_tokens"),
    ({"prompt": "hi", "model": "@cf/expensive/model"}, "model"), ({"prompt": ["hi"]}, "prompt"),
])
def test_bad_generation_input_is_422_and_costs_nothing(site: LiveServer, body: dict[str, object], field: str) -> None:
    r = httpx.post(site.url + "/api/ai/generate", json=body, headers={"Host": SEO, **session("partner-seo")})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_request" and field in r.json()["error"]["fields"]
    assert usage(site, SEO)["ai_calls"]["used"] == 0


def test_not_json_is_400(site: LiveServer) -> None:
    r = httpx.post(site.url + "/api/ai/generate", content=b"{nope", headers={"Host": SEO, **session("partner-seo")})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_anonymous_callers_burn_no_quota(site: LiveServer) -> None:
    r = generate(site, SEO, auth={})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    assert httpx.get(site.url + "/api/usage", headers={"Host": SEO}).status_code == 401
    assert usage(site, SEO)["ai_calls"]["used"] == 0


def test_a_session_from_another_tenant_is_refused(site: LiveServer) -> None:
    r = generate(site, SEO, auth=session("partner1"))
    assert r.status_code == 401
    assert usage(site, P1)["ai_calls"]["used"] == 0 and usage(site, SEO)["ai_calls"]["used"] == 0


def test_client_sent_tenant_headers_do_not_pick_the_meter(site: LiveServer) -> None:
    """An attacker at partner1 claiming to be partner-seo spends partner1's quota, never partner-seo's."""
    forged = {"X-Tenant-Id": "partner-seo", "X-Tenant-Tier": "enterprise", "X-Tenant-Host": SEO}
    for _ in range(3):
        assert generate(site, P1, headers=forged).status_code == 200
    assert usage(site, P1)["ai_calls"] == {**usage(site, P1)["ai_calls"], "used": 3, "limit": 250}
    assert usage(site, SEO)["ai_calls"]["used"] == 0


def test_tenants_have_their_own_limits_and_counters(site: LiveServer) -> None:
    assert generate(site, SEO).json()["usage"]["limit"] == 100
    assert generate(site, P1).json()["usage"]["limit"] == 250
    seo, p1 = usage(site, SEO), usage(site, P1)
    assert (seo["ai_calls"]["used"], p1["ai_calls"]["used"]) == (1, 1)
    assert (seo["domains"]["limit"], p1["domains"]["limit"]) == (1, 5)
    assert (seo["storage"]["limit"], p1["storage"]["limit"]) == (1024**3, 10 * 1024**3)


def test_counters_survive_a_restart_of_the_local_platform(d1_template: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "platform"
    first = seeded(workdir, d1_template)
    with serve(first) as live:
        for _ in range(3):
            assert generate(live, SEO).status_code == 200
    assert first.durable_objects is not None
    first.durable_objects.close()

    second = build_platform(workdir / "state", workdir / "d1.sqlite")  # a new process on the same state
    with serve(second) as live:
        assert usage(live, SEO)["ai_calls"]["used"] == 3
        assert generate(live, SEO).json()["usage"]["used"] == 4


def test_a_tier_upgrade_lifts_the_limit_on_the_next_call(site: LiveServer, usage_platform: Platform) -> None:
    env = usage_platform.namespace.env_of("cmgsite-custom-tenant")
    site.call(lambda: env.USAGE.getByName("partner-seo").consume("ai_calls", 100, "partner-seo", "starter"))
    assert generate(site, SEO).status_code == 429

    async def upgrade() -> None:  # what the control plane does: D1, then purge the route cache
        await usage_platform.d1.prepare("UPDATE tenants SET tier = 'growth' WHERE id = 'partner-seo'").run()
        await usage_platform.kv.delete("host:" + SEO)
        usage_platform.restart_isolates()

    site.call(upgrade)
    r = generate(site, SEO)
    assert r.status_code == 200 and (r.json()["usage"]["used"], r.json()["usage"]["limit"]) == (101, 250)


class OverloadedNamespace:
    """A USAGE binding whose objects throw, as an overloaded Durable Object does."""

    def getByName(self, name: str) -> "OverloadedNamespace":
        return self

    async def consume(self, *args: object) -> dict[str, object]:
        raise RuntimeError("Durable Object is overloaded.")


def test_when_the_meter_cannot_answer_the_model_is_not_run(site: LiveServer, usage_platform: Platform) -> None:
    """Fail closed: no unmetered AI calls."""
    env = usage_platform.namespace.env_of("cmgsite-custom-tenant")
    real = env.USAGE
    env.USAGE = OverloadedNamespace()
    try:
        assert usage_platform.ai is not None
        before = usage_platform.ai.calls
        r = generate(site, SEO)
        assert r.status_code == 503 and r.json()["error"]["code"] == "usage_unavailable"
        assert usage_platform.ai.calls == before
    finally:
        env.USAGE = real

"""The health-check core on CPython: what counts as healthy, the run, and the alert webhook
(retries, signature, a failing receiver) against a loopback receiver."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from localrt.http_client import HttpxClient
from shared.config import alert_after
from shared.health import (
    AlertWebhook,
    CheckResult,
    HealthStoreError,
    HttpProber,
    ProbeAnswer,
    Target,
    check_tenant,
    deliver_due,
    run_checks,
    run_health,
    sign,
)
from shared.outbound_http import HttpError, HttpResponse
from tests.alert_receiver import AlertReceiver
from tests.support import LiveServer

HEALTHY = ProbeAnswer(200, "application/json", b'{"status": "ok", "tenant_id": "acme"}', 3.0)
PAGE = ProbeAnswer(200, "text/html; charset=utf-8", b'<a href="/auth/login/github">Sign in</a>', 4.0)


class FakeProber:
    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers, self.calls = answers, []

    async def get(self, host: str, path: str) -> ProbeAnswer:
        self.calls.append((host, path))
        answer = self.answers[path]
        if isinstance(answer, BaseException):
            raise answer
        if answer == "hang":
            await asyncio.sleep(30)
        return answer


@pytest.mark.parametrize(
    "health, page, detail",
    [
        (HEALTHY, PAGE, ""),
        (ProbeAnswer(502, "application/json", b"{}"), PAGE, "health: HTTP 502"),
        (
            ProbeAnswer(200, "application/json", b'{"status": "ok", "tenant_id": "other"}'),
            PAGE,
            "health: answered for another tenant",
        ),
        (ProbeAnswer(200, "text/html", b"<html>"), PAGE, "health: not JSON"),
        (HEALTHY, ProbeAnswer(200, "text/html", b"<p>Welcome</p>"), "sign-in page: no sign-in links"),
        (HEALTHY, ProbeAnswer(200, "application/json", b"/auth/login/"), "sign-in page: not HTML"),
        (HEALTHY, ProbeAnswer(503, "text/html", b""), "sign-in page: HTTP 503"),
        (ConnectionError("refused"), PAGE, "health: no answer (ConnectionError)"),
        ("hang", PAGE, "health: no answer (timeout)"),
    ],
)
async def test_what_counts_as_healthy(health: Any, page: Any, detail: str) -> None:
    prober = FakeProber({"/api/health": health, "/": page})
    result = await check_tenant(prober, Target("acme", "acme.example"), timeout=0.2)
    assert (result.ok, result.detail) == (detail == "", detail)
    assert prober.calls == [("acme.example", "/api/health"), ("acme.example", "/")]


async def test_a_tenant_without_a_routed_domain_fails_without_probing() -> None:
    prober = FakeProber({})
    result = await check_tenant(prober, Target("acme", None))
    assert not result.ok and result.detail == "no routed domain" and prober.calls == []


async def test_a_run_checks_every_target_in_order() -> None:
    prober = FakeProber({"/api/health": HEALTHY, "/": PAGE})
    results = await run_checks([Target("acme", f"h{i}.example") for i in range(10)], prober, concurrency=3)
    assert [r.ok for r in results] == [True] * 10 and len(prober.calls) == 20
    assert results[0].row("cron") == {
        "tenant_id": "acme",
        "ok": True,
        "health_status": 200,
        "page_status": 200,
        "latency_ms": 7,
        "detail": "",
        "source": "cron",
    }


class FakeHttp:
    """shared.http.HttpClient answering by path, recording what was asked."""

    def __init__(self, answers: dict[str, HttpResponse | None]) -> None:
        self.answers, self.calls = answers, []

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = 10.0,
    ) -> HttpResponse:
        self.calls.append((method, url, dict(headers or {})))
        answer = self.answers[urlsplit(url).path]
        if answer is None:
            raise HttpError("connection refused")
        return answer


class FakeStore:
    def __init__(self, fail: bool = False) -> None:
        self.fail, self.recorded, self.due = fail, [], [{"alert_id": 1, "event": "opened", "tenant_id": "acme"}]

    async def record(self, results: Any, *, source: str, alert_after: int) -> list[dict[str, Any]]:
        if self.fail:
            raise HealthStoreError("supabase answered 503")
        self.recorded.append((source, alert_after, [r.tenant_id for r in results]))
        return [{"tenant_id": "acme", "event": "opened"}]

    async def due_notifications(self) -> list[dict[str, Any]]:
        return self.due

    async def mark_notified(self, alert_id: int, event: str, delivered: bool, error: str | None) -> None:
        self.due = []


class FakeWebhook:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def deliver(self, event: dict[str, Any]) -> tuple[bool, str | None]:
        self.sent.append(event)
        return True, None


GOOD_HTTP = {
    "/api/health": HttpResponse(200, {"content-type": "application/json"}, HEALTHY.body),
    "/": HttpResponse(200, {"content-type": "text/html"}, PAGE.body),
}


async def test_the_one_prober_sends_the_tenants_host_to_a_base_url_or_to_the_host_itself() -> None:
    http = FakeHttp(GOOD_HTTP)
    result = await check_tenant(HttpProber(http, "http://127.0.0.1:8787/"), Target("acme", "acme.example"))
    assert result.ok and [c[1] for c in http.calls] == ["http://127.0.0.1:8787/api/health", "http://127.0.0.1:8787/"]
    assert all(c[2]["host"] == "acme.example" for c in http.calls)
    http = FakeHttp({"/api/health": None, "/": GOOD_HTTP["/"]})
    result = await check_tenant(HttpProber(http), Target("acme", "acme.example"))
    assert not result.ok and result.health_status is None and http.calls[0][1] == "https://acme.example/api/health"


async def test_one_run_probes_records_and_delivers_now_or_deferred() -> None:
    store, hook = FakeStore(), FakeWebhook()
    run = await run_health(
        [Target("acme", "acme.example")],
        HttpProber(FakeHttp(GOOD_HTTP)),
        store,
        source="cli",
        alert_after=3,
        webhook=hook,
    )  # type: ignore[arg-type]
    assert run.recorded and run.failing == [] and store.recorded == [("cli", 3, ["acme"])]
    assert run.deliveries and run.deliveries[0]["delivered"] and len(hook.sent) == 1
    deferred: list[Any] = []
    store, hook = FakeStore(), FakeWebhook()
    run = await run_health(
        [Target("acme", None)],
        HttpProber(FakeHttp({})),
        store,
        source="cron",
        alert_after=2,
        webhook=hook,
        defer=deferred.append,
    )  # type: ignore[arg-type]
    assert run.failing == ["acme"] and run.deliveries is None and not hook.sent and len(deferred) == 1
    await deferred[0]
    assert len(hook.sent) == 1


async def test_a_run_that_cannot_record_says_so_and_delivers_nothing() -> None:
    hook = FakeWebhook()
    run = await run_health(
        [Target("acme", "acme.example")],
        HttpProber(FakeHttp(GOOD_HTTP)),
        FakeStore(fail=True),
        source="cron",
        alert_after=3,
        webhook=hook,
    )  # type: ignore[arg-type]
    assert not run.recorded and "503" in (run.error or "") and not hook.sent
    assert run.summary()["tenants"] == 1


def test_alert_after_is_bounded() -> None:
    assert [alert_after(v) for v in ("3", "1", "0", "101", "x", "", None, 7)] == [3, 1, 3, 3, 3, 3, 3, 7]


EVENT = {
    "event": "alert.opened",
    "alert_id": 7,
    "tenant_id": "acme",
    "opened_at": "2026-11-26T10:00:00+00:00",
    "resolved_at": None,
    "failures": 3,
    "detail": "health: HTTP 502",
}


class MemoryStore:
    def __init__(self, due: list[dict[str, Any]]) -> None:
        self.due, self.marks = due, []

    async def record(self, results: Any, *, source: str, alert_after: int) -> list[dict[str, Any]]:
        return []

    async def due_notifications(self) -> list[dict[str, Any]]:
        return self.due

    async def mark_notified(self, alert_id: int, event: str, delivered: bool, error: str | None) -> None:
        self.marks.append((alert_id, event, delivered, error))


async def test_the_webhook_is_signed_retried_and_never_raises() -> None:
    receiver = AlertReceiver("hook-secret")
    slept: list[float] = []

    async def no_wait(seconds: float) -> None:
        slept.append(seconds)

    with LiveServer(receiver) as server:
        http = HttpxClient()
        try:
            hook = AlertWebhook(http, server.url + "/hook", secret="hook-secret", sleep=no_wait)
            assert await hook.deliver(EVENT) == (True, None)
            d = receiver.deliveries[-1]
            assert d["signed"] and d["body"] == {
                "type": "alert.opened",
                "alert_id": 7,
                "tenant_id": "acme",
                "opened_at": "2026-11-26T10:00:00+00:00",
                "resolved_at": None,
                "consecutive_failures": 3,
                "detail": "health: HTTP 502",
            }
            assert d["headers"]["x-cmgsite-delivery"] == "7:alert.opened"

            receiver.mode = "fail"  # 500: retried, then given up for this run
            assert await hook.deliver(EVENT) == (False, "HTTP 500")
            assert [x["status"] for x in receiver.deliveries[1:]] == [500, 500, 500] and slept == [0.5, 2.0]
            assert len({x["headers"]["x-cmgsite-delivery"] for x in receiver.deliveries}) == 1  # one event, idempotent

            receiver.mode = "refuse"  # 410: the receiver does not want it; retrying will not help
            before = len(receiver.deliveries)
            assert await hook.deliver(EVENT) == (False, "HTTP 410")
            assert len(receiver.deliveries) == before + 1

            unsigned = AlertWebhook(http, server.url + "/hook", sleep=no_wait)
            receiver.mode = "ok"
            assert await unsigned.deliver(EVENT) == (True, None)
            assert (
                not receiver.deliveries[-1]["signed"]
                and "x-cmgsite-signature" not in receiver.deliveries[-1]["headers"]
            )

            nowhere = AlertWebhook(http, "http://127.0.0.1:9/hook", sleep=no_wait)
            ok, error = await nowhere.deliver(EVENT)
            assert not ok and error and error.startswith("no answer")

            store = MemoryStore([EVENT, {**EVENT, "event": "alert.resolved", "resolved_at": "2026-11-26T11:00:00Z"}])
            receiver.mode = "fail"
            out = await deliver_due(store, hook)
            assert [m[2] for m in store.marks] == [False, False] and all(m[3] == "HTTP 500" for m in store.marks)
            assert [o["event"] for o in out] == ["alert.opened", "alert.resolved"]
            assert await deliver_due(store, None) == []
        finally:
            await http.aclose()


def test_signature_is_hmac_of_timestamp_and_body() -> None:
    body = json.dumps({"a": 1}).encode()
    assert sign("k", 100, body) == sign("k", 100, body) != sign("k", 101, body) != sign("j", 100, body)
    assert sign("k", 100, body).startswith("sha256=") and len(sign("k", 100, body)) == 7 + 64


def test_check_result_rows_carry_the_source() -> None:
    r = CheckResult("acme", False, None, None, 0, "no routed domain")
    assert r.row("cli")["source"] == "cli" and r.row("cli")["ok"] is False

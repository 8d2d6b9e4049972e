"""Health checks and alerts: probe every active tenant, record, alert after N failures in a row.

    run = await run_health(targets, HttpProber(http, base_url), store, source="cron", alert_after=3,
                           webhook=webhook, defer=ctx.waitUntil)   # probe, record, then the alert outbox

One run probes each tenant through the dispatcher: `GET /api/health` under the tenant's host
must answer 200 `{"status": "ok", "tenant_id": <that tenant>}`, and the home page (the page with
the sign-in buttons) must render as HTML with its sign-in links. The database decides alerts
(`public.record_health_checks`, 20261126235519_operations.sql: an alert opens when the last N checks all
failed, at most one open per tenant, resolved by the next good check) and keeps the webhook
outbox (`alert_notifications_due` / `mark_alert_notified`): a delivery that fails is retried a
few times in the run, and again on later runs (up to 10 attempts).

One implementation (HttpProber over a small HTTP protocol, run_health), two wirings: the
dispatcher's cron handler (dispatcher/health.py: targets from D1, an HttpClient that goes through
the dispatcher in process, Supabase over the Worker's fetch, deliveries deferred) and the
operator's `tenants.py check` (controlplane/health.py: targets from Supabase, HTTP over the
network, deliveries awaited). Stdlib only.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Awaitable, Callable, Protocol, Sequence

from shared.outbound_http import HttpClient, HttpError

log = logging.getLogger("cmgsite.health")

HEALTH_PATH = "/api/health"
PAGE_PATH = "/"
SIGN_IN_MARK = b"/auth/login/"  # the page renders its sign-in links
PROBE_TIMEOUT_SECONDS = 10.0
USER_AGENT = "cmgsite-health/1"
SIGNATURE_HEADER = "x-cmgsite-signature"


@dataclass(frozen=True)
class Target:
    tenant_id: str
    host: str | None  # None: the tenant has no routed domain (a failed check)


@dataclass(frozen=True)
class ProbeAnswer:
    status: int | None  # None: no answer (timeout, connection refused, the Worker threw)
    content_type: str = ""
    body: bytes = b""  # the first bytes only
    latency_ms: float = 0.0
    error: str = ""


class Prober(Protocol):
    async def get(self, host: str, path: str) -> ProbeAnswer: ...


BODY_LIMIT = 64 * 1024


class HttpProber:
    """The one Prober: `GET <path>` with the tenant's Host header over an HttpClient, to `base_url`
    (a dispatcher) or, without one, to https://<host> itself. The dispatcher's cron hands it a client
    that goes through its own request path in process; the CLI one over the network."""

    def __init__(
        self, http: HttpClient, base_url: str | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._http, self._base, self._clock = http, base_url.rstrip("/") if base_url else None, clock

    async def get(self, host: str, path: str) -> ProbeAnswer:
        url = f"{self._base}{path}" if self._base else f"https://{host}{path}"
        started = self._clock()
        try:
            resp = await self._http.request(
                "GET", url, headers={"host": host, "user-agent": USER_AGENT}, timeout=PROBE_TIMEOUT_SECONDS
            )
        except HttpError as exc:
            return ProbeAnswer(None, error=str(exc)[:120], latency_ms=(self._clock() - started) * 1000)
        return ProbeAnswer(
            resp.status, resp.headers.get("content-type", ""), resp.body[:BODY_LIMIT], (self._clock() - started) * 1000
        )


@dataclass(frozen=True)
class CheckResult:
    tenant_id: str
    ok: bool
    health_status: int | None
    page_status: int | None
    latency_ms: int
    detail: str

    def row(self, source: str) -> dict[str, Any]:
        return {**asdict(self), "source": source}


def _health_ok(answer: ProbeAnswer, tenant_id: str) -> str:
    """'' when /api/health is healthy for this tenant, else why not."""
    if answer.status is None:
        return f"health: no answer ({answer.error or 'unknown'})"
    if answer.status != 200:
        return f"health: HTTP {answer.status}"
    try:
        doc = json.loads(answer.body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return "health: not JSON"
    if not isinstance(doc, dict) or doc.get("status") != "ok":
        return "health: status not ok"
    if doc.get("tenant_id") != tenant_id:
        return "health: answered for another tenant"
    return ""


def _page_ok(answer: ProbeAnswer) -> str:
    if answer.status is None:
        return f"sign-in page: no answer ({answer.error or 'unknown'})"
    if answer.status != 200:
        return f"sign-in page: HTTP {answer.status}"
    if "text/html" not in answer.content_type:
        return "sign-in page: not HTML"
    if SIGN_IN_MARK not in answer.body:
        return "sign-in page: no sign-in links"
    return ""


async def _probe(prober: Prober, host: str, path: str, timeout: float) -> ProbeAnswer:
    try:
        return await asyncio.wait_for(prober.get(host, path), timeout)
    except asyncio.TimeoutError:
        return ProbeAnswer(None, error="timeout")
    except Exception as exc:  # a probe never fails the run
        return ProbeAnswer(None, error=type(exc).__name__)


async def check_tenant(prober: Prober, target: Target, *, timeout: float = PROBE_TIMEOUT_SECONDS) -> CheckResult:
    if not target.host:
        return CheckResult(target.tenant_id, False, None, None, 0, "no routed domain")
    health = await _probe(prober, target.host, HEALTH_PATH, timeout)
    page = await _probe(prober, target.host, PAGE_PATH, timeout)
    problems = [p for p in (_health_ok(health, target.tenant_id), _page_ok(page)) if p]
    return CheckResult(
        target.tenant_id,
        not problems,
        health.status,
        page.status,
        int(round(health.latency_ms + page.latency_ms)),
        "; ".join(problems)[:500],
    )


async def run_checks(
    targets: Sequence[Target], prober: Prober, *, concurrency: int = 6, timeout: float = PROBE_TIMEOUT_SECONDS
) -> list[CheckResult]:
    """Every target, at most `concurrency` at a time; results in the targets' order."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(t: Target) -> CheckResult:
        async with gate:
            return await check_tenant(prober, t, timeout=timeout)

    return list(await asyncio.gather(*(one(t) for t in targets)))


# ---- where results and alerts live --------------------------------------------------------------


class HealthStore(Protocol):
    async def record(self, results: Sequence[CheckResult], *, source: str, alert_after: int) -> list[dict[str, Any]]:
        """Record one run; the alert transitions it caused."""
        ...

    async def due_notifications(self) -> list[dict[str, Any]]: ...

    async def mark_notified(self, alert_id: int, event: str, delivered: bool, error: str | None) -> None: ...


class Rpc(Protocol):
    async def rpc(self, function: str, args: dict[str, Any] | None = None) -> Any: ...


class HealthStoreError(Exception):
    """The results could not be recorded (Supabase down or refusing)."""


class PostgrestRpc:
    """`POST <SUPABASE_URL>/rest/v1/rpc/<function>` with the service role: all the health checks need
    of Supabase. (shared.supabase.SupabaseClient pulls in pydantic through shared.jwt; the
    dispatcher ships without it.)"""

    def __init__(self, http: HttpClient, url: str, service_role_key: str, *, timeout: float = 10.0) -> None:
        self._http, self._base, self._key, self._timeout = (
            http,
            url.rstrip("/") + "/rest/v1/rpc/",
            service_role_key,
            timeout,
        )

    async def rpc(self, function: str, args: dict[str, Any] | None = None) -> Any:
        if not function.replace("_", "").isalnum():
            raise ValueError("invalid function name")
        try:
            resp = await self._http.request(
                "POST",
                self._base + function,
                body=json.dumps(args or {}).encode(),
                timeout=self._timeout,
                headers={
                    "apikey": self._key,
                    "authorization": f"Bearer {self._key}",
                    "content-type": "application/json",
                    "accept": "application/json",
                },
            )
        except HttpError as exc:
            raise HealthStoreError(f"supabase unreachable: {exc}") from None
        if not 200 <= resp.status < 300:
            raise HealthStoreError(f"supabase answered {resp.status}: {resp.body[:200].decode('utf-8', 'replace')}")
        if not resp.body:
            return None
        try:
            return resp.json()
        except (ValueError, UnicodeDecodeError):
            raise HealthStoreError("unreadable answer from supabase") from None


class SupabaseHealthStore:
    """The functions of 20261126235519_operations.sql, called with the service role (PostgrestRpc)."""

    def __init__(self, db: Rpc) -> None:
        self._db = db

    async def record(self, results: Sequence[CheckResult], *, source: str, alert_after: int) -> list[dict[str, Any]]:
        if not results:
            return []
        out = await self._db.rpc(
            "record_health_checks", {"checks": [r.row(source) for r in results], "alert_after": alert_after}
        )
        return list(out or [])

    async def due_notifications(self) -> list[dict[str, Any]]:
        return list(await self._db.rpc("alert_notifications_due", {}) or [])

    async def mark_notified(self, alert_id: int, event: str, delivered: bool, error: str | None) -> None:
        await self._db.rpc(
            "mark_alert_notified", {"alert_id": alert_id, "event": event, "delivered": delivered, "error": error}
        )


# ---- the alert webhook -----------------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>." + body): receivers check it and the age."""
    return "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


class AlertWebhook:
    """POSTs one alert event as JSON; retried on network errors, 408, 429 and 5xx (not on other 4xx)."""

    def __init__(
        self,
        http: HttpClient,
        url: str,
        *,
        secret: str = "",
        attempts: int = 3,
        backoff_seconds: Sequence[float] = (0.5, 2.0),
        timeout: float = 10.0,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http, self.url, self._secret = http, url, secret
        self._attempts, self._backoff, self._timeout = max(1, attempts), tuple(backoff_seconds), timeout
        self._sleep, self._clock = sleep, clock

    @staticmethod
    def payload(event: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": event["event"],
            "alert_id": event["alert_id"],
            "tenant_id": event["tenant_id"],
            "opened_at": event.get("opened_at"),
            "resolved_at": event.get("resolved_at"),
            "consecutive_failures": event.get("failures"),
            "detail": event.get("detail"),
        }

    async def deliver(self, event: dict[str, Any]) -> tuple[bool, str | None]:
        body = json.dumps(self.payload(event), sort_keys=True).encode()
        error: str | None = None
        for attempt in range(self._attempts):
            if attempt:
                await self._sleep(self._backoff[min(attempt - 1, len(self._backoff) - 1)] if self._backoff else 0)
            now = int(self._clock())
            headers = {
                "content-type": "application/json",
                "user-agent": USER_AGENT,
                "x-cmgsite-event": str(event["event"]),
                "x-cmgsite-delivery": f"{event['alert_id']}:{event['event']}",  # the same on every retry
                "x-cmgsite-timestamp": str(now),
            }
            if self._secret:
                headers[SIGNATURE_HEADER] = sign(self._secret, now, body)
            try:
                resp = await self._http.request("POST", self.url, headers=headers, body=body, timeout=self._timeout)
            except HttpError as exc:
                error = f"no answer: {exc}"[:300]
                continue
            if 200 <= resp.status < 300:
                return True, None
            error = f"HTTP {resp.status}"
            if 400 <= resp.status < 500 and resp.status not in (408, 429):
                break  # the receiver refuses this event: retrying will not help
        return False, error


async def deliver_due(store: HealthStore, webhook: AlertWebhook | None) -> list[dict[str, Any]]:
    """Send every due alert event (the outbox); record each outcome. Never raises for a delivery."""
    if webhook is None:
        return []
    out = []
    for event in await store.due_notifications():
        delivered, error = await webhook.deliver(event)
        await store.mark_notified(int(event["alert_id"]), str(event["event"]), delivered, error)
        out.append(
            {
                "alert_id": event["alert_id"],
                "event": event["event"],
                "tenant_id": event["tenant_id"],
                "delivered": delivered,
                "error": error,
            }
        )
    return out


@dataclass
class HealthRun:
    """One run's outcome: the rows checked, who failed, what was recorded and delivered."""

    checks: list[dict[str, Any]]
    failing: list[str]
    recorded: bool = False
    transitions: list[dict[str, Any]] | None = None
    deliveries: list[dict[str, Any]] | None = None  # None: not delivered in the run (deferred or no webhook)
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tenants": len(self.checks), "failing": self.failing, "recorded": self.recorded}
        for key in ("transitions", "deliveries", "error"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


async def run_health(
    targets: Sequence[Target],
    prober: Prober,
    store: HealthStore | None,
    *,
    source: str,
    alert_after: int,
    webhook: AlertWebhook | None = None,
    defer: Callable[[Awaitable[Any]], None] | None = None,
) -> HealthRun:
    """The one health run, for the cron and the CLI: probe, record (no store: probe only), then
    deliver due alert events, in `defer` when given (the check never waits for a receiver)."""
    results = await run_checks(targets, prober)
    run = HealthRun([r.row(source) for r in results], sorted(r.tenant_id for r in results if not r.ok))
    if store is None:
        return run
    try:
        run.transitions = await store.record(results, source=source, alert_after=alert_after)
        run.recorded = True
    except HealthStoreError as exc:
        run.error = str(exc)[:200]
        return run
    if webhook is not None:
        if defer is not None:
            defer(_deliver_logged(store, webhook))
        else:
            try:
                run.deliveries = await deliver_due(store, webhook)
            except HealthStoreError as exc:
                run.error = f"alert delivery: {str(exc)[:200]}"
    return run


async def _deliver_logged(store: HealthStore, webhook: AlertWebhook) -> None:
    try:
        for d in await deliver_due(store, webhook):
            log.warning(json.dumps({"event": "alert_delivery", **d}))
    except HealthStoreError as exc:
        log.error(json.dumps({"event": "alert_delivery_failed", "reason": str(exc)[:200]}))

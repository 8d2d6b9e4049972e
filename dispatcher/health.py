"""The dispatcher's cron handler: health checks of every active tenant (shared.health).

    await run_scheduled(env, dispatcher, defer)    # from Default.scheduled (wrangler: [triggers] crons)

- Targets: every `active` tenant in D1 with one host each (its primary domain, else a platform
  subdomain, else any).
- Probes: through this same Dispatcher, in process (`Dispatcher.handle`, source "probe"): the
  route look-up, the namespace and the tenant Worker, exactly as a visitor's request goes (a
  Worker cannot fetch its own zone's hostnames on Cloudflare, and need not).
- Results and alerts: Supabase (`record_health_checks`, service role: SUPABASE_URL and
  SUPABASE_SERVICE_ROLE_KEY secrets), HEALTH_ALERT_AFTER consecutive failures open an alert.
- Webhook: ALERT_WEBHOOK_URL (signed with ALERT_WEBHOOK_SECRET when set), delivered in
  `defer` (ctx.waitUntil) after the run is recorded, so a slow or failing receiver never holds
  up or fails the checks; undelivered events stay in the outbox for the next run.
"""
from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from workers import Request

from shared.fetch_client import FetchClient
from shared.health import (
    USER_AGENT,
    AlertWebhook,
    HealthStoreError,
    PostgrestRpc,
    ProbeAnswer,
    SupabaseHealthStore,
    Target,
    deliver_due,
    run_checks,
)
from shared.metrics import SOURCE_PROBE

if TYPE_CHECKING:
    from dispatcher.app import Dispatcher

log = logging.getLogger("cmgsite.dispatcher.health")

TARGETS_SQL = (
    "SELECT t.tenant_id AS tenant_id, (SELECT d.domain FROM tenant_domains AS d WHERE d.tenant_id = t.tenant_id"
    " ORDER BY CASE d.domain_type WHEN 'primary' THEN 0 WHEN 'subdomain' THEN 1 ELSE 2 END, d.domain LIMIT 1) AS host"
    " FROM tenants AS t WHERE t.status = 'active' ORDER BY t.tenant_id"
)
BODY_LIMIT = 64 * 1024


async def targets_from_d1(db: Any) -> list[Target]:
    result = await db.prepare(TARGETS_SQL).all()
    rows = result["results"] if isinstance(result, dict) else result.results
    return [Target(str(r["tenant_id"]), str(r["host"]) if r["host"] else None) for r in rows]


class InProcessProber:
    """shared.health.Prober through the dispatcher's own request path."""

    def __init__(self, dispatcher: Any, defer: Callable[[Awaitable[Any]], None] | None,
                 clock: Callable[[], float] = time.time) -> None:
        self._dispatcher, self._defer, self._clock = dispatcher, defer, clock

    async def get(self, host: str, path: str) -> ProbeAnswer:
        started = self._clock()
        request = Request(f"https://{host}{path}", headers={"host": host, "user-agent": USER_AGENT})
        response = await self._dispatcher.handle(request, self._defer, source=SOURCE_PROBE)
        body = bytes(await response.bytes())[:BODY_LIMIT]
        return ProbeAnswer(response.status, str(response.headers.get("content-type") or ""), body,
                           (self._clock() - started) * 1000)


async def run_scheduled(env: Any, dispatcher: "Dispatcher", defer: Callable[[Awaitable[Any]], None] | None) -> dict[str, Any]:
    """One cron run: probe, record, then deliver alerts in `defer`. Returns a summary (logged)."""
    config = dispatcher.config
    targets = await targets_from_d1(env.DB)
    results = await run_checks(targets, InProcessProber(dispatcher, defer))
    summary: dict[str, Any] = {"event": "health_run", "tenants": len(results),
                               "failing": sorted(r.tenant_id for r in results if not r.ok)}
    if not config.records_health:
        summary["recorded"] = False
        log.error(json.dumps({**summary, "reason": "SUPABASE_URL / SUPABASE_SERVICE_ROLE_KEY not set"}))
        return summary
    http = FetchClient()
    store = SupabaseHealthStore(PostgrestRpc(http, config.supabase_url, config.supabase_service_role_key))
    try:
        summary["transitions"] = await store.record(results, source="cron",
                                                    alert_after=config.health_alert_after)
        summary["recorded"] = True
    except HealthStoreError as exc:
        summary["recorded"] = False
        log.error(json.dumps({**summary, "reason": str(exc)[:200]}))
        return summary
    if config.alert_webhook_url:
        webhook = AlertWebhook(http, config.alert_webhook_url, secret=config.alert_webhook_secret)
        delivery = _deliver(store, webhook)
        if defer is not None:
            defer(delivery)
        else:
            await delivery
    log.warning(json.dumps(summary))
    return summary


async def _deliver(store: SupabaseHealthStore, webhook: AlertWebhook) -> None:
    try:
        for d in await deliver_due(store, webhook):
            log.warning(json.dumps({"event": "alert_delivery", **d}))
    except HealthStoreError as exc:
        log.error(json.dumps({"event": "alert_delivery_failed", "reason": str(exc)[:200]}))

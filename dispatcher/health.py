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
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from workers import Request

from shared.fetch_client import FetchClient
from shared.health import AlertWebhook, HttpProber, PostgrestRpc, SupabaseHealthStore, Target, run_health
from shared.metrics import SOURCE_PROBE
from shared.outbound_http import HttpResponse

if TYPE_CHECKING:
    from dispatcher.app import Dispatcher

log = logging.getLogger("cmgsite.dispatcher.health")

TARGETS_SQL = (
    "SELECT t.tenant_id AS tenant_id, (SELECT d.domain FROM tenant_domains AS d WHERE d.tenant_id = t.tenant_id"
    " ORDER BY CASE d.domain_type WHEN 'primary' THEN 0 WHEN 'subdomain' THEN 1 ELSE 2 END, d.domain LIMIT 1) AS host"
    " FROM tenants AS t WHERE t.status = 'active' ORDER BY t.tenant_id"
)


async def targets_from_d1(db: Any) -> list[Target]:
    result = await db.prepare(TARGETS_SQL).all()
    rows = result["results"] if isinstance(result, dict) else result.results
    return [Target(str(r["tenant_id"]), str(r["host"]) if r["host"] else None) for r in rows]


class InProcessHttp:
    """shared.outbound_http.HttpClient through the dispatcher's own request path (source "probe"): the
    adapter at the JS boundary that lets the shared HttpProber probe without leaving the Worker."""

    def __init__(self, dispatcher: Any, defer: Callable[[Awaitable[Any]], None] | None) -> None:
        self._dispatcher, self._defer = dispatcher, defer

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = 10.0,
    ) -> HttpResponse:
        request = (
            Request(url, headers=headers or {})
            if method == "GET"
            else Request(url, method=method, headers=headers or {})
        )
        response = await self._dispatcher.handle(request, self._defer, source=SOURCE_PROBE)
        return HttpResponse(
            response.status,
            {"content-type": str(response.headers.get("content-type") or "")},
            bytes(await response.bytes()),
        )


async def run_scheduled(
    env: Any, dispatcher: "Dispatcher", defer: Callable[[Awaitable[Any]], None] | None
) -> dict[str, Any]:
    """One cron run: probe, record, then deliver alerts in `defer` (shared.health.run_health)."""
    config = dispatcher.config
    http = FetchClient()
    store = (
        SupabaseHealthStore(PostgrestRpc(http, config.supabase_url, config.supabase_service_role_key))
        if config.records_health
        else None
    )
    webhook = (
        AlertWebhook(http, config.alert_webhook_url, secret=config.alert_webhook_secret)
        if config.alert_webhook_url
        else None
    )
    targets = await targets_from_d1(env.DB)
    # Probed by host, so the base URL's own host never matters: the request carries the tenant's Host.
    prober = HttpProber(InProcessHttp(dispatcher, defer))
    run = await run_health(
        targets, prober, store, source="cron", webhook=webhook, defer=defer, alert_after=config.health_alert_after
    )
    summary = {"event": "health_run", **run.summary()}
    if store is None:
        summary["error"] = "SUPABASE_URL / SUPABASE_SERVICE_ROLE_KEY not set"
    (log.warning if run.recorded else log.error)(json.dumps(summary))
    return summary

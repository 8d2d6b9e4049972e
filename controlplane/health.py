"""`tenants.py check [--tenant ID] [--cron]`: the health checks on demand (shared.health).

The same checks, the same table and the same alert rules as the dispatcher's cron handler
(dispatcher/health.py), run from the operator's machine:
- targets: active tenants from the Supabase registry (or the one named), each at its domain;
- probes over HTTP: locally to the running platform's dispatcher with the tenant's Host header,
  remotely to https://<domain> itself (the path a visitor takes);
- results and alerts: `record_health_checks` (source "cli"), then the webhook outbox
  (ALERT_WEBHOOK_URL / ALERT_WEBHOOK_SECRET from the environment; locally also the dispatcher's
  .dev.vars and [vars]).
`--cron` (local only) instead fires the running platform's own cron handler through Miniflare's
scheduled trigger and reports what it recorded.
"""

from __future__ import annotations

import tomllib
from typing import Any, Mapping

from controlplane.errors import BackendError, ConfigError, NotFound, Refused
from controlplane.lifecycle import ControlPlane
from controlplane.wiring import ROOT, Settings, _supabase_settings
from shared.config import alert_after
from shared.health import AlertWebhook, HttpProber, PostgrestRpc, SupabaseHealthStore, Target, run_health
from shared.models import TenantStatus
from shared.outbound_http import HttpClient


def _dispatcher_setting(settings: Settings, name: str) -> str:
    """A dispatcher setting for the CLI: the environment, else (locally) its .dev.vars, else its [vars]."""
    if settings.env.get(name):
        return str(settings.env[name])
    if not settings.remote:
        from localrt.devvars import read_dev_vars

        local = read_dev_vars(settings.state_dir / "secrets" / "dispatcher.dev.vars")
        if local.get(name):
            return local[name]
    parsed = tomllib.loads((ROOT / "wrangler.dispatcher.toml").read_text())
    return str(parsed.get("vars", {}).get(name, "") or "")


async def check(
    cp: ControlPlane, settings: Settings, http: HttpClient, *, tenant_id: str | None = None, cron: bool = False
) -> dict[str, Any]:
    if cron:
        return _fire_cron(settings, tenant_id)
    base_url: str | None = None
    if not settings.remote:
        from localrt.workerd import dispatcher_url_if_running

        base_url = dispatcher_url_if_running(settings.state_dir)
        if base_url is None:
            raise ConfigError(
                "no local platform is running for this state directory: start it with "
                "`python -m localrt run` (the checks go through its dispatcher)"
            )
    if tenant_id:
        tenant = await cp.require(tenant_id)
        if tenant.status is not TenantStatus.ACTIVE:
            raise Refused(f"{tenant.tenant_id} is {tenant.status.value}: only active tenants are checked")
        tenants = [tenant]
    else:
        tenants = [t for t in await cp.registry.tenants() if t.status is TenantStatus.ACTIVE]
    targets = [Target(t.tenant_id, t.domain) for t in tenants]
    cp.reporter.step(f"health: probe {len(targets)} tenant(s) through {base_url or 'their domains'}", read=True)
    n = alert_after(_dispatcher_setting(settings, "HEALTH_ALERT_AFTER"))
    store: SupabaseHealthStore | None = None
    webhook: AlertWebhook | None = None
    if not cp.dry_run:
        url, key = _supabase_settings(settings)
        store = SupabaseHealthStore(PostgrestRpc(http, url, key))
        hook = _dispatcher_setting(settings, "ALERT_WEBHOOK_URL")
        webhook = (
            AlertWebhook(http, hook, secret=_dispatcher_setting(settings, "ALERT_WEBHOOK_SECRET")) if hook else None
        )
    run = await run_health(targets, HttpProber(http, base_url), store, source="cli", alert_after=n, webhook=webhook)
    report: dict[str, Any] = {"checks": run.checks, "failing": run.failing}
    if cp.dry_run:
        cp.reporter.plan(
            "supabase", f"POST /rest/v1/rpc/record_health_checks ({len(run.checks)} checks, alert_after={n})"
        )
        return report
    if run.error is not None:
        raise BackendError(f"recording the checks failed: {run.error}")
    report["transitions"] = run.transitions
    report["deliveries"] = run.deliveries if run.deliveries is not None else []
    return report


def _fire_cron(settings: Settings, tenant_id: str | None) -> dict[str, Any]:
    if settings.remote:
        raise Refused(
            "--cron fires the local platform's scheduled trigger; on Cloudflare the cron runs by itself "
            "(use `check --remote` to run the checks from here)"
        )
    if tenant_id:
        raise Refused("--cron runs the platform's own cron handler, which checks every tenant: drop --tenant")
    from localrt.workerd import HostError, scheduled_if_running

    try:
        outcome = scheduled_if_running(settings.state_dir)
    except HostError as exc:
        raise BackendError(str(exc)) from None
    if outcome is None:
        raise ConfigError(
            "no local platform is running for this state directory: start it with `python -m localrt run`"
        )
    return {"cron": outcome}


def exit_failing(report: Mapping[str, Any]) -> bool:
    return bool(report.get("failing"))


__all__ = ["HttpProber", "NotFound", "check", "exit_failing"]  # HttpProber: shared.health's, re-exported

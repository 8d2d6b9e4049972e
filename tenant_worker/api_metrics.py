"""Per-tenant metrics as JSON (the dashboards are clients of these).

    GET /api/metrics?window=24h            admin: this tenant's requests, p50/p95, error rate,
                                           sign-in success by provider, feature use, errors by code,
                                           and the request/error series for charts
    GET /api/platform/metrics?window=24h   super_admin on the primary tenant: every tenant at once

Windows: 1h, 24h, 7d, 30d. Both read shared.metrics_query (three queries per summary, whatever
the number of tenants). The tenant id in the query is the verified context's, never the caller's.
"""

from __future__ import annotations

from shared.metrics_query import WINDOWS, MetricsUnavailable
from shared.models import TenantType
from tenant_worker.inbound_http import ApiError, Call, Reply, Route, json_reply
from tenant_worker.metrics_adapter import metrics_queries
from tenant_worker.principal import Role, require


def window_arg(call: Call, default: str = "24h") -> str:
    window = call.arg("window") or default
    if window not in WINDOWS:
        raise ApiError(400, "invalid_query", f"window must be one of {', '.join(WINDOWS)}.")
    return window


def metrics_down(exc: MetricsUnavailable) -> ApiError:
    return ApiError(
        503,
        "metrics_unavailable",
        "Metrics are unavailable right now. Please try again shortly.",
        headers={"retry-after": "5"},
    )


async def tenant_metrics(call: Call) -> Reply:
    require(call, Role.ADMIN)
    window, tid, now = window_arg(call), call.tenant.tenant_id, call.services.clock()
    q = metrics_queries(call)
    try:
        summary = (await q.summary(window=window, now=now, tenant_ids=[tid]))[tid]
        series = await q.series(window=window, now=now, tenant_id=tid)
    except MetricsUnavailable as exc:
        raise metrics_down(exc) from None
    return json_reply(
        {"window": window, "metrics": summary.view(), "series": series}, headers={"cache-control": "no-store"}
    )


async def platform_metrics(call: Call) -> Reply:
    if call.tenant.tenant_type is not TenantType.PRIMARY:
        raise ApiError(404, "not_found", "There is nothing here.")  # platform endpoints exist on the primary only
    require(call, Role.SUPER_ADMIN)
    window = window_arg(call)
    try:
        summary = await metrics_queries(call).summary(window=window, now=call.services.clock())
    except MetricsUnavailable as exc:
        raise metrics_down(exc) from None
    return json_reply(
        {"window": window, "tenants": [summary[t].view() for t in sorted(summary)]},
        headers={"cache-control": "no-store"},
    )


ROUTES = [
    Route("GET", "/api/metrics", tenant_metrics, "metrics.tenant"),
    Route("GET", "/api/platform/metrics", platform_metrics, "platform.metrics"),
]

"""The tenant Worker's side of the per-tenant metrics (shared.metrics): what one request records.

    point = request_point(tenant_id, method, route_name, status, latency_ms, code, call_state)

The route is the route table's name (never the raw path); the feature comes from the route
name (AI, domain and file operations); a sign-in attempt is what `auth.record_signin` noted in
the call's state (provider and outcome); the error code is the ApiError's, or the sign-in
failure's reason. `metrics_queries(call)` builds the query side for this Worker: the Analytics
Engine SQL API (ANALYTICS_SQL_URL, or ANALYTICS_ACCOUNT_ID for Cloudflare's; bearer
ANALYTICS_API_TOKEN) over the Worker's fetch.
"""

from __future__ import annotations

from typing import Any, Mapping

from shared.metrics import NO_ROUTE, SOURCE_TENANT, RequestPoint, feature_of
from shared.metrics_query import MetricsQueries, SqlApiSource, sql_api_url
from tenant_worker.inbound_http import ApiError, Call

SIGNIN_STATE = "signin"  # call.state key: {"provider", "outcome", "reason"} (tenant_worker.auth)


def request_point(
    tenant_id: str,
    method: str,
    route_name: str | None,
    status: int,
    latency_ms: float,
    code: str,
    state: Mapping[str, Any] | None,
) -> RequestPoint:
    route = route_name or NO_ROUTE
    feature, provider, outcome = feature_of(route), "", ""
    signin = (state or {}).get(SIGNIN_STATE)
    if isinstance(signin, dict):
        feature, provider, outcome = "signin", str(signin.get("provider") or ""), str(signin.get("outcome") or "")
        code = code or (str(signin.get("reason") or "") if outcome == "failure" else "")
    elif feature:
        outcome = "success" if status < 400 else "failure"
    return RequestPoint(tenant_id, SOURCE_TENANT, route, method, status, latency_ms, code, feature, provider, outcome)


def metrics_queries(call: Call) -> MetricsQueries:
    """The metrics query module over this Worker's fetch; 503 when no SQL API is configured."""
    cfg = call.services.config
    url, account, token = cfg.analytics_sql_url, cfg.analytics_account_id, cfg.analytics_api_token
    if not url and account:
        url = sql_api_url(account)
    if not url or not token:
        raise ApiError(503, "metrics_unavailable", "Metrics are not configured for this site.")
    return MetricsQueries(SqlApiSource(call.services.http, url, token))

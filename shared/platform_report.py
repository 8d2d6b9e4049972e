"""The platform dashboard's figures: the answer of public.platform_dashboard() (one query: the
totals over every tenant and one sorted page of tenant rows), checked, and joined with the page's
metrics (shared.metrics_query). The Worker's work is one page, whatever the number of tenants.

Product decisions (the SQL decides them, so the totals and the sort see every tenant:
supabase/migrations/20261127021542_platform_dashboard_paged.sql):
- Revenue is what a tenant pays the platform a month: its tier's price (shared.tiers, equal to
  private.tier_monthly_price; tested). The primary tenant is the platform itself and pays nothing.
  Partner tenants (partner-subdomain and custom-domain: both white-label) resell the site;
  `customer_price` is what the partner's customer pays, the tier price plus the 20% partner markup.
- MRR counts active tenants only (a suspended or removed tenant pays nothing this month).
- Adoption: a tenant uses AI if it made AI calls this month, custom domains if it holds one, files
  if it stores any bytes; shares are over active non-primary tenants.
- Churn risk flags: usage falling month over month (this month's AI calls under half of last
  month's, when last month had some), failing health (an open alert, or uptime this month under
  99%), open SLA breaches. Two or more flags: high; one: medium.
- The tenant table is paged, 50 a page, sorted by churn risk then revenue (`risk`, the default),
  revenue, name or tenant id; the tenant id breaks ties, so pages never overlap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict

PER_PAGE = 50
MAX_PAGE = 100_000
SORTS = ("risk", "revenue", "name", "tenant")
DEFAULT_SORT = "risk"
QUERY_NAMES = frozenset({"page", "sort"})
RISK_REASONS: dict[str, str] = {
    "usage_falling": "usage falling month over month",
    "failing_health": "failing health checks",
    "sla_breaches": "open SLA breaches",
}
_PAGE = re.compile(r"[1-9][0-9]{0,5}")


class DashboardQueryError(ValueError):
    """A page or sort the dashboard does not offer; the message says what it does."""


@dataclass(frozen=True)
class PageQuery:
    page: int = 1
    sort: str = DEFAULT_SORT
    per_page: int = PER_PAGE

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page


def page_query(query: Mapping[str, list[str]]) -> PageQuery:
    """`?page=` (a whole number from 1) and `?sort=` (one of SORTS), checked whole: unknown
    names, repeated names and bad values raise DashboardQueryError."""
    unknown = sorted(set(query) - QUERY_NAMES)
    if unknown:
        raise DashboardQueryError(f"Unknown query parameter(s): {', '.join(unknown)}. Use page and sort.")
    if any(len(v) != 1 for v in query.values()):
        raise DashboardQueryError("Each query parameter may be given once.")
    raw_page = query.get("page", ["1"])[0]
    if not _PAGE.fullmatch(raw_page) or int(raw_page) > MAX_PAGE:
        raise DashboardQueryError(f"page must be a whole number from 1 to {MAX_PAGE}.")
    sort = query.get("sort", [DEFAULT_SORT])[0]
    if sort not in SORTS:
        raise DashboardQueryError(f"sort must be one of: {', '.join(SORTS)}.")
    return PageQuery(int(raw_page), sort)


# ---- the answer of public.platform_dashboard() -----------------------------------------------------


class _Row(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TenantRow(_Row):
    tenant_id: str
    name: str
    type: str
    tier: str
    status: str
    monthly_price: str
    customer_price: str | None
    uptime_percent: float | None
    open_alerts: int
    open_tickets: int
    tickets_this_month: int
    sla_breaches: int
    ai_calls: int
    custom_domains: int
    storage_bytes: int
    risk: list[str]


class Totals(_Row):
    tenants: int
    active_customers: int
    mrr: str
    customer_mrr: str
    open_alerts: int
    open_tickets: int
    tickets_this_month: int
    sla_breaches: int
    at_risk: int


class Adoption(_Row):
    ai: float | None
    custom_domains: float | None
    files: float | None


class DashboardAnswer(_Row):
    total: int
    totals: Totals
    by_status: dict[str, int]
    by_tier: dict[str, int]
    adoption: Adoption
    tenants: list[TenantRow]


def risk_view(flags: list[str]) -> dict[str, Any]:
    reasons = [RISK_REASONS.get(f, f.replace("_", " ")) for f in flags]
    return {"level": "high" if len(flags) >= 2 else "medium" if flags else "low", "reasons": reasons}


def tenant_view(row: TenantRow, metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    view = row.model_dump(exclude={"risk"})
    view["requests_24h"] = int(metrics["requests"]) if metrics else None
    view["error_rate_24h"] = metrics.get("error_rate") if metrics else None
    view["churn_risk"] = risk_view(row.risk)
    return view


def link(path: str, q: PageQuery, page: int) -> str:
    return f"{path}?{urlencode({'page': page, 'sort': q.sort})}"


def platform_report(
    answer: DashboardAnswer,
    metrics: Mapping[str, Mapping[str, Any]],
    q: PageQuery,
    path: str = "/api/platform/dashboard",
) -> dict[str, Any]:
    """The dashboard: totals over every tenant, one page of tenant rows (with their metrics
    views, tenant id -> view), and where the next and previous pages are."""
    pages = max(1, -(-answer.total // q.per_page))
    has_next = q.page * q.per_page < answer.total
    return {
        "totals": {**answer.totals.model_dump(), "by_status": answer.by_status, "by_tier": answer.by_tier},
        "adoption": answer.adoption.model_dump(),
        "tenants": [tenant_view(r, metrics.get(r.tenant_id)) for r in answer.tenants],
        "sort": q.sort,
        "sorts": list(SORTS),
        "page": q.page,
        "per_page": q.per_page,
        "pages": pages,
        "total": answer.total,
        "next": link(path, q, q.page + 1) if has_next else None,
        "prev": link(path, q, min(q.page - 1, pages)) if q.page > 1 else None,
    }

"""The platform dashboard's figures, from one overview row per tenant (public.platform_overview)
and the metrics summary (shared.metrics_query): revenue, MRR, adoption, churn risk.

Product decisions:
- Revenue is what a tenant pays the platform a month: its tier's price (shared.tiers). The primary
  tenant is the platform itself and pays nothing. Partner tenants (partner-subdomain and
  custom-domain: both white-label) resell the site; `customer_price` is what the partner's customer
  pays, the tier price plus the 20% partner markup (shared.tiers.PARTNER_MARKUP).
- MRR counts active tenants only (a suspended or removed tenant pays nothing this month).
- Adoption: a tenant uses AI if it made AI calls this month, custom domains if it holds one, files
  if it stores any bytes; shares are over active non-primary tenants.
- Churn risk flags: usage falling month over month (this month's AI calls and requests under half
  of last month's AI calls, when last month had some), failing health (an open alert, or uptime
  this month under 99%), open SLA breaches. Two or more flags: high; one: medium.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Mapping, Sequence

from shared.tiers import PARTNER_MARKUP, plan_for

PARTNER_TYPES = ("partner-subdomain", "custom-domain")
UPTIME_TARGET = 99.0


def _money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


@dataclass
class TenantLine:
    tenant_id: str
    name: str
    type: str
    tier: str
    status: str
    monthly_price: Decimal
    customer_price: Decimal | None
    uptime_percent: float | None
    open_alerts: int
    open_tickets: int
    tickets_this_month: int
    breached_open: int
    ai_calls: int
    ai_calls_last: int
    custom_domains: int
    storage_bytes: int
    requests_24h: int | None
    error_rate_24h: float | None
    risk: list[str] = field(default_factory=list)

    @property
    def risk_level(self) -> str:
        return "high" if len(self.risk) >= 2 else "medium" if self.risk else "low"

    def view(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id, "name": self.name, "type": self.type, "tier": self.tier, "status": self.status,
            "monthly_price": _money(self.monthly_price),
            "customer_price": _money(self.customer_price) if self.customer_price is not None else None,
            "uptime_percent": self.uptime_percent, "open_alerts": self.open_alerts, "open_tickets": self.open_tickets,
            "tickets_this_month": self.tickets_this_month, "sla_breaches": self.breached_open,
            "ai_calls": self.ai_calls, "custom_domains": self.custom_domains, "storage_bytes": self.storage_bytes,
            "requests_24h": self.requests_24h, "error_rate_24h": self.error_rate_24h,
            "churn_risk": {"level": self.risk_level, "reasons": self.risk},
        }


def tenant_line(row: Mapping[str, Any], metrics: Mapping[str, Any] | None) -> TenantLine:
    tier, kind, status = str(row["tier"]), str(row["type"]), str(row["status"])
    paying = kind != "primary" and status == "active"
    price = plan_for(tier).monthly_price_usd if paying else Decimal(0)
    customer = price * (1 + PARTNER_MARKUP) if paying and kind in PARTNER_TYPES else None
    checks, ok = int(row.get("checks") or 0), int(row.get("ok_checks") or 0)
    uptime = round(100.0 * ok / checks, 3) if checks else None
    requests = int(metrics["requests"]) if metrics else None
    line = TenantLine(
        str(row["tenant_id"]), str(row["name"]), kind, tier, status, price, customer, uptime,
        int(row.get("open_alerts") or 0), int(row.get("open_tickets") or 0), int(row.get("tickets_this_period") or 0),
        int(row.get("breached_open") or 0), int(row.get("ai_calls") or 0), int(row.get("ai_calls_last") or 0),
        int(row.get("custom_domains") or 0), int(row.get("storage_bytes") or 0), requests,
        metrics.get("error_rate") if metrics else None)
    if line.ai_calls_last > 0 and line.ai_calls < line.ai_calls_last / 2:
        line.risk.append("usage falling month over month")
    if line.open_alerts or (uptime is not None and uptime < UPTIME_TARGET):
        line.risk.append("failing health checks")
    if line.breached_open:
        line.risk.append("open SLA breaches")
    return line


def platform_report(rows: Sequence[Mapping[str, Any]], metrics: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The whole dashboard from the overview rows and per-tenant metrics views (tenant id -> view)."""
    lines = [tenant_line(r, metrics.get(str(r["tenant_id"]))) for r in rows]
    customers = [x for x in lines if x.type != "primary" and x.status == "active"]
    n = len(customers)

    def share(pred: Any) -> float | None:
        return round(sum(1 for x in customers if pred(x)) / n, 4) if n else None

    return {
        "tenants": [x.view() for x in lines],
        "totals": {
            "tenants": len(lines), "active_customers": n,
            "mrr": _money(sum((x.monthly_price for x in lines), Decimal(0))),
            "customer_mrr": _money(sum((x.customer_price or x.monthly_price for x in customers), Decimal(0))),
            "open_alerts": sum(x.open_alerts for x in lines),
            "open_tickets": sum(x.open_tickets for x in lines),
            "tickets_this_month": sum(x.tickets_this_month for x in lines),
            "sla_breaches": sum(x.breached_open for x in lines),
            "at_risk": sum(1 for x in customers if x.risk),
        },
        "adoption": {"ai": share(lambda x: x.ai_calls > 0), "custom_domains": share(lambda x: x.custom_domains > 0),
                     "files": share(lambda x: x.storage_bytes > 0)},
    }

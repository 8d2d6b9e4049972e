"""The dashboards: server-rendered, white-labelled pages and the JSON they are drawn from.

    GET /api/admin/dashboard     tenant admin: usage against the tier, traffic and errors (24 h),
    GET /admin                   domains with SSL/DNS state, users and roles, the audit trail,
                                 tickets, uptime and open alerts (the page draws the same data)
    GET /api/platform/dashboard  the primary tenant's super_admin: every tenant with status, tier,
    GET /platform                price, partner markup, revenue and MRR, adoption, churn risk, uptime,
                                 alerts and tickets; `?page=` (50 a page) and `?sort=` (risk,
                                 revenue, name, tenant). One Supabase query computes the totals
                                 over every tenant and returns one sorted page of rows; the metrics
                                 queries cover that page: no per-tenant round trips, and the
                                 Worker's work does not grow with the number of tenants

Charts are inline SVG drawn here (no scripts, nothing external but the tenant's own logo URL).
Every value is escaped; colours and the logo pass shared.branding.Brand.from_config.
"""

from __future__ import annotations

import asyncio
import html
import re
import time
from typing import Any, Awaitable, Sequence
from urllib.parse import urlencode

from pydantic import ValidationError

from shared.branding import Brand, logo_origin
from shared.metrics_query import MetricsUnavailable
from shared.models import TenantType
from shared.platform_report import DashboardAnswer, DashboardQueryError, PageQuery, page_query, platform_report
from shared.security_headers import page_csp
from shared.tiers import UsageKind
from tenant_worker.api_support import LIST_COLUMNS, with_sla
from tenant_worker.inbound_http import ApiError, Call, Reply, Route, html_reply, json_reply
from tenant_worker.metrics_adapter import metrics_queries
from tenant_worker.principal import Principal, Role, require
from tenant_worker.supabase_access import guarded, tenant_db
from tenant_worker.usage_meter import meter_for

_STYLE_BLOCK = re.compile(r"<style>(.*?)</style>", re.S)

E = html.escape


def _month(now: float, back: int = 0) -> str:
    y, m = time.gmtime(now).tm_year, time.gmtime(now).tm_mon - back
    while m < 1:
        y, m = y - 1, m + 12
    return f"{y:04d}-{m:02d}"


async def _maybe(op: Awaitable[Any]) -> Any:
    """A part of the dashboard that may be missing (metrics, the meter): None instead of a failure."""
    try:
        return await op
    except (MetricsUnavailable, ApiError):
        return None
    except Exception:
        return None


# ---- data ------------------------------------------------------------------------------------------


async def admin_data(call: Call, principal: Principal) -> dict[str, Any]:
    db, tid, now = tenant_db(call, principal), call.tenant.tenant_id, call.services.clock()
    month = _month(now)

    async def metrics() -> dict[str, Any]:
        q = metrics_queries(call)
        summary = (await q.summary(window="24h", now=now, tenant_ids=[tid]))[tid].view()
        return {**summary, "series": await q.series(window="24h", now=now, tenant_id=tid)}

    async def usage() -> list[dict[str, Any]]:
        snap = await meter_for(call).snapshot()
        return [{"kind": i.kind.value, "used": i.used, "limit": i.limit} for i in snap.items]

    (tenant, domains, profiles, audit, tickets, uptime, alerts) = await asyncio.gather(
        guarded(
            db.select(
                "tenants",
                columns="tenant_id,name,domain,type,subscription_tier,status,whitelabel_config",
                eq={"tenant_id": tid},
                limit=1,
            )
        ),
        guarded(
            db.select(
                "tenant_domains",
                columns="domain,domain_type,ssl_status,dns_configured,verification_status",
                eq={"tenant_id": tid},
                order="domain.asc",
            )
        ),
        guarded(
            db.select(
                "profiles",
                columns="id,email,display_name,tenant_role,created_at",
                eq={"tenant_id": tid},
                order=["created_at.asc", "id.asc"],
                limit=100,
            )
        ),
        guarded(
            db.select(
                "audit_log",
                columns="actor,action,target,at",
                eq={"tenant_id": tid},
                order=["at.desc", "id.desc"],
                limit=20,
            )
        ),
        guarded(
            db.select(
                "support_tickets",
                columns=LIST_COLUMNS,
                eq={"tenant_id": tid},
                order=["created_at.desc", "id.desc"],
                limit=20,
            )
        ),
        guarded(db.rpc("tenant_uptime", {"from_period": month, "to_period": month, "only_tenant": tid})),
        guarded(
            db.select(
                "health_alerts",
                columns="id,opened_at,failures,detail",
                eq={"tenant_id": tid, "status": "open"},
                limit=5,
            )
        ),
    )
    if not tenant:
        raise ApiError(404, "not_found", "This tenant has no record yet.")
    row = tenant[0]
    brand = Brand.from_config(row.get("whitelabel_config"), row["name"])
    meter, traffic = await asyncio.gather(_maybe(usage()), _maybe(metrics()))
    usage_rows = meter or []
    for u in usage_rows:
        if u["kind"] == UsageKind.DOMAINS.value:
            u["used"] = len(domains)  # Supabase is the authority on domains
    roles: dict[str, int] = {}
    for p in profiles:
        roles[p["tenant_role"]] = roles.get(p["tenant_role"], 0) + 1
    tickets_view = [with_sla(t, now) for t in tickets]
    return {
        "tenant": {k: row[k] for k in ("tenant_id", "name", "domain", "type", "subscription_tier", "status")},
        "branding": brand.view(),
        "usage": usage_rows if meter is not None else None,
        "traffic": traffic,
        "domains": domains,
        "users": {"by_role": roles, "list": profiles},
        "files": None,  # no file storage yet (its usage kind, storage, is in `usage`)
        "audit": audit,
        "tickets": {
            "open": sum(1 for t in tickets_view if t["status"] != "closed"),
            "breached": sum(1 for t in tickets_view if t["sla"]["breached"] and t["status"] != "closed"),
            "recent": tickets_view,
        },
        "health": {"uptime": (uptime or [None])[0], "open_alerts": alerts},
    }


def platform_query(call: Call) -> PageQuery:
    """The page and sort asked for; anything else is a 400 `invalid_query`, as for every listing
    (a branded page off /api)."""
    try:
        return page_query(call.query)
    except DashboardQueryError as exc:
        raise ApiError(400, "invalid_query", str(exc)) from None


async def platform_data(call: Call, principal: Principal, q: PageQuery) -> dict[str, Any]:
    """One Supabase query (totals over every tenant, one sorted page of rows) and the metrics of
    that page's tenants: the same work for 10 tenants as for 1,000."""
    now = call.services.clock()
    raw = await guarded(
        tenant_db(call, principal).rpc(
            "platform_dashboard",
            {
                "p_this": _month(now),
                "p_last": _month(now, 1),
                "p_sort": q.sort,
                "p_limit": q.per_page,
                "p_offset": q.offset,
            },
        )
    )
    try:
        answer = DashboardAnswer.model_validate(raw)
    except ValidationError:
        raise ApiError(502, "upstream_error", "The data service returned an error.") from None
    ids = [r.tenant_id for r in answer.tenants]

    async def metrics() -> dict[str, Any]:
        summary = await metrics_queries(call).summary(window="24h", now=now, tenant_ids=ids)
        return {t: m.view() for t, m in summary.items()}

    views = await _maybe(metrics()) if ids else {}
    report = platform_report(answer, views or {}, q)
    report["metrics_available"] = views is not None
    report["period"] = _month(now)
    return report


def _admin(call: Call) -> Principal:
    return require(call, Role.ADMIN)


def _staff(call: Call) -> Principal:
    if call.tenant.tenant_type is not TenantType.PRIMARY:
        raise ApiError(404, "not_found", "There is nothing here.")
    return require(call, Role.SUPER_ADMIN)


async def admin_json(call: Call) -> Reply:
    return json_reply(await admin_data(call, _admin(call)), headers={"cache-control": "no-store"})


async def platform_json(call: Call) -> Reply:
    principal = _staff(call)
    return json_reply(await platform_data(call, principal, platform_query(call)), headers={"cache-control": "no-store"})


# ---- drawing ---------------------------------------------------------------------------------------


def svg_series(
    series: Sequence[dict[str, int]],
    *,
    width: int = 720,
    height: int = 180,
    color: str = "#1f2937",
    error_color: str = "#b91c1c",
) -> str:
    """Requests per step as bars, errors stacked in red; scales with its container."""
    n = max(len(series), 1)
    top = max([p["requests"] for p in series] + [1])
    bar = width / n
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height + 20}" role="img" aria-label="Requests and errors"'
        ' preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="0" y1="{height}" x2="{width}" y2="{height}" stroke="#9ca3af" stroke-width="1"/>',
    ]
    for i, p in enumerate(series):
        h = height * p["requests"] / top
        e = height * p["errors"] / top
        x = i * bar + 1
        label = time.strftime("%H:%M", time.gmtime(p["t"]))
        parts.append(
            f'<rect class="req" x="{x:.1f}" y="{height - h:.1f}" width="{max(bar - 2, 1):.1f}" height="{h:.1f}"'
            f' fill="{color}"><title>{E(label)}: {p["requests"]} requests, {p["errors"]} errors</title></rect>'
        )
        if p["errors"]:
            parts.append(
                f'<rect class="err" x="{x:.1f}" y="{height - e:.1f}" width="{max(bar - 2, 1):.1f}"'
                f' height="{e:.1f}" fill="{error_color}"/>'
            )
    parts.append(f'<text x="0" y="{height + 16}" font-size="12" fill="#6b7280">peak {top} requests per step</text>')
    parts.append("</svg>")
    return "".join(parts)


def _amount(kind: str, n: int) -> str:
    return f"{n / 1024**3:.2f} GiB" if kind == UsageKind.STORAGE.value else str(n)


def _bar(label: str, used: int | None, limit: int, color: str, kind: str = "") -> str:
    pct = 0 if not limit or used is None else min(100, round(100 * used / limit))
    shown = "unknown" if used is None else f"{_amount(kind, used)} of {_amount(kind, limit)}"
    return (
        f'<div class="usage"><div class="usage-label">{E(label)}: <strong>{E(shown)}</strong></div>'
        f'<div class="track" role="progressbar" aria-valuenow="{pct}" aria-valuemin="0" aria-valuemax="100">'
        # An SVG bar: its geometry and colour are attributes, so the page's CSP (styles by hash,
        # no inline style attributes) leaves it drawn.
        f'<svg class="fill" viewBox="0 0 100 1" preserveAspectRatio="none" aria-hidden="true">'
        f'<rect width="{pct}" height="1" fill="{color}"/></svg></div></div>'
    )


def _table(cols: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{E(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{E('' if v is None else str(v))}</td>" for v in r) + "</tr>" for r in rows)
    if not rows:
        body = f'<tr><td colspan="{len(cols)}">Nothing yet.</td></tr>'
    return (
        f'<div class="scroll"><table class="{E(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    )


def page(brand: Brand, title: str, body: str) -> str:
    primary, secondary = brand.primary_color, brand.secondary_color  # validated #rrggbb
    logo = (
        f'<img class="logo" src="{E(brand.logo_url, quote=True)}" alt="" width="32" height="32">'
        if brand.logo_url
        else ""
    )
    support = (
        f'<footer>Support: <a href="mailto:{E(brand.support_email, quote=True)}">{E(brand.support_email)}</a></footer>'
        if brand.support_email
        else ""
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{E(title)} · {E(brand.name)}</title><style>"
        "*{box-sizing:border-box}body{font-family:system-ui,sans-serif;margin:0;background:#f9fafb;color:#111827}"
        f"header{{background:{primary};color:#fff;padding:.8rem 1.2rem;display:flex;gap:.8rem;align-items:center}}"
        "header .brand{font-weight:600;font-size:1.1rem}header nav{margin-left:auto}header a{color:#fff}"
        "main{max-width:80rem;margin:0 auto;padding:1rem}h1{font-size:1.4rem}h2{font-size:1.1rem;margin:.2rem 0 .6rem}"
        ".cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(17rem,1fr));gap:1rem}"
        f".card{{background:#fff;border-radius:.5rem;padding:1rem;border-top:4px solid {secondary};min-width:0}}"
        ".wide{grid-column:1/-1}.scroll{overflow-x:auto;max-width:100%}table{border-collapse:collapse;width:100%;"
        "font-size:.9rem}th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #e5e7eb;white-space:nowrap}"
        ".usage{margin:.5rem 0}.track{background:#e5e7eb;border-radius:.3rem;height:.7rem;overflow:hidden}"
        ".fill{display:block;width:100%;height:100%}.chart{width:100%;height:auto;display:block}.figure{font-size:1.6rem;font-weight:600}"
        ".risk-high{color:#b91c1c;font-weight:600}.risk-medium{color:#b45309}.logo{border-radius:.3rem}"
        "footer{max-width:80rem;margin:0 auto;padding:1rem;color:#6b7280}"
        "</style></head><body>"
        f'<header>{logo}<span class="brand">{E(brand.name)}</span><nav><a href="/">Home</a></nav></header>'
        f"<main><h1>{E(title)}</h1>{body}</main>{support}</body></html>"
    )


def render_admin(data: dict[str, Any]) -> str:
    brand = Brand.from_config(data["branding"], data["tenant"]["name"])
    t, traffic = data["tenant"], data["traffic"]
    usage = data["usage"]
    usage_html = (
        "".join(_bar(u["kind"].replace("_", " "), u["used"], u["limit"], brand.primary_color, u["kind"]) for u in usage)
        if usage is not None
        else "<p>Usage is unavailable right now.</p>"
    )
    if traffic:
        traffic_html = (
            f'<p><span class="figure">{traffic["requests"]}</span> requests in 24 h · p50 '
            f"{E(str(traffic['p50_ms']))} ms · p95 {E(str(traffic['p95_ms']))} ms · error rate "
            f"{E(str(traffic['error_rate']))}</p>" + svg_series(traffic["series"], color=brand.primary_color)
        )
        errors_html = _table(
            ["where", "code", "count"], [(e["source"], e["code"], e["count"]) for e in traffic["errors"][:10]]
        )
    else:
        traffic_html, errors_html = "<p>Traffic figures are unavailable right now.</p>", ""
    health = data["health"]
    uptime = health["uptime"]
    uptime_text = f"{uptime['uptime_percent']}% this month ({uptime['checks']} checks)" if uptime else "no checks yet"
    tickets = data["tickets"]
    body = (
        f"<p>{E(t['name'])} · {E(t['domain'])} · <strong>{E(t['subscription_tier'])}</strong> plan · {E(t['status'])}</p>"
        '<div class="cards">'
        f'<section class="card" id="usage"><h2>Usage this month</h2>{usage_html}</section>'
        f'<section class="card" id="health"><h2>Health</h2><p>Uptime: {E(uptime_text)}</p>'
        f"<p>Open alerts: {len(health['open_alerts'])}</p></section>"
        f'<section class="card" id="tickets"><h2>Support tickets</h2><p>Open: {tickets["open"]} · SLA breached: '
        f"{tickets['breached']}</p>"
        + _table(
            ["subject", "status", "SLA"],
            [(x["subject"], x["status"], x["sla"]["state"]) for x in tickets["recent"][:5]],
        )
        + "</section>"
        f'<section class="card wide" id="traffic"><h2>Traffic and errors, last 24 hours</h2>{traffic_html}{errors_html}</section>'
        '<section class="card wide" id="domains"><h2>Domains</h2>'
        + _table(
            ["domain", "type", "ownership", "SSL", "DNS"],
            [
                (
                    d["domain"],
                    d["domain_type"],
                    d.get("verification_status"),
                    d["ssl_status"],
                    "configured" if d["dns_configured"] else "not configured",
                )
                for d in data["domains"]
            ],
        )
        + '</section><section class="card wide" id="users"><h2>Users and roles</h2>'
        + _table(
            ["email", "name", "role"],
            [(p["email"], p["display_name"], p["tenant_role"]) for p in data["users"]["list"]],
        )
        + '</section><section class="card wide" id="audit"><h2>Audit trail</h2>'
        + _table(
            ["when", "who", "what", "target"], [(a["at"], a["actor"], a["action"], a["target"]) for a in data["audit"]]
        )
        + '</section><section class="card" id="files"><h2>Files</h2><p>No file storage yet.</p></section></div>'
    )
    return page(brand, "Dashboard", body)


def _platform_link(data: dict[str, Any], *, page: int | None = None, sort: str | None = None) -> str:
    """A link to another page or sort of the platform page (values from SORTS and whole numbers only)."""
    return "/platform?" + urlencode({"page": page or 1, "sort": sort or data["sort"]})


def render_platform(data: dict[str, Any], brand: Brand) -> str:
    totals, adoption = data["totals"], data["adoption"]

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{round(100 * v)}%"

    def counts(by: dict[str, int]) -> str:
        return " · ".join(f"{E(k)} {n}" for k, n in sorted(by.items())) or "none"

    rows = []
    for x in data["tenants"]:
        risk = x["churn_risk"]
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{E('' if v is None else str(v))}</td>"
                for v in (
                    x["tenant_id"],
                    x["name"],
                    x["status"],
                    x["tier"],
                    x["monthly_price"],
                    x["customer_price"] or "",
                    x["uptime_percent"] if x["uptime_percent"] is not None else "",
                    x["open_alerts"],
                    x["open_tickets"],
                    x["sla_breaches"],
                    x["requests_24h"] if x["requests_24h"] is not None else "",
                )
            )
            + f'<td class="risk-{E(risk["level"])}">{E(risk["level"])}'
            + (f" ({E('; '.join(risk['reasons']))})" if risk["reasons"] else "")
            + "</td></tr>"
        )
    if not rows:
        rows.append('<tr><td colspan="12">No tenants on this page.</td></tr>')
    head = "".join(
        f"<th>{E(c)}</th>"
        for c in (
            "tenant",
            "name",
            "status",
            "tier",
            "price $/mo",
            "customer pays $/mo",
            "uptime %",
            "alerts",
            "tickets",
            "SLA breaches",
            "requests 24 h",
            "churn risk",
        )
    )
    sorts = " · ".join(
        f"<strong>{E(s)}</strong>"
        if s == data["sort"]
        else f'<a href="{E(_platform_link(data, sort=s), quote=True)}">{E(s)}</a>'
        for s in data["sorts"]
    )
    first = (data["page"] - 1) * data["per_page"] + 1
    shown = (
        f"{first}–{first + len(data['tenants']) - 1} of {data['total']}"
        if data["tenants"]
        else f"none of {data['total']}"
    )
    pager = (
        [
            f'<a rel="prev" href="{E(_platform_link(data, page=min(data["page"] - 1, data["pages"])), quote=True)}">'
            "previous</a>"
        ]
        if data["prev"]
        else []
    )
    pager.append(f"<span>page {data['page']} of {data['pages']}</span>")
    if data["next"]:
        pager.append(f'<a rel="next" href="{E(_platform_link(data, page=data["page"] + 1), quote=True)}">next</a>')
    body = (
        '<div class="cards">'
        f'<section class="card" id="mrr"><h2>Monthly recurring revenue</h2><p class="figure">${E(totals["mrr"])}</p>'
        f"<p>{totals['active_customers']} paying tenants · their customers pay ${E(totals['customer_mrr'])}</p></section>"
        f'<section class="card" id="counts"><h2>Tenants</h2><p class="figure">{totals["tenants"]}</p>'
        f"<p>By status: {counts(totals['by_status'])}</p><p>By tier: {counts(totals['by_tier'])}</p></section>"
        '<section class="card" id="adoption"><h2>Feature adoption</h2>'
        + "".join(
            f"<p>{E(k)}: <strong>{pct(v)}</strong></p>"
            for k, v in (
                ("AI", adoption["ai"]),
                ("custom domains", adoption["custom_domains"]),
                ("files", adoption["files"]),
            )
        )
        + "</section>"
        f'<section class="card" id="ops"><h2>Operations</h2><p>Open alerts: {totals["open_alerts"]}</p>'
        f"<p>Open tickets: {totals['open_tickets']} ({totals['tickets_this_month']} this month) · SLA breaches: "
        f"{totals['sla_breaches']}</p><p>Tenants at risk: {totals['at_risk']}</p></section>"
        f'<section class="card wide" id="tenants"><h2>Tenants {E(shown)}</h2><p class="sorts">Sorted by: {sorts}</p>'
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
        f'<nav class="pager" aria-label="pages">{" · ".join(pager)}</nav></section></div>'
    )
    return page(brand, "Platform", body)


def _page_reply(html: str, brand: Brand) -> Reply:
    """A dashboard page with the CSP that allows exactly its own <style> block (our output; every
    tenant-written value in it is escaped), no script, no inline style attributes, and images from
    the site and the brand's logo host only."""
    reply = html_reply(html)
    logo = logo_origin(brand.logo_url)
    reply.headers["content-security-policy"] = page_csp(
        *_STYLE_BLOCK.findall(html), img_origins=(logo,) if logo else ()
    )
    reply.headers["cache-control"] = "no-store"
    return reply


async def admin_page(call: Call) -> Reply:
    data = await admin_data(call, _admin(call))
    return _page_reply(render_admin(data), Brand.from_config(data["branding"], data["tenant"]["name"]))


async def platform_page(call: Call) -> Reply:
    principal = _staff(call)
    q = platform_query(call)
    data, rows = await asyncio.gather(
        platform_data(call, principal, q),
        guarded(
            tenant_db(call, principal).select(
                "tenants", columns="name,whitelabel_config", eq={"tenant_id": call.tenant.tenant_id}, limit=1
            )
        ),
    )
    brand = Brand.from_config(
        rows[0].get("whitelabel_config") if rows else None, rows[0]["name"] if rows else "Platform"
    )
    return _page_reply(render_platform(data, brand), brand)


ROUTES = [
    Route("GET", "/api/admin/dashboard", admin_json, "dashboard.admin"),
    Route("GET", "/admin", admin_page, "page.admin"),
    Route("GET", "/api/platform/dashboard", platform_json, "platform.dashboard"),
    Route("GET", "/platform", platform_page, "page.platform"),
]

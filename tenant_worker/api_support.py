"""The support desk. Every call runs as the signed-in user through RLS (20261126235519_operations.sql).

    POST  /api/support/tickets                   any member: open a ticket {subject, body, priority?}
    GET   /api/support/tickets                   a client: their own tickets; an admin: the tenant's
    GET   /api/support/tickets/<id>              the ticket and its messages (404 if not yours to see)
    POST  /api/support/tickets/<id>/messages     the opener or an admin: {body}
    PATCH /api/support/tickets/<id>              admin: {"status": "open" | "closed"}

    on the primary tenant, for its super_admin (platform staff):
    GET   /api/platform/tickets                  every tenant's tickets (?tenant_id, status, escalated, awaiting)
    GET   /api/platform/tickets/<id>             the ticket, its messages, and beside it the tenant's
                                                 metrics and recent errors (24 h), uptime and open alerts
    POST  /api/platform/tickets/<id>/messages    staff answer {body}
    POST  /api/platform/tickets/<id>/escalate    {"escalated": true | false}

Every ticket carries its first-response SLA (`sla`: due_at, first_response_at, state met /
pending / breached; the hours per tier are shared.support's). Each action writes an audit row of
the acting tenant (supabase_access.write_audit). A ticket another tenant holds, a colleague's
ticket (for a client) and a ticket that does not exist all answer the same 404.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import Field

from shared.ids import UUID_RE
from shared.metrics_query import MetricsUnavailable
from shared.models import TENANT_ID_RE, TenantType
from shared.support import PRIORITIES, sla_state
from tenant_worker.inbound_http import ApiError, Call, Reply, RequestBody, Route, json_reply
from tenant_worker.metrics_adapter import metrics_queries
from tenant_worker.principal import Principal, Role, require
from tenant_worker.request_body import read_body
from tenant_worker.supabase_access import guarded, tenant_db, write_audit

_UUID = UUID_RE  # shared.ids
TICKET_COLUMNS = (
    "id,tenant_id,opened_by,subject,body,priority,status,tier,first_response_due_at,"
    "first_response_at,escalated,escalated_at,created_at,updated_at"
)
LIST_COLUMNS = (
    "id,tenant_id,opened_by,subject,priority,status,tier,first_response_due_at,first_response_at,"
    "escalated,created_at,updated_at"
)
MESSAGE_COLUMNS = "id,author_id,author_role,body,created_at"
ALERT_COLUMNS = "id,status,opened_at,failures,detail"


class TicketCreate(RequestBody):
    subject: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=10000)
    priority: Literal["low", "normal", "high", "urgent"] = "normal"


class MessageCreate(RequestBody):
    body: str = Field(min_length=1, max_length=10000)


class TicketPatch(RequestBody):
    status: Literal["open", "closed"]


class Escalation(RequestBody):
    escalated: bool = True


def _ticket_id(call: Call) -> str:
    tid = call.params["id"].lower()
    if not _UUID.match(tid):
        raise ApiError(400, "invalid_id", "The ticket id must be a UUID.")
    return tid


def _when(value: Any) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def with_sla(row: dict[str, Any], now: float) -> dict[str, Any]:
    """The ticket as the API shows it: its first-response SLA spelled out."""
    due, first = _when(row.get("first_response_due_at")), _when(row.get("first_response_at"))
    state = sla_state(due, first, datetime.fromtimestamp(now, timezone.utc)) if due else "pending"
    return {
        **row,
        "sla": {
            "due_at": row.get("first_response_due_at"),
            "first_response_at": row.get("first_response_at"),
            "state": state,
            "breached": state == "breached",
        },
    }


def _status_filter(call: Call) -> dict[str, Any]:
    eq: dict[str, Any] = {}
    status = call.arg("status")
    if status is not None:
        if status not in ("open", "answered", "closed"):
            raise ApiError(400, "invalid_query", "status must be open, answered or closed.")
        eq["status"] = status
    return eq


async def _ticket(call: Call, principal: Principal, ticket: str, *, tenant_id: str | None) -> dict[str, Any]:
    """The ticket if the caller may see it (RLS), else 404; `tenant_id` None: any tenant (staff)."""
    eq: dict[str, Any] = {"id": ticket}
    if tenant_id is not None:
        eq["tenant_id"] = tenant_id
    rows = await guarded(tenant_db(call, principal).select("support_tickets", columns=TICKET_COLUMNS, eq=eq, limit=1))
    if not rows:
        raise ApiError(404, "not_found", "No such ticket.")
    return rows[0]


async def _messages(call: Call, principal: Principal, ticket: str) -> list[dict[str, Any]]:
    return await guarded(
        tenant_db(call, principal).select(
            "support_messages",
            columns=MESSAGE_COLUMNS,
            eq={"ticket_id": ticket},
            order=["created_at.asc", "id.asc"],
            limit=500,
        )
    )


async def _post_message(call: Call, principal: Principal, ticket: dict[str, Any]) -> dict[str, Any]:
    msg = await read_body(call, MessageCreate)
    rows = await guarded(
        tenant_db(call, principal).insert(
            "support_messages", {"ticket_id": ticket["id"], "body": msg.body}, columns=MESSAGE_COLUMNS
        )
    )
    if not rows:
        raise ApiError(404, "not_found", "No such ticket.")
    answered = rows[0]["author_role"] in ("admin", "staff") and principal.user_id != str(ticket["opened_by"])
    await guarded(
        write_audit(
            call,
            actor=principal.user_id,
            action="support.ticket_answered" if answered else "support.message_added",
            target=str(ticket["id"]),
            details={"ticket_tenant": ticket["tenant_id"]},
        )
    )
    return rows[0]


# ---- a tenant's own desk ------------------------------------------------------------------------


async def open_ticket(call: Call) -> Reply:
    principal = require(call)
    t = await read_body(call, TicketCreate)
    rows = await guarded(
        tenant_db(call, principal).insert(
            "support_tickets",
            {
                "tenant_id": call.tenant.tenant_id,
                "opened_by": principal.user_id,
                "subject": t.subject,
                "body": t.body,
                "priority": t.priority,
            },
            columns=TICKET_COLUMNS,
        )
    )
    if not rows:
        raise ApiError(403, "forbidden", "Not allowed.")
    ticket = rows[0]
    await guarded(
        write_audit(
            call,
            actor=principal.user_id,
            action="support.ticket_opened",
            target=str(ticket["id"]),
            details={"priority": t.priority},
        )
    )
    return json_reply({"ticket": with_sla(ticket, call.services.clock())}, 201)


async def list_tickets(call: Call) -> Reply:
    principal = require(call)
    limit, offset = call.page_args()
    rows = await guarded(
        tenant_db(call, principal).select(
            "support_tickets",
            columns=LIST_COLUMNS,
            eq={"tenant_id": call.tenant.tenant_id, **_status_filter(call)},
            order=["created_at.desc", "id.desc"],
            limit=limit,
            offset=offset,
        )
    )
    now = call.services.clock()
    return json_reply(
        {"tickets": [with_sla(r, now) for r in rows], "limit": limit, "offset": offset},
        headers={"cache-control": "no-store"},
    )


async def get_ticket(call: Call) -> Reply:
    principal = require(call)
    ticket = await _ticket(call, principal, _ticket_id(call), tenant_id=call.tenant.tenant_id)
    messages = await _messages(call, principal, ticket["id"])
    return json_reply(
        {"ticket": with_sla(ticket, call.services.clock()), "messages": messages}, headers={"cache-control": "no-store"}
    )


async def add_message(call: Call) -> Reply:
    principal = require(call)
    ticket = await _ticket(call, principal, _ticket_id(call), tenant_id=call.tenant.tenant_id)
    return json_reply({"message": await _post_message(call, principal, ticket)}, 201)


async def patch_ticket(call: Call) -> Reply:
    principal = require(call, Role.ADMIN)
    ticket_id = _ticket_id(call)
    patch = await read_body(call, TicketPatch)
    rows = await guarded(
        tenant_db(call, principal).update(
            "support_tickets",
            {"status": patch.status},
            eq={"id": ticket_id, "tenant_id": call.tenant.tenant_id},
            columns=TICKET_COLUMNS,
        )
    )
    if not rows:
        raise ApiError(404, "not_found", "No such ticket.")
    await guarded(
        write_audit(
            call,
            actor=principal.user_id,
            action="support.ticket_status",
            target=ticket_id,
            details={"status": patch.status},
        )
    )
    return json_reply({"ticket": with_sla(rows[0], call.services.clock())})


# ---- the platform's desk (staff) ------------------------------------------------------------------


def _staff(call: Call) -> Principal:
    if call.tenant.tenant_type is not TenantType.PRIMARY:
        raise ApiError(404, "not_found", "There is nothing here.")  # platform endpoints exist on the primary only
    return require(call, Role.SUPER_ADMIN)


async def platform_tickets(call: Call) -> Reply:
    principal = _staff(call)
    limit, offset = call.page_args(100, 500)
    eq = _status_filter(call)
    tenant = call.arg("tenant_id")
    if tenant is not None:
        if not TENANT_ID_RE.match(tenant):
            raise ApiError(400, "invalid_query", "tenant_id is not a tenant id.")
        eq["tenant_id"] = tenant
    escalated = call.arg("escalated")
    if escalated is not None:
        if escalated not in ("true", "false"):
            raise ApiError(400, "invalid_query", "escalated must be true or false.")
        eq["escalated"] = escalated == "true"
    awaiting = call.arg("awaiting")
    if awaiting is not None:
        if awaiting != "true":
            raise ApiError(400, "invalid_query", "awaiting=true lists tickets without a first response.")
        eq["first_response_at"] = None
    rows = await guarded(
        tenant_db(call, principal).select(
            "support_tickets",
            columns=LIST_COLUMNS,
            eq=eq,
            order=["created_at.desc", "id.desc"],
            limit=limit,
            offset=offset,
        )
    )
    now = call.services.clock()
    tickets = [with_sla(r, now) for r in rows]
    return json_reply(
        {
            "tickets": tickets,
            "limit": limit,
            "offset": offset,
            "breached": sum(1 for t in tickets if t["sla"]["breached"] and t["status"] != "closed"),
        },
        headers={"cache-control": "no-store"},
    )


async def _context(call: Call, principal: Principal, tenant_id: str) -> dict[str, Any]:
    """What staff see beside a ticket: the tenant's last 24 h (metrics, errors by code), uptime, open alerts."""
    db = tenant_db(call, principal)
    month = time.strftime("%Y-%m", time.gmtime(call.services.clock()))
    uptime = await guarded(
        db.rpc("tenant_uptime", {"from_period": month, "to_period": month, "only_tenant": tenant_id})
    )
    alerts = await guarded(
        db.select("health_alerts", columns=ALERT_COLUMNS, eq={"tenant_id": tenant_id, "status": "open"}, limit=5)
    )
    context: dict[str, Any] = {"tenant_id": tenant_id, "uptime": (uptime or [None])[0], "open_alerts": alerts}
    try:
        summary = (
            await metrics_queries(call).summary(window="24h", now=call.services.clock(), tenant_ids=[tenant_id])
        )[tenant_id].view()
        context["metrics"] = {k: v for k, v in summary.items() if k != "errors"}
        context["recent_errors"] = summary["errors"][:20]
    except (MetricsUnavailable, ApiError):
        context["metrics"], context["recent_errors"] = None, None  # the ticket still shows
    return context


async def platform_ticket(call: Call) -> Reply:
    principal = _staff(call)
    ticket = await _ticket(call, principal, _ticket_id(call), tenant_id=None)
    messages = await _messages(call, principal, ticket["id"])
    return json_reply(
        {
            "ticket": with_sla(ticket, call.services.clock()),
            "messages": messages,
            "context": await _context(call, principal, str(ticket["tenant_id"])),
        },
        headers={"cache-control": "no-store"},
    )


async def platform_message(call: Call) -> Reply:
    principal = _staff(call)
    ticket = await _ticket(call, principal, _ticket_id(call), tenant_id=None)
    return json_reply({"message": await _post_message(call, principal, ticket)}, 201)


async def escalate(call: Call) -> Reply:
    principal = _staff(call)
    ticket_id = _ticket_id(call)
    body = await read_body(call, Escalation)
    rows = await guarded(
        tenant_db(call, principal).update(
            "support_tickets", {"escalated": body.escalated}, eq={"id": ticket_id}, columns=TICKET_COLUMNS
        )
    )
    if not rows:
        raise ApiError(404, "not_found", "No such ticket.")
    await guarded(
        write_audit(
            call,
            actor=principal.user_id,
            action="support.ticket_escalated",
            target=ticket_id,
            details={"escalated": body.escalated, "ticket_tenant": rows[0]["tenant_id"]},
        )
    )
    return json_reply({"ticket": with_sla(rows[0], call.services.clock())})


ROUTES = [
    Route("POST", "/api/support/tickets", open_ticket, "support.open"),
    Route("GET", "/api/support/tickets", list_tickets, "support.list"),
    Route("GET", "/api/support/tickets/<id>", get_ticket, "support.get"),
    Route("PATCH", "/api/support/tickets/<id>", patch_ticket, "support.patch"),
    Route("POST", "/api/support/tickets/<id>/messages", add_message, "support.message"),
    Route("GET", "/api/platform/tickets", platform_tickets, "platform.tickets"),
    Route("GET", "/api/platform/tickets/<id>", platform_ticket, "platform.ticket"),
    Route("POST", "/api/platform/tickets/<id>/messages", platform_message, "platform.ticket_message"),
    Route("POST", "/api/platform/tickets/<id>/escalate", escalate, "platform.ticket_escalate"),
]

__all__ = ["PRIORITIES", "ROUTES", "with_sla"]

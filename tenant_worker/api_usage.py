"""Metered endpoints: AI generation and the tenant's usage.

    POST   /api/ai/generate          {"prompt", "max_tokens"?}   one AI call, signed-in user
    GET    /api/usage                                            every kind's standing

AI calls are reserved in the tenant's UsageMeter before they run and refunded if they fail,
so concurrent requests can never run past the limit. Past the limit: 429
`usage_limit_exceeded` with kind/limit/used/resets_at, and Retry-After when a reset comes.
Domains are a level whose one authority is Supabase (its triggers enforce the quota on every
path, the operator's CLI included; see api_domains): /api/usage counts the tenant's rows there.

A limit hit is audited (`usage.limit_exceeded`, outcome `denied`) at most once a minute per
tenant, kind and period in an isolate: a client retrying its 429 does not become a stream of
audit writes (the refusals themselves are in the logs).
"""
from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from shared.outbound_http import HttpError
from shared.supabase import SupabaseError
from shared.tiers import UsageKind
from shared.usage import UsageDecision
from tenant_worker.inbound_http import ApiError, Call, Reply, RequestBody, Route, json_reply
from tenant_worker.principal import Principal, require
from tenant_worker.supabase_access import tenant_db, write_audit
from tenant_worker.usage_meter import TenantMeter, meter_for

log = logging.getLogger("cmgsite.tenant.usage")

MAX_PROMPT_CHARS = 8000
LIMIT_AUDIT_EVERY_SECONDS = 60.0
_LIMIT_AUDITS_MAX = 1024
_limit_audited: dict[tuple[str, str, str], float] = {}


class GenerateRequest(RequestBody):
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    max_tokens: int = Field(default=256, ge=1, le=1024)


def _parse(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors()})
        raise ApiError(422, "invalid_request", f"Invalid field(s): {', '.join(fields)}.",
                       extra={"fields": fields}) from None


def limit_exceeded(d: UsageDecision, now: float) -> ApiError:
    """The 429 for a refused consume; Retry-After only when the period resets."""
    retry = d.retry_after_seconds(now)
    when = f" until {d.resets_at.strftime('%Y-%m-%d %H:%M UTC')}" if d.resets_at else ""
    return ApiError(
        429, "usage_limit_exceeded",
        f"Your plan's {d.kind.value.replace('_', ' ')} limit ({d.limit}) is used up{when}.",
        extra={"kind": d.kind.value, "limit": d.limit, "used": d.used,
               "resets_at": d.resets_at.isoformat().replace("+00:00", "Z") if d.resets_at else None},
        headers={"retry-after": str(retry)} if retry is not None else None,
    )


def usage_view(d: UsageDecision) -> dict[str, Any]:
    return {"kind": d.kind.value, "used": d.used, "limit": d.limit, "remaining": d.remaining,
            "period": d.period, "resets_at": d.resets_at.isoformat().replace("+00:00", "Z") if d.resets_at else None}


async def audit_limit_hit(call: Call, actor: str, d: UsageDecision) -> None:
    """One `usage.limit_exceeded` audit row (outcome denied), throttled per isolate; a failed
    write is logged, never turned into another error for the caller."""
    key = (call.tenant.tenant_id, d.kind.value, d.period)
    now = call.services.clock()
    last = _limit_audited.get(key)
    if last is not None and 0 <= now - last < LIMIT_AUDIT_EVERY_SECONDS:
        return
    if len(_limit_audited) >= _LIMIT_AUDITS_MAX:
        _limit_audited.clear()
    _limit_audited[key] = now
    try:
        await write_audit(call, actor=actor, action="usage.limit_exceeded", target=d.kind.value, outcome="denied",
                          details={"limit": d.limit, "used": d.used, "period": d.period})
    except (ApiError, SupabaseError, HttpError) as exc:
        log.error(json.dumps({"event": "audit_write_failed", "action": "usage.limit_exceeded",
                              "request_id": call.request_id, "reason": type(exc).__name__}))


async def _reserve(meter: TenantMeter, kind: UsageKind, request_id: str) -> UsageDecision:
    """One unit from the meter; if the meter cannot answer, the work does not run (fail closed)."""
    try:
        return await meter.consume(kind, 1)
    except Exception as exc:
        log.error(json.dumps({"event": "usage_meter_unavailable", "kind": kind.value, "request_id": request_id,
                              "reason": type(exc).__name__}))
        raise ApiError(503, "usage_unavailable", "Usage metering is unavailable. Please try again.",
                       headers={"retry-after": "5"}) from None


async def _refund(meter: TenantMeter, kind: UsageKind, period: str | None, request_id: str) -> None:
    try:
        await meter.release(kind, 1, period)
    except Exception as exc:  # the reservation stays counted; logged for reconciliation
        log.error(json.dumps({"event": "usage_refund_failed", "kind": kind.value, "request_id": request_id,
                              "reason": type(exc).__name__}))


# ---- AI ------------------------------------------------------------------------------------
async def generate(call: Call) -> Reply:
    principal = require(call)
    body = _parse(GenerateRequest, await call.json())
    meter = meter_for(call)
    reserved = await _reserve(meter, UsageKind.AI_CALLS, call.request_id)
    if not reserved.allowed:
        await audit_limit_hit(call, principal.user_id, reserved)
        raise limit_exceeded(reserved, call.services.clock())
    model = call.services.config.ai_model
    try:
        result = await call.env.AI.run(model, {"prompt": body.prompt, "max_tokens": body.max_tokens})
        text = result.get("response") if isinstance(result, dict) else None
        if not isinstance(text, str):
            raise ValueError("the model returned no text")
    except Exception as exc:  # a failed call is not the tenant's: give the reservation back
        await _refund(meter, UsageKind.AI_CALLS, reserved.period, call.request_id)
        log.warning(json.dumps({"event": "ai_failed", "request_id": call.request_id, "reason": type(exc).__name__}))
        raise ApiError(502, "ai_unavailable", "The AI model could not answer. This call was not counted.") from None
    return json_reply({"response": text, "model": model, "usage": usage_view(reserved)})


# ---- usage ---------------------------------------------------------------------------------
async def domain_count(call: Call, principal: Principal) -> int:
    """How many domains the tenant holds, as Supabase (the authority) has them, read with the
    user's tenant token (RLS shows this tenant's rows only)."""
    rows = await tenant_db(call, principal).select("tenant_domains", columns="domain",
                                                   eq={"tenant_id": call.tenant.tenant_id})
    return len(rows)


async def usage(call: Call) -> Reply:
    principal = require(call)
    snap = await meter_for(call).snapshot()
    items = {i.kind.value: {"used": i.used, "limit": i.limit, "remaining": i.remaining, "period": i.period,
                            "resets_at": i.resets_at.isoformat().replace("+00:00", "Z") if i.resets_at else None}
             for i in snap.items}
    domains = items[UsageKind.DOMAINS.value]
    try:
        used: int | None = await domain_count(call, principal)
    except (ApiError, SupabaseError, HttpError):
        used = None  # unknown right now: never a guess
    limit = snap.item(UsageKind.DOMAINS).limit
    domains.update(used=used, remaining=None if used is None else max(0, limit - used))
    return json_reply({"tenant_id": call.tenant.tenant_id, "tier": call.tenant.tier.value, "usage": items},
                      headers={"cache-control": "no-store"})


ROUTES = [
    Route("POST", "/api/ai/generate", generate, "ai_generate"),
    Route("GET", "/api/usage", usage, "usage"),
]

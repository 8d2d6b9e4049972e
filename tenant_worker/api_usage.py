"""Metered endpoints: AI generation, custom domains, and the tenant's usage.

    POST   /api/ai/generate          {"prompt", "max_tokens"?}   one AI call, signed-in user
    GET    /api/usage                                            every kind's standing
    POST   /api/domains              {"domain"}                  admin; one domain of the quota
    DELETE /api/domains/<domain>                                 admin; gives the slot back

Work is reserved in the tenant's UsageMeter before it runs and refunded if it fails, so
concurrent requests can never run past the limit. Past the limit: 429
`usage_limit_exceeded` with kind/limit/used/resets_at, and Retry-After when a reset comes.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.hosts import InvalidHost, normalize_host
from shared.http import HttpError
from shared.supabase import SupabaseError
from shared.tiers import UsageKind
from shared.usage import UsageDecision
from tenant_worker.http import ApiError, Call, Reply, Route, json_reply
from tenant_worker.principal import Role, require
from tenant_worker.supabase_access import tenant_db
from tenant_worker.usage_meter import TenantMeter, meter_for

log = logging.getLogger("cmgsite.tenant.usage")

DEFAULT_AI_MODEL = "@cf/meta/llama-3.1-8b-instruct"
MAX_PROMPT_CHARS = 8000
DEFAULT_PLATFORM_ZONE = "cozyartzmedia.com"


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    max_tokens: int = Field(default=256, ge=1, le=1024)


class DomainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    domain: str = Field(min_length=1, max_length=260)


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
    require(call)
    body = _parse(GenerateRequest, await call.json())
    meter = meter_for(call)
    reserved = await _reserve(meter, UsageKind.AI_CALLS, call.request_id)
    if not reserved.allowed:
        raise limit_exceeded(reserved, call.services.clock())
    model = str(getattr(call.env, "AI_MODEL", "") or DEFAULT_AI_MODEL)
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
async def usage(call: Call) -> Reply:
    principal = require(call)
    meter = meter_for(call)
    snap = await meter.snapshot()
    if UsageKind.DOMAINS not in snap.seeded:
        try:  # best effort: the domain level starts at what Supabase holds
            await _seed_domains(call, meter, tenant_db(call, principal))
            snap = await meter.snapshot()
        except (ApiError, SupabaseError, HttpError):
            pass
    items = {i.kind.value: {"used": i.used, "limit": i.limit, "remaining": i.remaining, "period": i.period,
                            "resets_at": i.resets_at.isoformat().replace("+00:00", "Z") if i.resets_at else None}
             for i in snap.items}
    return json_reply({"tenant_id": call.tenant.tenant_id, "tier": call.tenant.tier.value, "usage": items},
                      headers={"cache-control": "no-store"})


# ---- domains -------------------------------------------------------------------------------
def _domain(call: Call, raw: str) -> str:
    try:
        domain = normalize_host(raw)
    except InvalidHost as exc:
        raise ApiError(422, "invalid_domain", f"Not a domain name: {exc}.") from None
    if ":" in raw:
        raise ApiError(422, "invalid_domain", "Give the bare domain name, without a port.")
    labels = domain.split(".")
    if len(labels) < 2 or labels[-1].isdigit():
        raise ApiError(422, "invalid_domain", "Give a full domain name such as shop.example.com.")
    zone = str(getattr(call.env, "PRIMARY_ZONE", "") or DEFAULT_PLATFORM_ZONE)
    if domain == zone or domain.endswith("." + zone):
        raise ApiError(422, "invalid_domain", "Domains under the platform's own zone are assigned by the platform.")
    return domain


async def _seed_domains(call: Call, meter: TenantMeter, db: Any) -> None:
    """The first time, start the domain level at what Supabase holds (the tenant's own domain)."""
    snap = await meter.snapshot()
    if UsageKind.DOMAINS in snap.seeded:
        return
    rows = await db.select("tenant_domains", columns="domain", eq={"tenant_id": call.tenant.tenant_id})
    await meter.seed_level(UsageKind.DOMAINS, len(rows))


def _supabase_failure(exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, SupabaseError):
        if exc.code == "23505":
            return ApiError(409, "domain_taken", "That domain is already registered.")
        if exc.code == "42501" or exc.status == 403:
            return ApiError(403, "forbidden", "Not allowed.")
        log.warning(json.dumps({"event": "supabase_error", "status": exc.status, "code": exc.code}))
        return ApiError(502, "upstream_error", "The data service returned an error.")
    return ApiError(503, "data_unavailable", "The data service is unavailable. Please try again.")


async def add_domain(call: Call) -> Reply:
    principal = require(call, Role.ADMIN)
    domain = _domain(call, _parse(DomainRequest, await call.json()).domain)
    meter = meter_for(call)
    try:
        db = tenant_db(call, principal)
        await _seed_domains(call, meter, db)
    except (ApiError, SupabaseError, HttpError) as exc:
        raise _supabase_failure(exc) from None
    reserved = await _reserve(meter, UsageKind.DOMAINS, call.request_id)
    if not reserved.allowed:
        raise limit_exceeded(reserved, call.services.clock())
    try:
        rows = await db.insert("tenant_domains", {"tenant_id": call.tenant.tenant_id, "domain": domain,
                                                  "domain_type": "custom"}, columns="domain,domain_type,ssl_status")
        if not rows:
            raise ApiError(403, "forbidden", "Not allowed.")
    except (ApiError, SupabaseError, HttpError) as exc:
        await _refund(meter, UsageKind.DOMAINS, None, call.request_id)
        raise _supabase_failure(exc) from None
    row = rows[0]
    return json_reply({"domain": row["domain"], "domain_type": row["domain_type"], "ssl_status": row["ssl_status"],
                       "usage": usage_view(reserved)}, status=201)


async def remove_domain(call: Call) -> Reply:
    principal = require(call, Role.ADMIN)
    domain = _domain(call, call.params["domain"])
    meter = meter_for(call)
    try:
        db = tenant_db(call, principal)
        await _seed_domains(call, meter, db)
        rows = await db.delete("tenant_domains", eq={"tenant_id": call.tenant.tenant_id, "domain": domain},
                               columns="domain")
    except (ApiError, SupabaseError, HttpError) as exc:
        raise _supabase_failure(exc) from None
    if not rows:  # not this tenant's, not custom (RLS), or not there: the same answer
        raise ApiError(404, "not_found", "No custom domain of this site has that name.")
    released = await meter.release(UsageKind.DOMAINS, len(rows))
    return json_reply({"deleted": domain, "usage": usage_view(released)})


ROUTES = [
    Route("POST", "/api/ai/generate", generate, "ai_generate"),
    Route("GET", "/api/usage", usage, "usage"),
    Route("POST", "/api/domains", add_domain, "domain_add"),
    Route("DELETE", "/api/domains/<domain>", remove_domain, "domain_remove"),
]

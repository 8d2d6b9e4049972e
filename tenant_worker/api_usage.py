"""Metered endpoints: AI generation and the tenant's usage.

    POST   /api/ai/generate          {"prompt", "max_tokens"?}   one AI call, signed-in user
    GET    /api/usage                                            every kind's standing

AI calls are reserved in the tenant's UsageMeter before they run and refunded if they fail
(tenant_worker.metering.reserve: one meter call to reserve, at most one to refund), so
concurrent requests can never run past the limit. Past the limit: 429
`usage_limit_exceeded` with kind/limit/used/resets_at, and Retry-After when a reset comes.
Domains are a level whose one authority is Supabase (its triggers enforce the quota on every
path, the operator's CLI included; see api_domains): /api/usage counts the tenant's rows there.

A limit hit is audited (`usage.limit_exceeded`, outcome `denied`) at most once a minute per
tenant, kind and period in an isolate (tenant_worker.metering.audit_limit_hit): a client
retrying its 429 does not become a stream of audit writes (the refusals are in the logs).
"""

from __future__ import annotations

import json
import logging

from pydantic import Field

from shared.outbound_http import HttpError
from shared.supabase import SupabaseError
from shared.tiers import UsageKind
from tenant_worker.inbound_http import ApiError, Call, Reply, RequestBody, Route, json_reply
from tenant_worker.metering import meter_of, reserve, usage_view
from tenant_worker.principal import Principal, require
from tenant_worker.request_body import read_body
from tenant_worker.supabase_access import tenant_db

log = logging.getLogger("cmgsite.tenant.usage")

MAX_PROMPT_CHARS = 8000


class GenerateRequest(RequestBody):
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    max_tokens: int = Field(default=256, ge=1, le=1024)


# ---- AI ------------------------------------------------------------------------------------
async def generate(call: Call) -> Reply:
    principal = require(call)
    body = await read_body(call, GenerateRequest)
    model = call.services.config.ai_model
    async with reserve(call, meter_of(call), UsageKind.AI_CALLS, 1, actor=principal.user_id) as r:
        try:
            result = await call.env.AI.run(model, {"prompt": body.prompt, "max_tokens": body.max_tokens})
            text = result.get("response") if isinstance(result, dict) else None
            if not isinstance(text, str):
                raise ValueError("the model returned no text")
        except Exception as exc:  # a failed call is not the tenant's: the reservation goes back
            log.warning(json.dumps({"event": "ai_failed", "request_id": call.request_id, "reason": type(exc).__name__}))
            raise ApiError(502, "ai_unavailable", "The AI model could not answer. This call was not counted.") from None
        r.commit()
    assert r.decision is not None
    return json_reply({"response": text, "model": model, "usage": usage_view(r.decision)})


# ---- usage ---------------------------------------------------------------------------------
async def domain_count(call: Call, principal: Principal) -> int:
    """How many domains the tenant holds, as Supabase (the authority) has them, read with the
    user's tenant token (RLS shows this tenant's rows only)."""
    rows = await tenant_db(call, principal).select(
        "tenant_domains", columns="domain", eq={"tenant_id": call.tenant.tenant_id}
    )
    return len(rows)


async def usage(call: Call) -> Reply:
    principal = require(call)
    snap = await meter_of(call).snapshot()
    items = {
        i.kind.value: {
            "used": i.used,
            "limit": i.limit,
            "remaining": i.remaining,
            "period": i.period,
            "resets_at": i.resets_at.isoformat().replace("+00:00", "Z") if i.resets_at else None,
        }
        for i in snap.items
    }
    domains = items[UsageKind.DOMAINS.value]
    try:
        used: int | None = await domain_count(call, principal)
    except (ApiError, SupabaseError, HttpError):
        used = None  # unknown right now: never a guess
    limit = snap.item(UsageKind.DOMAINS).limit
    domains.update(used=used, remaining=None if used is None else max(0, limit - used))
    return json_reply(
        {"tenant_id": call.tenant.tenant_id, "tier": call.tenant.tier.value, "usage": items},
        headers={"cache-control": "no-store"},
    )


ROUTES = [
    Route("POST", "/api/ai/generate", generate, "ai_generate"),
    Route("GET", "/api/usage", usage, "usage"),
]

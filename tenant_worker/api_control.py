"""The operator's control endpoints on a tenant's own Worker: its UsageMeter for backup/restore.

    GET  /api/control/usage-meter   Authorization: Bearer <meter.read token>     -> the meter's snapshot
    POST /api/control/usage-meter   Authorization: Bearer <meter.restore token>  {"levels": {"storage": n}}
                                                                                 -> the snapshot after

Only `scripts/tenants.py backup|restore` calls them, through the dispatcher like any request,
with a token derived from the dispatcher's master secret for this tenant and operation
(shared.control_token). Anything else gets one 403, whatever was wrong with it. The meter is
this Worker's own (keyed by the verified tenant context), so no other tenant's is reachable.

Counters (ai_calls) need no restore here: the CLI writes them into Supabase's history
(`record_usage`, which never lowers a count) and a meter counts on from the history. Levels
(storage) live only in the meter: a restore seeds them, and `seed_level` keeps a value the
meter already holds, so a repeated restore changes nothing.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from pydantic import Field

from shared.control_token import ControlTokenError, verify
from shared.tiers import UsageKind
from shared.usage import MAX_AMOUNT
from tenant_worker.inbound_http import ApiError, Call, Reply, RequestBody, Route, json_reply
from tenant_worker.request_body import read_body
from tenant_worker.usage_meter import meter_for

log = logging.getLogger("cmgsite.tenant.control")

Level = Annotated[int, Field(ge=0, le=MAX_AMOUNT)]


class Levels(RequestBody):
    """The levels the meter alone holds (domains are counted from Supabase's rows)."""

    storage: Level = 0


class MeterRestore(RequestBody):
    levels: Levels = Field(default_factory=Levels)


def _authorize(call: Call, op: str) -> None:
    header = call.headers.get("authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else None
    now = call.services.clock()
    try:
        # Signed with the active key of the operator's CONTEXT_SIGNING_SECRET (derived for this
        # tenant); during a rotation either of the tenant's accepted keys verifies it.
        keys = [k.secret for k in call.services.config.context_key.accepted(now)]
        for i, key in enumerate(keys):
            try:
                verify(token, key=key, tenant_id=call.tenant.tenant_id, op=op, now=now)
                break
            except ControlTokenError:
                if i == len(keys) - 1:
                    raise
        else:
            raise ControlTokenError("no accepted context key")
    except ControlTokenError as exc:
        log.warning(
            json.dumps({"event": "control_refused", "op": op, "reason": str(exc), "request_id": call.request_id})
        )
        raise ApiError(403, "forbidden", "Not allowed.") from None


async def _snapshot(call: Call) -> dict[str, Any]:
    try:
        snap = await meter_for(call).snapshot()
    except Exception as exc:  # the meter could not answer: the operator re-runs
        log.error(
            json.dumps(
                {"event": "control_meter_unavailable", "reason": type(exc).__name__, "request_id": call.request_id}
            )
        )
        raise ApiError(
            503, "usage_unavailable", "The usage meter is unavailable. Please try again.", headers={"retry-after": "5"}
        ) from None
    return snap.model_dump(mode="json")


async def read_meter(call: Call) -> Reply:
    _authorize(call, "meter.read")
    return json_reply({"meter": await _snapshot(call)}, headers={"cache-control": "no-store"})


async def restore_meter(call: Call) -> Reply:
    _authorize(call, "meter.restore")
    body = await read_body(call, MeterRestore)
    meter = meter_for(call)
    seeded: dict[str, int] = {}
    if body.levels.storage > 0:
        try:
            await meter.seed_level(UsageKind.STORAGE, body.levels.storage)
        except Exception as exc:
            log.error(
                json.dumps(
                    {"event": "control_meter_unavailable", "reason": type(exc).__name__, "request_id": call.request_id}
                )
            )
            raise ApiError(
                503,
                "usage_unavailable",
                "The usage meter is unavailable. Please try again.",
                headers={"retry-after": "5"},
            ) from None
        seeded[UsageKind.STORAGE.value] = body.levels.storage
    return json_reply({"seeded": seeded, "meter": await _snapshot(call)}, headers={"cache-control": "no-store"})


ROUTES = [
    Route("GET", "/api/control/usage-meter", read_meter, "control.meter_read"),
    Route("POST", "/api/control/usage-meter", restore_meter, "control.meter_restore"),
]

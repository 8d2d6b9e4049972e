"""Metered work from the handler's side: one reservation construct for every metered path.

    async with reserve(call, meter, UsageKind.AI_CALLS, 1, actor=principal.user_id) as r:
        result = await run_the_work()      # raises: the units go back
        r.commit()                         # kept; without commit() they go back too

- Entering is one call to the tenant's UsageMeter (`consume`): the units are counted before the
  work runs, so concurrent requests can never run past the limit. The meter cannot answer:
  503 `usage_unavailable` (fail closed, the work does not run). Past the limit: the hit is
  audited (`usage.limit_exceeded`, outcome `denied`, throttled per isolate) and 429
  `usage_limit_exceeded` is raised, with Retry-After when the period resets.
- Leaving is at most one more call (`release`, into the period the units were counted in):
  the whole amount when the block raised or did not commit, the rest when it kept less
  (`r.commit(kept)`, e.g. an upload that stored fewer bytes than it declared). A failed
  refund is logged, never raised: the units stay counted (the files' reconcile repairs a
  level; a counter errs on the tenant's side of nobody).

Plain Python (no `workers`/`js`): the meter is a small protocol, so this runs on CPython with
a fake (tests/test_files_units.py, tests/test_usage_core.py) and on workerd with the real
Durable Object (tenant_worker.usage_meter.TenantMeter).
"""

from __future__ import annotations

import json
import logging
from types import TracebackType
from typing import Any, Protocol

from shared.tiers import UsageKind
from shared.usage import UsageDecision, UsageSnapshot
from tenant_worker.inbound_http import ApiError, Call
from tenant_worker.supabase_access import record_audit

log = logging.getLogger("cmgsite.tenant.metering")

LIMIT_AUDIT_EVERY_SECONDS = 60.0
_LIMIT_AUDITS_MAX = 1024
_limit_audited: dict[tuple[str, str, str], float] = {}


class Meter(Protocol):
    """What handlers need of the tenant's UsageMeter (tenant_worker.usage_meter.TenantMeter)."""

    async def consume(self, kind: UsageKind, amount: int = 1) -> UsageDecision: ...

    async def release(self, kind: UsageKind, amount: int = 1, period: str | None = None) -> UsageDecision: ...

    async def snapshot(self) -> UsageSnapshot: ...


def meter_of(call: Call) -> Meter:
    """The meter of the tenant this request was verified for (the Durable Object on workerd)."""
    from tenant_worker.usage_meter import meter_for  # imports `workers`: only inside the Worker

    return meter_for(call)


def meter_unavailable(call: Call, kind: UsageKind, exc: BaseException) -> ApiError:
    log.error(
        json.dumps(
            {
                "event": "usage_meter_unavailable",
                "kind": kind.value,
                "request_id": call.request_id,
                "reason": type(exc).__name__,
            }
        )
    )
    return ApiError(
        503, "usage_unavailable", "Usage metering is unavailable. Please try again.", headers={"retry-after": "5"}
    )


def limit_exceeded(d: UsageDecision, now: float) -> ApiError:
    """The 429 for a refused consume; Retry-After only when the period resets."""
    retry = d.retry_after_seconds(now)
    when = f" until {d.resets_at.strftime('%Y-%m-%d %H:%M UTC')}" if d.resets_at else ""
    return ApiError(
        429,
        "usage_limit_exceeded",
        f"Your plan's {d.kind.value.replace('_', ' ')} limit ({d.limit}) is used up{when}.",
        extra={
            "kind": d.kind.value,
            "limit": d.limit,
            "used": d.used,
            "resets_at": d.resets_at.isoformat().replace("+00:00", "Z") if d.resets_at else None,
        },
        headers={"retry-after": str(retry)} if retry is not None else None,
    )


def usage_view(d: UsageDecision) -> dict[str, Any]:
    return {
        "kind": d.kind.value,
        "used": d.used,
        "limit": d.limit,
        "remaining": d.remaining,
        "period": d.period,
        "resets_at": d.resets_at.isoformat().replace("+00:00", "Z") if d.resets_at else None,
    }


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
    await record_audit(
        call,
        actor=actor,
        action="usage.limit_exceeded",
        target=d.kind.value,
        outcome="denied",
        details={"limit": d.limit, "used": d.used, "period": d.period},
    )


async def give_back(
    call: Call, meter: Meter, kind: UsageKind, amount: int, period: str | None = None
) -> UsageDecision | None:
    """Release `amount` units (one meter call); a failure is logged, never raised. None if nothing
    was given back."""
    if amount <= 0:
        return None
    try:
        return await meter.release(kind, amount, period)
    except Exception as exc:  # the units stay counted; logged for reconciliation
        log.error(
            json.dumps(
                {
                    "event": "usage_refund_failed",
                    "kind": kind.value,
                    "amount": amount,
                    "request_id": call.request_id,
                    "reason": type(exc).__name__,
                }
            )
        )
        return None


class Reservation:
    """`amount` units of `kind` held for one piece of work (see the module docstring)."""

    def __init__(self, call: Call, meter: Meter, kind: UsageKind, amount: int, actor: str) -> None:
        if amount < 0:
            raise ValueError("a reservation cannot be negative")
        self._call, self._meter, self.kind, self.amount, self._actor = call, meter, kind, amount, actor
        self.decision: UsageDecision | None = None  # None: nothing was reserved (amount 0)
        self.kept: int | None = None

    def commit(self, kept: int | None = None) -> None:
        """Keep the units (or only `kept` of them); the rest go back when the block ends."""
        self.kept = self.amount if kept is None else max(0, min(kept, self.amount))

    async def __aenter__(self) -> "Reservation":
        if self.amount == 0:
            return self
        try:
            d = await self._meter.consume(self.kind, self.amount)
        except Exception as exc:
            raise meter_unavailable(self._call, self.kind, exc) from None
        if not d.allowed:
            await audit_limit_hit(self._call, self._actor, d)
            raise limit_exceeded(d, self._call.services.clock())
        self.decision = d
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.decision is None:
            return
        kept = 0 if exc is not None or self.kept is None else self.kept
        await give_back(self._call, self._meter, self.kind, self.amount - kept, self.decision.period)


def reserve(call: Call, meter: Meter, kind: UsageKind, amount: int = 1, *, actor: str) -> Reservation:
    """`async with reserve(...) as r:` (see the module docstring)."""
    return Reservation(call, meter, kind, amount, actor)

"""Usage metering, the pure core: periods, limits and the decisions the meter hands out.

Three kinds (shared.tiers.UsageKind), two shapes:
- `ai_calls` is a counter per calendar month (UTC); it resets at the first instant of the
  next month, which a decision reports as `resets_at`.
- `domains` and `storage` are levels (how many domains the tenant has, bytes it holds):
  raised by consume, lowered by release, never reset.

Limits come from the tier table alone (`plan_for(tier).limit_for(kind)`), read at each
decision, so a tier change takes effect on the next consume. No I/O here: the Durable
Object (tenant_worker.usage_meter) stores the numbers and asks this module what they mean.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shared.models import TENANT_ID_PATTERN
from shared.tiers import Tier, UsageKind, plan_for

COUNTER_KINDS = frozenset({UsageKind.AI_CALLS})
LEVEL_KINDS = frozenset({UsageKind.DOMAINS, UsageKind.STORAGE})
LEVEL_PERIOD = "level"  # the period key of a level's one row: levels do not reset
PERIOD_RE = re.compile(r"^[0-9]{4}-(0[1-9]|1[0-2])$")  # tenant_usage.period
MAX_AMOUNT = 1 << 50  # far above any limit (100 GiB is 2**36.6) and exact in a JS number


class UsageError(ValueError):
    """A metering request that makes no sense (unknown kind or tier, bad amount)."""


def parse_kind(kind: Any) -> UsageKind:
    try:
        return UsageKind(kind)
    except ValueError:
        raise UsageError(f"unknown usage kind {kind!r}") from None


def parse_tier(tier: Any) -> Tier:
    try:
        return Tier(tier)
    except ValueError:
        raise UsageError(f"unknown tier {tier!r}") from None


def parse_amount(amount: Any) -> int:
    # bool is an int in Python; a JS number may arrive as an integral float over RPC.
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise UsageError("amount must be a whole number")
    if isinstance(amount, float) and (not math.isfinite(amount) or not amount.is_integer()):
        raise UsageError("amount must be a whole number")
    value = int(amount)
    if not 0 < value <= MAX_AMOUNT:
        raise UsageError(f"amount must be within 1..{MAX_AMOUNT}")
    return value


def is_level(kind: UsageKind) -> bool:
    return kind in LEVEL_KINDS


def month_of(now: float) -> str:
    """The calendar month (UTC) of a unix time, as tenant_usage.period spells it: 'YYYY-MM'."""
    return datetime.fromtimestamp(now, tz=timezone.utc).strftime("%Y-%m")


def next_month_start(now: float) -> datetime:
    """The first instant (UTC) of the month after the one `now` falls in."""
    t = datetime.fromtimestamp(now, tz=timezone.utc)
    year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    return datetime(year, month, 1, tzinfo=timezone.utc)


def period_of(kind: UsageKind, now: float) -> str:
    """The storage key of the counter `kind` counts into at `now`."""
    return LEVEL_PERIOD if is_level(kind) else month_of(now)


def resets_at(kind: UsageKind, now: float) -> datetime | None:
    return None if is_level(kind) else next_month_start(now)


# Read from the tier table once per (tier, kind): consume is the meter's hot path.
_LIMITS = {(t, k): plan_for(t).limit_for(k) for t in Tier for k in UsageKind}


def limit_of(tier: Tier, kind: UsageKind) -> int:
    return _LIMITS[(tier, kind)]


class UsageDecision(BaseModel):
    """The answer to one consume: whether the work may go ahead, and where the tenant stands."""

    model_config = ConfigDict(frozen=True)

    allowed: bool
    kind: UsageKind
    used: int = Field(ge=0)
    limit: int = Field(ge=0)
    remaining: int = Field(ge=0)
    period: str
    resets_at: datetime | None = None

    def retry_after_seconds(self, now: float) -> int | None:
        """Seconds until the period resets (Retry-After), or None for a level."""
        if self.resets_at is None:
            return None
        return max(1, int(self.resets_at.timestamp() - now + 0.999))

    def to_rpc(self) -> dict[str, Any]:
        """Plain JSON values: what crosses the Durable Object RPC boundary (as model_dump(mode="json"))."""
        return {
            "allowed": self.allowed,
            "kind": self.kind.value,
            "used": self.used,
            "limit": self.limit,
            "remaining": self.remaining,
            "period": self.period,
            "resets_at": None if self.resets_at is None else self.resets_at.isoformat().replace("+00:00", "Z"),
        }


class UsageItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: UsageKind
    used: int = Field(ge=0)
    limit: int = Field(ge=0)
    remaining: int = Field(ge=0)
    period: str
    resets_at: datetime | None = None


class UsageSnapshot(BaseModel):
    """Every kind's standing for one tenant at one instant (GET /api/usage, snapshot())."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str = Field(pattern=TENANT_ID_PATTERN)
    tier: Tier
    at: datetime
    items: list[UsageItem]
    # Levels the meter has been told the starting point of (domains seeded from Supabase).
    seeded: list[UsageKind] = Field(default_factory=list)

    def item(self, kind: UsageKind | str) -> UsageItem:
        wanted = UsageKind(kind)
        return next(i for i in self.items if i.kind == wanted)

    def to_rpc(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def decision(kind: UsageKind, tier: Tier, used: int, now: float, *, allowed: bool) -> UsageDecision:
    """A decision from values the meter computed itself (typed already, so not re-validated)."""
    if used < 0:
        raise UsageError("a counter below zero")
    limit = limit_of(tier, kind)
    return UsageDecision.model_construct(
        allowed=allowed,
        kind=kind,
        used=used,
        limit=limit,
        remaining=max(0, limit - used),
        period=period_of(kind, now),
        resets_at=resets_at(kind, now),
    )


def snapshot(
    tenant_id: str, tier: Tier, used: Mapping[UsageKind, int], now: float, seeded: list[UsageKind] | None = None
) -> UsageSnapshot:
    """A snapshot from the current value of each kind (missing kinds stand at 0)."""
    items = []
    for kind in UsageKind:
        d = decision(kind, tier, used.get(kind, 0), now, allowed=True)
        items.append(
            UsageItem(
                kind=kind, used=d.used, limit=d.limit, remaining=d.remaining, period=d.period, resets_at=d.resets_at
            )
        )
    return UsageSnapshot(
        tenant_id=tenant_id,
        tier=tier,
        at=datetime.fromtimestamp(now, tz=timezone.utc),
        items=items,
        seeded=sorted(seeded or [], key=lambda k: k.value),
    )


class UsageRow(BaseModel):
    """One row of Supabase `tenant_usage` as the flush sends it (an absolute value).

    `public.record_usage()` stores a counter as the greater of this and what is recorded,
    and a level as sent."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str = Field(pattern=TENANT_ID_PATTERN)
    usage_type: UsageKind
    period: str = Field(pattern=PERIOD_RE.pattern)
    usage_count: int = Field(ge=0)
    usage_limit: int | None = Field(default=None, ge=0)


class RecordedUsage(BaseModel):
    """What Supabase `tenant_usage` already holds for one tenant/kind/period (the meter's history)."""

    model_config = ConfigDict(frozen=True)

    usage_count: int = Field(ge=0)


_RECORDED_ROWS = TypeAdapter(list[RecordedUsage])


def recorded_count(rows: Any) -> int | None:
    """The recorded count from a `tenant_usage` read keyed by tenant/kind/period, or None if no row.

    The key is unique, so more than one row means the read was not the one asked for: refused.
    """
    try:
        parsed = _RECORDED_ROWS.validate_python(rows)
    except ValidationError:
        raise UsageError("tenant_usage answered with rows of an unexpected shape") from None
    if len(parsed) > 1:
        raise UsageError("tenant_usage answered with more than one row for one tenant/kind/period")
    return parsed[0].usage_count if parsed else None


def flush_row(tenant_id: str, tier: Tier, kind: UsageKind, period: str, used: int, now: float) -> UsageRow:
    """The tenant_usage row for a stored counter: a level is written under the current month."""
    target = month_of(now) if period == LEVEL_PERIOD else period
    return UsageRow(
        tenant_id=tenant_id, usage_type=kind, period=target, usage_count=used, usage_limit=limit_of(tier, kind)
    )


def flush_backoff_ms(attempt: int, *, base_ms: int, cap_ms: int) -> int:
    """Delay before flush retry `attempt` (1, 2, …): doubling from base_ms, capped."""
    return int(min(cap_ms, base_ms * (2 ** min(max(attempt - 1, 0), 30))))

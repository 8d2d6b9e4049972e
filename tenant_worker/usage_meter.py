"""UsageMeter: one Durable Object per tenant holding its usage counters (SQLite-backed).

RPC methods (positional arguments, plain JSON results; the caller passes the tenant and
tier from the verified tenant context, so a tier change counts from the next consume):

    consume(kind, amount, tenant_id, tier)           -> UsageDecision as a dict
    release(kind, amount, tenant_id, tier[, period]) -> UsageDecision (refund / lower a level)
    seed_level(kind, value, tenant_id, tier)         -> UsageSnapshot (a level's starting point, once)
    snapshot(tenant_id, tier)                        -> UsageSnapshot as a dict

Checking and counting is one SQL statement with no await around it: a Durable Object runs
one piece of JavaScript/Python at a time, so no concurrent request can slip between the
check and the write.

History first: a counter (ai_calls) starts from what Supabase `tenant_usage` already
records for the tenant/kind/period, never from zero. The first time a counter row is used in
a period, the meter reads that row with the service role and adds it once. A per-row
`history_loaded` flag makes this happen once. A Durable Object lets other events in while a
fetch is outstanding, so concurrent first consumes may each read, but only the first
answer to arrive is applied. Every consume waits for the history before its
check-and-count. If the history cannot be read, the consume raises (fails closed: the
caller answers 503 `usage_unavailable` and does no work). A brand-new or reset object
therefore cannot hand a tenant its quota again.

After a change an alarm flushes dirty counters to Supabase through
`public.record_usage()` (supabase/migrations/20261126230329_usage_history.sql). It sends absolute
values keyed by tenant/kind/period (never an add), so a repeated flush writes the same
numbers again. The database keeps the greater of the recorded and the sent count for
counters and stores levels as sent. A flush can therefore never lower billing history, and a
refund that arrives after its unit was flushed stays recorded while the live quota here
gives it back. A failed flush keeps the counters dirty and re-arms the alarm with backoff.

Handlers reach the object through `meter_for(call)`, keyed by the verified tenant context.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable

from workers import DurableObject

from shared.config import ConfigError
from shared.models import TENANT_ID_RE
from shared.outbound_http import HttpClient, HttpError
from shared.supabase import SupabaseClient, SupabaseError
from shared.tiers import Tier, UsageKind
from shared.usage import (
    COUNTER_KINDS,
    LEVEL_PERIOD,
    PERIOD_RE,
    UsageDecision,
    UsageError,
    UsageSnapshot,
    decision,
    flush_backoff_ms,
    flush_row,
    is_level,
    limit_of,
    month_of,
    parse_amount,
    parse_kind,
    parse_tier,
    period_of,
    recorded_count,
    snapshot,
)
from tenant_worker.config import FlushTiming, TenantConfig, config_for

log = logging.getLogger("cmgsite.usage")

FLUSH_TIMEOUT_SECONDS = 5.0  # bounded: a flush must not hold the object long
HISTORY_TIMEOUT_SECONDS = 5.0  # the history read sits in front of a consume
SCHEMA_VERSION = 2  # 2: usage_counters.history_loaded

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS usage_counters (
  kind TEXT NOT NULL,
  period TEXT NOT NULL,               -- 'YYYY-MM' for counters, 'level' for levels
  used INTEGER NOT NULL DEFAULT 0 CHECK (used >= 0),
  flushed INTEGER NOT NULL DEFAULT -1,  -- the value Supabase last acknowledged
  flushed_period TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (kind, period)
)""",
    "CREATE TABLE IF NOT EXISTS usage_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
# Version 2: whether a counter row holds the history Supabase recorded for its period (0/1).
# Rows from before it start at 0, so they merge the history on their next use (see LOAD_HISTORY_SQL).
ADD_HISTORY_FLAG_SQL = "ALTER TABLE usage_counters ADD COLUMN history_loaded INTEGER NOT NULL DEFAULT 0"

# The check and the count in one statement: a row is inserted or raised only within the limit.
CONSUME_SQL = (
    "INSERT INTO usage_counters (kind, period, used) SELECT ?1, ?2, ?3 WHERE ?3 <= ?4 "
    "ON CONFLICT (kind, period) DO UPDATE SET used = used + excluded.used WHERE used + excluded.used <= ?4 "
    "RETURNING used"
)
RELEASE_SQL = "UPDATE usage_counters SET used = max(used - ?3, 0) WHERE kind = ?1 AND period = ?2 RETURNING used"
USED_SQL = "SELECT used FROM usage_counters WHERE kind = ?1 AND period = ?2"
HISTORY_LOADED_SQL = "SELECT history_loaded FROM usage_counters WHERE kind = ?1 AND period = ?2"
# Applies a history read exactly once per row: a later read (a concurrent first consume) is a
# no-op. A new row starts at the recorded count, acknowledged as flushed (?4: Supabase holds
# it, or holds nothing = 0). A row from before the flag may already hold counts that were
# flushed (and so are in the history too): it takes the greater of the two, never the sum.
LOAD_HISTORY_SQL = (
    "INSERT INTO usage_counters (kind, period, used, flushed, history_loaded) VALUES (?1, ?2, ?3, ?4, 1) "
    "ON CONFLICT (kind, period) DO UPDATE SET used = max(used, excluded.used), history_loaded = 1 "
    "WHERE history_loaded = 0"
)
DIRTY_SQL = (
    "SELECT kind, period, used FROM usage_counters "
    "WHERE used != flushed OR (period = 'level' AND flushed_period != ?1) ORDER BY kind, period"
)


def _config(env: Any) -> TenantConfig:
    try:
        return config_for(env)
    except ConfigError:  # logged once by shared.isolate; the flush waits for a working deploy
        raise MissingConfig("the tenant Worker's configuration is unusable") from None


class UsageMeter(DurableObject):
    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self.clock: Callable[[], float] = time.time
        self.http: HttpClient | None = None  # built on first flush (the runtime's fetch)
        self.sql = ctx.storage.sql
        for statement in SCHEMA:
            self.sql.exec(statement)
        if int(self._meta("schema_version") or 1) < SCHEMA_VERSION:
            self.sql.exec(ADD_HISTORY_FLAG_SQL)
            self._set_meta("schema_version", str(SCHEMA_VERSION))
        self._tenant_id: str | None = self._meta("tenant_id")
        tier = self._meta("tier")
        self._tier: Tier | None = Tier(tier) if tier else None
        self._alarm_armed: bool | None = None  # unknown until asked (memory is lost on eviction)

    # ---- RPC ------------------------------------------------------------------------------
    async def consume(self, kind: str, amount: Any, tenant_id: str, tier: str) -> dict[str, Any]:
        k, n, t = parse_kind(kind), parse_amount(amount), self._bind(tenant_id, tier)
        now = self.clock()
        period, limit = period_of(k, now), limit_of(t, k)
        if k in COUNTER_KINDS:
            await self._load_history(k, period)  # raises HistoryUnavailable: nothing is counted
        row = self.sql.exec(CONSUME_SQL, k.value, period, n, limit).toArray()
        if row:
            await self._schedule_flush(now)
            return decision(k, t, int(row[0]["used"]), now, allowed=True).to_rpc()
        return decision(k, t, self._used(k, period), now, allowed=False).to_rpc()

    async def release(
        self, kind: str, amount: Any, tenant_id: str, tier: str, period: str | None = None
    ) -> dict[str, Any]:
        k, n, t = parse_kind(kind), parse_amount(amount), self._bind(tenant_id, tier)
        now = self.clock()
        if is_level(k):
            key = LEVEL_PERIOD
        elif period is None:
            key = period_of(k, now)
        elif isinstance(period, str) and PERIOD_RE.match(period) and period <= month_of(now):
            key = period  # a refund lands in the period the consume counted in
        else:
            raise UsageError("period must be 'YYYY-MM' and not in the future")
        row = self.sql.exec(RELEASE_SQL, k.value, key, n).toArray()
        if row:
            await self._schedule_flush(now)
        return decision(k, t, self._used(k, period_of(k, now)), now, allowed=True).to_rpc()

    async def seed_level(self, kind: str, value: Any, tenant_id: str, tier: str) -> dict[str, Any]:
        """Set a level's starting point (e.g. domains counted in Supabase) if none is known yet."""
        k, t = parse_kind(kind), self._bind(tenant_id, tier)
        if not is_level(k):
            raise UsageError(f"{k.value} is a counter, not a level")
        start = 0 if value == 0 else parse_amount(value)
        cur = self.sql.exec(
            "INSERT INTO usage_counters (kind, period, used) VALUES (?1, ?2, ?3) ON CONFLICT (kind, period) DO NOTHING",
            k.value,
            LEVEL_PERIOD,
            start,
        )
        if cur.rowsWritten:
            await self._schedule_flush(self.clock())
        return self._snapshot(t).to_rpc()

    async def snapshot(self, tenant_id: str, tier: str) -> dict[str, Any]:
        t = self._bind(tenant_id, tier)
        now = self.clock()
        for k in sorted(COUNTER_KINDS, key=lambda c: c.value):
            try:  # best effort: a report may show less than recorded; a consume never counts from less
                await self._load_history(k, period_of(k, now))
            except HistoryUnavailable:
                pass  # logged in _read_history
        return self._snapshot(t).to_rpc()

    # ---- history ----------------------------------------------------------------------------
    async def _load_history(self, kind: UsageKind, period: str) -> None:
        """Make the counter row of `period` hold what Supabase recorded for it (once per row)."""
        if self._history_loaded(kind, period):
            return
        recorded = await self._read_history(kind, period)
        # No await between here and the caller's check-and-count. If another consume applied
        # its read while ours was outstanding, the flag makes this statement a no-op.
        self.sql.exec(LOAD_HISTORY_SQL, kind.value, period, recorded or 0, recorded or 0)

    def _history_loaded(self, kind: UsageKind, period: str) -> bool:
        rows = self.sql.exec(HISTORY_LOADED_SQL, kind.value, period).toArray()
        return bool(rows) and int(rows[0]["history_loaded"]) == 1

    async def _read_history(self, kind: UsageKind, period: str) -> int | None:
        """tenant_usage.usage_count for this tenant/kind/period (service role), None if no row."""
        assert self._tenant_id is not None  # bound by the RPC method before any history is read
        try:
            rows = await self._supabase(HISTORY_TIMEOUT_SECONDS).select(
                "tenant_usage",
                columns="usage_count",
                eq={"tenant_id": self._tenant_id, "usage_type": kind.value, "period": period},
            )
            return recorded_count(rows)
        except (HttpError, SupabaseError, MissingConfig, UsageError) as exc:
            log.warning(
                json.dumps(
                    {
                        "event": "usage_history_unavailable",
                        "tenant_id": self._tenant_id,
                        "kind": kind.value,
                        "period": period,
                        "reason": type(exc).__name__,
                        "status": getattr(exc, "status", None),
                    }
                )
            )
            raise HistoryUnavailable(f"the recorded {kind.value} for {period} could not be read") from None

    # ---- the flush ------------------------------------------------------------------------
    async def alarm(self, alarm_info: Any = None) -> None:
        self._alarm_armed = False  # the alarm that woke us is spent
        now = self.clock()
        rows = self.sql.exec(DIRTY_SQL, month_of(now)).toArray()
        if not rows or self._tenant_id is None or self._tier is None:
            self._set_meta("flush_attempts", "0")
            return
        payload = [
            flush_row(self._tenant_id, self._tier, UsageKind(r["kind"]), r["period"], int(r["used"]), now) for r in rows
        ]
        try:
            # record_usage keeps the greater count for counters, so this never lowers history.
            await self._supabase(FLUSH_TIMEOUT_SECONDS).rpc(
                "record_usage", {"usage_rows": [p.model_dump(mode="json") for p in payload]}
            )
        except (HttpError, SupabaseError, MissingConfig) as exc:
            attempts = int(self._meta("flush_attempts") or 0) + 1
            self._set_meta("flush_attempts", str(attempts))
            cfg = self._config_or_default()
            delay = flush_backoff_ms(
                attempts, base_ms=cfg.usage_flush_retry_base_ms, cap_ms=cfg.usage_flush_retry_cap_ms
            )
            log.warning(
                json.dumps(
                    {
                        "event": "usage_flush_failed",
                        "tenant_id": self._tenant_id,
                        "attempt": attempts,
                        "retry_in_ms": delay,
                        "reason": type(exc).__name__,
                        "status": getattr(exc, "status", None),
                    }
                )
            )
            await self._arm(self.clock() * 1000 + delay)
            return
        for r, p in zip(rows, payload, strict=True):
            # Exactly what was sent is acknowledged: a consume during the upsert stays dirty.
            self.sql.exec(
                "UPDATE usage_counters SET flushed = ?3, flushed_period = ?4 WHERE kind = ?1 AND period = ?2",
                r["kind"],
                r["period"],
                p.usage_count,
                p.period,
            )
        self._set_meta("flush_attempts", "0")
        if self.sql.exec(DIRTY_SQL, month_of(self.clock())).toArray():
            await self._schedule_flush(self.clock())

    def _supabase(self, timeout: float) -> SupabaseClient:
        cfg = _config(self.env)
        if self.http is None:
            from shared.fetch_client import FetchClient

            self.http = FetchClient()
        return SupabaseClient.as_service_role(
            self.http, url=cfg.supabase_url, service_role_key=cfg.supabase_service_role_key, timeout=timeout
        )

    async def _schedule_flush(self, now: float) -> None:
        if self._alarm_armed is None:
            self._alarm_armed = await self.ctx.storage.getAlarm() is not None
        if not self._alarm_armed:
            await self._arm(now * 1000 + self._config_or_default().usage_flush_delay_ms)

    def _config_or_default(self) -> TenantConfig | FlushTiming:
        try:
            return _config(self.env)
        except MissingConfig:
            return FlushTiming()

    async def _arm(self, at_ms: float) -> None:
        await self.ctx.storage.setAlarm(at_ms)
        self._alarm_armed = True

    # ---- storage helpers ----------------------------------------------------------------
    def _bind(self, tenant_id: Any, tier: Any) -> Tier:
        """The first caller names the tenant; any other tenant id is refused from then on."""
        if not isinstance(tenant_id, str) or not TENANT_ID_RE.match(tenant_id):
            raise UsageError("invalid tenant id")
        if self._tenant_id is None:
            self._set_meta("tenant_id", tenant_id)
            self._tenant_id = tenant_id
        elif tenant_id != self._tenant_id:
            raise UsageError("this meter belongs to another tenant")
        t = parse_tier(tier)
        if t != self._tier:
            self._set_meta("tier", t.value)
            self._tier = t
        return t

    def _used(self, kind: UsageKind, period: str) -> int:
        rows = self.sql.exec(USED_SQL, kind.value, period).toArray()
        return int(rows[0]["used"]) if rows else 0

    def _snapshot(self, tier: Tier) -> UsageSnapshot:
        now = self.clock()
        rows = self.sql.exec(
            "SELECT kind, period, used FROM usage_counters WHERE period IN (?1, ?2)", month_of(now), LEVEL_PERIOD
        ).toArray()
        used = {
            UsageKind(r["kind"]): int(r["used"]) for r in rows if r["period"] == period_of(UsageKind(r["kind"]), now)
        }
        seeded = [UsageKind(r["kind"]) for r in rows if r["period"] == LEVEL_PERIOD]
        return snapshot(self._tenant_id or "", tier, used, now, seeded)

    def _meta(self, key: str) -> str | None:
        rows = self.sql.exec("SELECT value FROM usage_meta WHERE key = ?1", key).toArray()
        return str(rows[0]["value"]) if rows else None

    def _set_meta(self, key: str, value: str) -> None:
        self.sql.exec(
            "INSERT INTO usage_meta (key, value) VALUES (?1, ?2) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            key,
            value,
        )


class MissingConfig(Exception):
    """The Supabase secrets the flush and the history read need are not set on this script."""


class HistoryUnavailable(Exception):
    """The counter's recorded history could not be read, so the meter will not count (fails closed)."""


class TenantMeter:
    """The calling side: the tenant's meter, keyed by the verified tenant context only."""

    def __init__(self, stub: Any, tenant_id: str, tier: Tier) -> None:
        self._stub, self.tenant_id, self.tier = stub, tenant_id, tier

    async def consume(self, kind: UsageKind, amount: int = 1) -> UsageDecision:
        return UsageDecision.model_validate(
            dict(await self._stub.consume(kind.value, amount, self.tenant_id, self.tier.value))
        )

    async def release(self, kind: UsageKind, amount: int = 1, period: str | None = None) -> UsageDecision:
        args: list[Any] = [kind.value, amount, self.tenant_id, self.tier.value]
        if period is not None:
            args.append(period)
        return UsageDecision.model_validate(dict(await self._stub.release(*args)))

    async def seed_level(self, kind: UsageKind, value: int) -> UsageSnapshot:
        return UsageSnapshot.model_validate(
            dict(await self._stub.seed_level(kind.value, value, self.tenant_id, self.tier.value))
        )

    async def snapshot(self) -> UsageSnapshot:
        return UsageSnapshot.model_validate(dict(await self._stub.snapshot(self.tenant_id, self.tier.value)))


def meter_for(call: Any) -> TenantMeter:
    """The meter of the tenant this request was verified for (never a client-sent id)."""
    tenant = call.tenant
    return TenantMeter(call.env.USAGE.getByName(tenant.tenant_id), tenant.tenant_id, tenant.tier)

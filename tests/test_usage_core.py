"""The pure metering core: periods, limits from the tier table, decisions, flush rows."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.tiers import GIB, Tier, UsageKind, plan_for
from shared.usage import (
    LEVEL_PERIOD,
    UsageDecision,
    UsageError,
    decision,
    flush_backoff_ms,
    flush_row,
    limit_of,
    month_of,
    next_month_start,
    parse_amount,
    period_of,
    recorded_count,
    snapshot,
)

UTC = timezone.utc
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31, 23, 59, 59), timezones=st.just(UTC)
)


@given(instants)
def test_the_reset_is_the_first_instant_of_the_next_utc_month(when: datetime) -> None:
    reset = next_month_start(when.timestamp())
    assert reset > when and (reset.day, reset.hour, reset.minute, reset.second) == (1, 0, 0, 0)
    assert reset - when <= timedelta(days=31)
    assert month_of((reset - timedelta(microseconds=1)).timestamp()) == month_of(when.timestamp())
    assert month_of(reset.timestamp()) != month_of(when.timestamp())


def test_periods_are_utc_months_and_levels_have_none() -> None:
    # 23:30 on Nov 30 in UTC-5 is already December in UTC: the month is UTC's.
    late = datetime(2026, 11, 30, 23, 30, tzinfo=timezone(timedelta(hours=-5))).timestamp()
    assert period_of(UsageKind.AI_CALLS, late) == "2026-12"
    assert period_of(UsageKind.DOMAINS, late) == period_of(UsageKind.STORAGE, late) == LEVEL_PERIOD


@pytest.mark.parametrize(
    "tier, ai, domains, storage",
    [(Tier.STARTER, 100, 1, 1 * GIB), (Tier.GROWTH, 250, 5, 10 * GIB), (Tier.ENTERPRISE, 500, 25, 100 * GIB)],
)
def test_limits_are_the_tier_tables(tier: Tier, ai: int, domains: int, storage: int) -> None:
    assert (
        (limit_of(tier, UsageKind.AI_CALLS), limit_of(tier, UsageKind.DOMAINS), limit_of(tier, UsageKind.STORAGE))
        == (ai, domains, storage)
        == tuple(plan_for(tier).limit_for(k) for k in UsageKind)
    )


@pytest.mark.parametrize("bad", [0, -1, 1.5, math.inf, -math.inf, math.nan, True, "3", None, [1], 2**60])
def test_amounts_must_be_positive_whole_numbers(bad: object) -> None:
    with pytest.raises(UsageError):
        parse_amount(bad)


def test_an_integral_js_number_is_a_whole_number() -> None:
    assert parse_amount(3.0) == 3 and parse_amount(7) == 7


def test_the_rpc_form_is_the_models_json_form() -> None:
    """What crosses the Durable Object RPC, written out by hand (growth: 250 AI calls, 5 domains, 10 GiB)."""
    now = datetime(2026, 11, 26, 10, tzinfo=UTC).timestamp()
    expected = {
        UsageKind.AI_CALLS: {
            "allowed": True,
            "kind": "ai_calls",
            "used": 3,
            "limit": 250,
            "remaining": 247,
            "period": "2026-11",
            "resets_at": "2026-12-01T00:00:00Z",
        },
        UsageKind.DOMAINS: {
            "allowed": True,
            "kind": "domains",
            "used": 3,
            "limit": 5,
            "remaining": 2,
            "period": "level",
            "resets_at": None,
        },
        UsageKind.STORAGE: {
            "allowed": True,
            "kind": "storage",
            "used": 3,
            "limit": 10 * 2**30,
            "remaining": 10 * 2**30 - 3,
            "period": "level",
            "resets_at": None,
        },
    }
    assert set(expected) == set(UsageKind)
    for kind, rpc in expected.items():
        d = decision(kind, Tier.GROWTH, 3, now, allowed=True)
        assert d.to_rpc() == rpc
        assert d.model_dump(mode="json") == rpc  # the RPC form is the model's own JSON form
        back = UsageDecision.model_validate(rpc)  # and the other side reads it back to the same decision
        assert back == d and back.resets_at == (datetime(2026, 12, 1, tzinfo=UTC) if rpc["resets_at"] else None)


def test_retry_after_counts_down_to_the_reset_and_levels_have_none() -> None:
    now = datetime(2026, 11, 30, 23, 59, 0, tzinfo=UTC).timestamp()
    d = decision(UsageKind.AI_CALLS, Tier.STARTER, 100, now, allowed=False)
    assert (d.remaining, d.retry_after_seconds(now)) == (0, 60)
    assert decision(UsageKind.DOMAINS, Tier.STARTER, 1, now, allowed=False).retry_after_seconds(now) is None


def test_over_the_limit_remaining_is_zero_not_negative() -> None:
    now = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    assert decision(UsageKind.AI_CALLS, Tier.STARTER, 180, now, allowed=False).remaining == 0  # after a downgrade


def test_flush_rows_write_levels_under_the_current_month() -> None:
    now = datetime(2027, 2, 3, tzinfo=UTC).timestamp()
    assert flush_row("partner1", Tier.GROWTH, UsageKind.DOMAINS, LEVEL_PERIOD, 3, now).model_dump(mode="json") == {
        "tenant_id": "partner1",
        "usage_type": "domains",
        "period": "2027-02",
        "usage_count": 3,
        "usage_limit": 5,
    }
    assert flush_row("partner1", Tier.GROWTH, UsageKind.AI_CALLS, "2027-01", 9, now).period == "2027-01"


def test_flush_backoff_doubles_and_is_capped() -> None:
    assert [flush_backoff_ms(a, base_ms=2000, cap_ms=60_000) for a in range(1, 8)] == [
        2000,
        4000,
        8000,
        16000,
        32000,
        60000,
        60000,
    ]
    assert flush_backoff_ms(10**6, base_ms=2000, cap_ms=600_000) == 600_000


def test_a_snapshot_has_every_kind() -> None:
    now = datetime(2026, 11, 26, tzinfo=UTC).timestamp()
    snap = snapshot("partner-seo", Tier.STARTER, {UsageKind.AI_CALLS: 4}, now)
    assert [i.kind for i in snap.items] == list(UsageKind)
    assert snap.item("ai_calls").remaining == 96 and snap.item("storage").used == 0


def test_recorded_history_is_read_strictly() -> None:
    assert recorded_count([]) is None
    assert recorded_count([{"usage_count": 14}]) == 14
    for bad in (
        [{"usage_count": -1}],
        [{"usage_count": "many"}],
        [{}],
        {"usage_count": 3},
        None,
        [{"usage_count": 1}, {"usage_count": 2}],
    ):  # the key is unique: two rows is a wrong read
        with pytest.raises(UsageError):
            recorded_count(bad)

"""tenant_worker.metering.reserve on CPython, against a meter that records its calls: one meter
call to reserve, at most one to give back, and the right amount and period given back."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from shared.models import TenantContext, TenantType
from shared.tiers import Tier, UsageKind
from shared.usage import UsageDecision, decision, snapshot
from tenant_worker.inbound_http import ApiError, Call
from tenant_worker.metering import reserve
from tests.worker_units import offline_services


class CountingMeter:
    def __init__(self, used: int = 0, *, down: bool = False) -> None:
        self.used, self.down = used, down
        self.calls: list[tuple[Any, ...]] = []

    async def consume(self, kind: UsageKind, amount: int = 1) -> UsageDecision:
        self.calls.append(("consume", kind, amount))
        if self.down:
            raise RuntimeError("meter unreachable")
        d = decision(kind, Tier.STARTER, self.used + amount, time.time(), allowed=True)
        if self.used + amount > d.limit:
            return decision(kind, Tier.STARTER, self.used, time.time(), allowed=False)
        self.used += amount
        return d

    async def release(self, kind: UsageKind, amount: int = 1, period: str | None = None) -> UsageDecision:
        self.calls.append(("release", kind, amount, period))
        self.used = max(0, self.used - amount)
        return decision(kind, Tier.STARTER, self.used, time.time(), allowed=True)

    async def snapshot(self) -> Any:
        return snapshot("acme", Tier.STARTER, {}, time.time())


def _call() -> Call:
    async def no_body() -> bytes:
        return b""

    ctx = TenantContext("acme", TenantType.CUSTOM_DOMAIN, Tier.STARTER, "acme.example", "r" * 16, int(time.time()))
    services = offline_services()  # no Supabase: audits are logged gaps
    return Call(ctx, "POST", "/api/ai/generate", {}, {}, {}, None, services, no_body)


def _run(meter: CountingMeter, amount: int, body: Any) -> Any:
    async def go() -> Any:
        async with reserve(_call(), meter, UsageKind.AI_CALLS, amount, actor="u") as r:
            return await body(r)

    return asyncio.run(go())


def test_committed_work_is_one_meter_call() -> None:
    meter = CountingMeter()

    async def work(r: Any) -> str:
        r.commit()
        return "done"

    assert _run(meter, 1, work) == "done"
    assert [c[0] for c in meter.calls] == ["consume"] and meter.used == 1


def test_failed_work_gives_the_units_back_once_into_their_period() -> None:
    meter = CountingMeter()

    async def work(r: Any) -> None:
        raise ApiError(502, "ai_unavailable", "no")

    with pytest.raises(ApiError) as err:
        _run(meter, 1, work)
    assert err.value.status == 502 and meter.used == 0
    period = decision(UsageKind.AI_CALLS, Tier.STARTER, 0, time.time(), allowed=True).period
    assert meter.calls == [("consume", UsageKind.AI_CALLS, 1), ("release", UsageKind.AI_CALLS, 1, period)]


def test_work_that_forgets_to_commit_is_not_counted() -> None:
    meter = CountingMeter()

    async def work(r: Any) -> None:
        return None

    _run(meter, 3, work)
    assert meter.used == 0 and [c[0] for c in meter.calls] == ["consume", "release"]


def test_keeping_part_gives_the_rest_back_in_one_call() -> None:
    meter = CountingMeter()

    async def work(r: Any) -> None:
        r.commit(2)

    _run(meter, 5, work)
    assert meter.used == 2 and meter.calls[1][:3] == ("release", UsageKind.AI_CALLS, 3)


def test_past_the_limit_is_429_and_the_work_never_runs() -> None:
    meter = CountingMeter(used=100)  # starter: 100 AI calls
    ran: list[bool] = []

    async def work(r: Any) -> None:
        ran.append(True)

    with pytest.raises(ApiError) as err:
        _run(meter, 1, work)
    assert err.value.status == 429 and err.value.code == "usage_limit_exceeded" and "retry-after" in err.value.headers
    assert not ran and [c[0] for c in meter.calls] == ["consume"] and meter.used == 100


def test_a_meter_that_cannot_answer_is_503_and_the_work_never_runs() -> None:
    meter = CountingMeter(down=True)
    ran: list[bool] = []

    async def work(r: Any) -> None:
        ran.append(True)

    with pytest.raises(ApiError) as err:
        _run(meter, 1, work)
    assert (err.value.status, err.value.code) == (503, "usage_unavailable") and not ran


def test_nothing_to_reserve_asks_the_meter_nothing() -> None:
    meter = CountingMeter()

    async def work(r: Any) -> Any:
        return r.decision

    assert _run(meter, 0, work) is None and meter.calls == []

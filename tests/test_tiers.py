"""The one tier table: figures from the product document."""

from __future__ import annotations

from decimal import Decimal

import pytest

from shared.tiers import PARTNER_MARKUP, TIERS, Tier, UsageKind, monthly_price, plan_for


@pytest.mark.parametrize(
    "tier, price, ai, domains",
    [
        ("starter", "1000", 100, 1),
        ("growth", "1500", 250, 5),
        ("enterprise", "2500", 500, 25),
    ],
)
def test_product_document_figures(tier: str, price: str, ai: int, domains: int) -> None:
    plan = plan_for(tier)
    assert plan.monthly_price_usd == Decimal(price)
    assert plan.limit_for(UsageKind.AI_CALLS) == ai and plan.limit_for("domains") == domains


def test_partner_markup_is_twenty_percent() -> None:
    assert PARTNER_MARKUP == Decimal("0.20")
    assert monthly_price("starter", partner=True) == Decimal("1200")
    assert monthly_price("enterprise", partner=False) == Decimal("2500")


def test_limits_grow_with_tier() -> None:
    s, g, e = (TIERS[t] for t in (Tier.STARTER, Tier.GROWTH, Tier.ENTERPRISE))
    for kind in UsageKind:
        assert s.limit_for(kind) < g.limit_for(kind) < e.limit_for(kind)
    assert s.worker_limits()["cpuMs"] < e.worker_limits()["cpuMs"]
    assert set(s.worker_limits()) == {"cpuMs", "subRequests"}


def test_unknown_tier_is_refused() -> None:
    with pytest.raises(ValueError):
        plan_for("platinum")

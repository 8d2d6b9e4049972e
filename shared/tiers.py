"""The pricing tiers: the one table metering, limits, dispatch limits and revenue read.

Figures from the product document: Starter $1,000/mo with 100 AI calls and 1 domain;
Growth $1,500, 250, 5; Enterprise $2,500, 500, 25; partners pay a 20% white-label markup.
Storage limits are ours (the document names none): 1, 10 and 100 GiB, and one uploaded file
may be at most 25, 50 or 95 MiB (under the 100 MB request body Cloudflare accepts on the
Free and Pro plans).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import Enum


class Tier(str, Enum):
    STARTER = "starter"
    GROWTH = "growth"
    ENTERPRISE = "enterprise"


class UsageKind(str, Enum):
    AI_CALLS = "ai_calls"
    DOMAINS = "domains"
    STORAGE = "storage"


@dataclass(frozen=True, slots=True)
class TierPlan:
    tier: Tier
    monthly_price_usd: Decimal
    ai_calls_per_month: int
    domains: int
    storage_bytes: int
    # Per-invocation limits the dispatcher passes to the tenant's user Worker.
    worker_cpu_ms: int
    worker_subrequests: int
    max_file_bytes: int  # one upload (POST /api/files)

    def limit_for(self, kind: UsageKind | str) -> int:
        return {
            UsageKind.AI_CALLS: self.ai_calls_per_month,
            UsageKind.DOMAINS: self.domains,
            UsageKind.STORAGE: self.storage_bytes,
        }[UsageKind(kind)]

    def worker_limits(self) -> dict[str, int]:
        """The `limits` object of `DISPATCHER.get(name, {}, {"limits": ...})`."""
        return {"cpuMs": self.worker_cpu_ms, "subRequests": self.worker_subrequests}


MIB = 1024**2
GIB = 1024**3
PARTNER_MARKUP = Decimal("0.20")

TIERS: dict[Tier, TierPlan] = {
    Tier.STARTER: TierPlan(Tier.STARTER, Decimal("1000"), 100, 1, 1 * GIB, 50, 50, 25 * MIB),
    Tier.GROWTH: TierPlan(Tier.GROWTH, Decimal("1500"), 250, 5, 10 * GIB, 100, 100, 50 * MIB),
    Tier.ENTERPRISE: TierPlan(Tier.ENTERPRISE, Decimal("2500"), 500, 25, 100 * GIB, 300, 500, 95 * MIB),
}


def plan_for(tier: Tier | str) -> TierPlan:
    """The plan of a tier; raises ValueError for an unknown tier name."""
    return TIERS[Tier(tier)]


def monthly_price(tier: Tier | str, *, partner: bool) -> Decimal:
    """What the tenant pays a month: partners (white-label) pay the 20% markup."""
    base = plan_for(tier).monthly_price_usd
    return base * (1 + PARTNER_MARKUP) if partner else base

"""The support desk's rules: first-response SLA per tier, priorities, statuses.

The database applies the same SLA when a ticket is opened (private.first_response_hours in
supabase/migrations/20261126235519_operations.sql; a test keeps the two equal): the clock starts at
opening, and the first answer by a tenant admin or platform staff member who is not the opener
stops it. A ticket whose first answer came after its due time, or that is still unanswered
past it, is breached.
"""

from __future__ import annotations

from datetime import datetime

from shared.tiers import Tier

FIRST_RESPONSE_HOURS: dict[Tier, int] = {Tier.STARTER: 48, Tier.GROWTH: 24, Tier.ENTERPRISE: 4}
PRIORITIES = ("low", "normal", "high", "urgent")
STATUSES = ("open", "answered", "closed")
SLA_STATES = ("met", "pending", "breached")


def sla_state(due_at: datetime, first_response_at: datetime | None, now: datetime) -> str:
    """'met' (answered in time), 'breached' (answered late, or unanswered past due) or 'pending'."""
    if first_response_at is not None:
        return "met" if first_response_at <= due_at else "breached"
    return "breached" if now > due_at else "pending"

"""The audit trail's hash chain, checked outside the database.

Each `audit_log` row carries `seq` (1, 2, 3 … per tenant), `prev_hash` (the previous row's
`row_hash`, 64 zeros for the first) and `row_hash`, which the database computes on insert
(supabase/migrations/20261126233134_audit_chain.sql, `private.audit_row_hash`). This module computes
the same SHA-256 from the exact text the database hashed (`public.audit_chain_rows()` returns
the time as `at_text` and the details as jsonb's own text), so `tenants.py audit verify`
does not trust the database's functions to check themselves.

    report = verify_chain(tenant_id, rows)   # rows in seq order, as AuditChainRow
    report.ok, report.first_broken           # the first link that does not hold, if any

Canonical text, version 1: fields joined with '|', each `<length in characters>:<text>` or
`-` for NULL:
    'cmgsite-audit/1' | prev_hash | tenant_id | seq | at_text | actor | action | target
    | request_id | outcome | details_text
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field

GENESIS = "0" * 64
CHAIN_VERSION = "cmgsite-audit/1"


class AuditChainRow(BaseModel):
    """One row as public.audit_chain_rows() returns it (the text the database hashed)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: int | None = None
    tenant_id: str
    seq: int = Field(ge=1)
    at_text: str
    actor: str
    action: str
    target: str | None = None
    request_id: str | None = None
    outcome: str
    details_text: str
    prev_hash: str
    row_hash: str


class BrokenLink(BaseModel):
    model_config = ConfigDict(frozen=True)

    seq: int
    id: int | None
    reason: Literal["seq_gap", "wrong_tenant", "prev_hash_mismatch", "row_hash_mismatch"]
    message: str


class ChainReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    tenant_id: str
    rows: int
    head_seq: int
    head_hash: str
    first_broken: BrokenLink | None = None

    @property
    def ok(self) -> bool:
        return self.first_broken is None


def _field(value: str | None) -> str:
    return "-" if value is None else f"{len(value)}:{value}"


def row_hash(
    *,
    prev_hash: str,
    tenant_id: str,
    seq: int,
    at_text: str,
    actor: str,
    action: str,
    target: str | None,
    request_id: str | None,
    outcome: str,
    details_text: str,
) -> str:
    """The SHA-256 (hex) the database stores as row_hash for these values."""
    fields = [prev_hash, tenant_id, str(seq), at_text, actor, action, target, request_id, outcome, details_text]
    text = CHAIN_VERSION + "".join("|" + _field(f) for f in fields)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def expected_hash(row: AuditChainRow, prev_hash: str) -> str:
    return row_hash(
        prev_hash=prev_hash,
        tenant_id=row.tenant_id,
        seq=row.seq,
        at_text=row.at_text,
        actor=row.actor,
        action=row.action,
        target=row.target,
        request_id=row.request_id,
        outcome=row.outcome,
        details_text=row.details_text,
    )


def verify_chain(tenant_id: str, rows: Iterable[AuditChainRow]) -> ChainReport:
    """Walk a tenant's chain in seq order; report the first link that does not hold.

    A deleted row shows as a seq gap (or, if seq was rewritten too, as a prev_hash that is not
    the previous row's hash); an edited row as a row_hash that is not its content's; a row
    inserted with a forged hash as either."""
    prev, expected_seq, count, head_hash = GENESIS, 1, 0, GENESIS
    for row in rows:
        count += 1
        broken: BrokenLink | None = None
        if row.tenant_id != tenant_id:
            broken = BrokenLink(
                seq=row.seq,
                id=row.id,
                reason="wrong_tenant",
                message=f"row {row.id} in the chain belongs to another tenant",
            )
        elif row.seq != expected_seq:
            broken = BrokenLink(
                seq=expected_seq,
                id=row.id,
                reason="seq_gap",
                message=f"expected seq {expected_seq}, found {row.seq}: rows are missing or reordered",
            )
        elif row.prev_hash != prev:
            broken = BrokenLink(
                seq=row.seq,
                id=row.id,
                reason="prev_hash_mismatch",
                message=f"seq {row.seq} does not link to seq {row.seq - 1}: a row before it was "
                "removed, replaced or re-hashed",
            )
        elif row.row_hash != expected_hash(row, prev):
            broken = BrokenLink(
                seq=row.seq,
                id=row.id,
                reason="row_hash_mismatch",
                message=f"seq {row.seq}'s content does not match its hash: the row was edited",
            )
        if broken is not None:
            return ChainReport(
                tenant_id=tenant_id, rows=count, head_seq=expected_seq - 1, head_hash=prev, first_broken=broken
            )
        prev, head_hash, expected_seq = row.row_hash, row.row_hash, expected_seq + 1
    return ChainReport(tenant_id=tenant_id, rows=count, head_seq=expected_seq - 1, head_hash=head_hash)

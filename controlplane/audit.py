"""`audit verify [<tenant>]`: walk each tenant's audit chain and report its first broken link.

The chain is read with the text the database hashed (public.audit_chain_rows) and checked
here (controlplane.audit_chain), not by the database's own functions. Each tenant's head
(seq and hash) is printed: an operator who keeps those values elsewhere can later prove that
a chain was not rewritten as a whole either (the one thing a hash chain alone cannot show).
"""

from __future__ import annotations

from typing import Any

from controlplane.audit_chain import verify_chain
from controlplane.lifecycle import ControlPlane
from controlplane.model import parse_tenant_id


async def verify_audit(cp: ControlPlane, tenant_id: str | None = None) -> dict[str, Any]:
    if tenant_id is not None:
        tenants = [(await cp.require(parse_tenant_id(tenant_id))).tenant_id]
    else:
        tenants = await cp.registry.audited_tenants()
    reports = []
    for tid in tenants:
        report = verify_chain(tid, await cp.registry.audit_chain(tid))
        reports.append(report.model_dump(mode="json"))
    broken = [r for r in reports if r["first_broken"] is not None]
    return {
        "tenants_checked": len(reports),
        "intact": not broken,
        "chains": reports,
        "broken": [{"tenant_id": r["tenant_id"], **r["first_broken"]} for r in broken],
    }

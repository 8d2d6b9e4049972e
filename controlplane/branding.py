"""`tenants.py branding TENANT [--brand-name …] [--logo-url …] [--primary-color …] [--secondary-color …]
[--support-email …] [--clear FIELD …]`: the operator sets a tenant's white-label branding.

The same rules as the tenant admin's `PATCH /api/tenant/branding` (shared.branding), written to
Supabase `tenants.whitelabel_config`, then converged to D1 (the dispatcher's error pages carry the
brand name) and audited.
"""

from __future__ import annotations

from typing import Any

from controlplane.errors import Refused
from controlplane.lifecycle import ControlPlane
from shared.branding import FIELDS, check_branding, merged


async def set_branding(cp: ControlPlane, tenant_id: str, values: dict[str, Any]) -> dict[str, Any]:
    tenant = await cp.require(tenant_id)
    if not values:
        raise Refused(
            "nothing to change: give at least one of --brand-name, --logo-url, --primary-color, "
            "--secondary-color, --support-email or --clear"
        )
    cleaned, problems = check_branding(values)
    if problems:
        raise Refused("; ".join(f"{k}: {v}" for k, v in sorted(problems.items())))
    config = merged(tenant.whitelabel_config, cleaned)
    cp.reporter.step(f"supabase: set {tenant.tenant_id} branding ({', '.join(sorted(cleaned))})")
    await cp.registry.set_tenant(tenant.tenant_id, {"whitelabel_config": config})
    await cp.converge(tenant.tenant_id)
    await cp._audit(tenant.tenant_id, "tenant.branding_changed", {"fields": sorted(cleaned)})
    return {"tenant_id": tenant.tenant_id, "branding": {k: config.get(k) for k in FIELDS}}

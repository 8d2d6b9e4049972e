"""A tenant's data as a whole: `export` (GDPR access) and `delete` (erasure).

Export reads every Supabase table with a tenant_id column (found from PostgREST's schema,
so tables later issues add are included; the audit trail with its hash chain checked), the
D1 routing rows and the Worker's spec; never a secret. It leaves a `tenant.exported` audit
row. Erasure unroutes first (same order as remove), then deletes the tenant's rows child
tables first; the audit chain goes last, whole, by the cascade of the tenants row (the one
delete the append-only audit log allows: supabase/migrations/20261126233134_audit_chain.sql). It checks
that none is left, and leaves one audit record in the primary tenant's chain: a fingerprint
of the tenant id and row counts, no personal data.
"""
from __future__ import annotations

import time
from typing import Any

from controlplane.audit_chain import verify_chain
from controlplane.errors import BackendError, NotFound, Refused
from controlplane.lifecycle import ControlPlane
from controlplane.model import PRIMARY_TENANT_ID, parse_tenant_id, script_name_for
from controlplane.registry import tenant_fingerprint
from shared.models import TenantType

# Rows of these go with the tenants row (ON DELETE CASCADE): the service role may not delete them itself.
CASCADE_ONLY = {"audit_log"}


async def export_tenant(cp: ControlPlane, tenant_id: str) -> dict[str, Any]:
    tenant_id = parse_tenant_id(tenant_id)
    tenant = await cp.registry.tenant(tenant_id)
    if tenant is None:
        raise NotFound(f"no tenant {tenant_id!r} in the registry")
    supabase: dict[str, list[dict[str, Any]]] = {}
    for table in await cp.registry.tenant_tables():
        supabase[table] = await cp.registry.rows_of(table, tenant_id)
    chain = verify_chain(tenant_id, await cp.registry.audit_chain(tenant_id))
    data = {
        "format": "cmgsite-tenant-export/1",
        "tenant_id": tenant_id,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "supabase": supabase,
        # The audit trail is in supabase.audit_log; this says whether its hash chain holds.
        "audit_chain": chain.model_dump(mode="json"),
        "d1": {"tenants": [r for r in [await cp.replica.tenant(tenant_id)] if r],
               "tenant_domains": await cp.replica.domains(tenant_id)},
        "worker": {"script_name": tenant.script_name, "deployed": await cp.scripts.exists(tenant.script_name),
                   "secrets": "not exported"},
        "runtime": await cp.runtime_data.describe(tenant_id, tenant.script_name) if cp.runtime_data else {},
    }
    # Recorded after the read, so an export does not contain its own record.
    await cp.registry.audit(tenant_id, "tenant.exported", tenant_id,
                            {"rows": {t: len(r) for t, r in supabase.items()}})
    return data


async def delete_tenant(cp: ControlPlane, tenant_id: str) -> dict[str, Any]:
    """Erase every row of a tenant everywhere. Re-runnable: a second run finishes a first one."""
    tenant_id = parse_tenant_id(tenant_id)
    tenant = await cp.registry.tenant(tenant_id)
    if tenant_id == PRIMARY_TENANT_ID or (tenant is not None and tenant.type is TenantType.PRIMARY):
        raise Refused("the primary tenant cannot be deleted: it is the platform itself")
    d1_row = await cp.replica.tenant(tenant_id)
    script = tenant.script_name if tenant else (d1_row or {}).get("script_name") or script_name_for(tenant_id)
    fingerprint = tenant_fingerprint(tenant_id)
    if tenant is None and d1_row is None and not await cp.scripts.exists(script):
        primary = await cp.registry.primary_tenant()
        if primary is not None and await cp.registry.has_audit(primary.tenant_id, "tenant.erased", fingerprint):
            return {"tenant": fingerprint, "erased": {}, "note": "already erased"}
        raise NotFound(f"no tenant {tenant_id!r} anywhere (Supabase, D1, namespace)")

    domains = await cp.registry.domains(tenant_id) if tenant else []
    if tenant is not None:
        cp.reporter.step(f"supabase: {tenant_id} status -> inactive (erasure starts)")
        await cp.registry.set_tenant(tenant_id, {"status": "inactive"})
    await cp.converge(tenant_id)
    for domain in domains:
        if domain.domain_type == "custom":
            cp.reporter.step(f"{cp.hostnames.label}: delete {domain.domain}")
            await cp.hostnames.delete(domain.domain)
    cp.reporter.step(f"{cp.scripts.label}: remove {script} and its secrets")
    await cp.scripts.remove(script)
    await cp.scripts.forget_secrets(script)
    cp._changed()  # locally: the script's Worker has stopped before its storage is erased

    erased: dict[str, int] = {}
    if cp.runtime_data is not None:
        cp.reporter.step(f"{cp.runtime_data.label}: erase {tenant_id}'s keys and objects")
        erased.update({f"runtime.{k}": v for k, v in (await cp.runtime_data.erase(tenant_id, script)).items()})
    tables = await cp.registry.tenant_tables()
    for table in tables:
        if table in CASCADE_ONLY:
            erased[table] = await cp.registry.count(table, tenant_id)
            continue
        cp.reporter.step(f"supabase: erase {table}")
        erased[table] = await cp.registry.erase(table, tenant_id)
    if not cp.dry_run:
        left = {t: n for t in tables if (n := await cp.registry.count(t, tenant_id))}
        if left:
            raise BackendError(f"rows of {tenant_id} remain after erasure: {left}; re-run delete")
    cp._changed()

    primary = await cp.registry.primary_tenant()
    record = {"rows_erased": erased, "tables": tables}
    if primary is None:
        cp.reporter.warn("no primary tenant in the registry: the erasure audit record was not written")
    elif not await cp.registry.has_audit(primary.tenant_id, "tenant.erased", fingerprint):
        await cp.registry.audit(primary.tenant_id, "tenant.erased", fingerprint, record)
    return {"tenant": fingerprint, "erased": erased}

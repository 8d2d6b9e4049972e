"""A tenant's data as a whole: `export` (GDPR access) and `delete` (erasure).

Export reads every Supabase table with a tenant_id column (found from PostgREST's schema,
so tables later issues add are included; the audit trail with its hash chain checked), the
D1 routing rows and the Worker's spec; never a secret. It leaves a `tenant.exported` audit
row. Erasure unroutes first (same order as remove), then deletes the tenant's rows child
tables first; the audit chain goes last, whole, by the cascade of the tenants row (the one
delete the append-only audit log allows: supabase/migrations/20261126233134_audit_chain.sql). It checks
that none is left, and leaves one audit record in the primary tenant's chain: a fingerprint
of the tenant id and row counts, no personal data. The fingerprint is a keyed HMAC-SHA256
(`erasure_fingerprint`), its key the operator's own secret (`fingerprint_key`): a bare hash of
a short id could be reversed by trying every id, a keyed one only by whoever holds the key.

A dry run of `delete` reads everything it would erase and reports the real counts (rows per
table, runtime keys, R2 objects), printing each write instead of sending it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from typing import Any, Mapping

from controlplane.audit_chain import verify_chain
from controlplane.errors import BackendError, ConfigError, NotFound, Refused
from controlplane.lifecycle import ControlPlane
from controlplane.model import PRIMARY_TENANT_ID, parse_tenant_id, script_name_for
from shared.models import TenantType

# Rows of these go with the tenants row (ON DELETE CASCADE): the service role may not delete them itself.
CASCADE_ONLY = {"audit_log"}
# The erasure fingerprint's key: this environment variable, else (locally) a file in the state dir.
FINGERPRINT_KEY_ENV = "AUDIT_FINGERPRINT_KEY"
FINGERPRINT_KEY_FILE = "audit-fingerprint.key"


def erasure_fingerprint(key: bytes, tenant_id: str) -> str:
    """What the erasure audit record keeps instead of the id: HMAC-SHA256 under the operator's key,
    so it proves which tenant was erased to whoever holds the key and the id, and to nobody else."""
    digest = hmac.new(key, f"cmgsite-erased-tenant:{tenant_id}".encode(), hashlib.sha256).hexdigest()
    return "hmac-sha256:" + digest[:32]


def fingerprint_key(env: Mapping[str, str], state_dir: Path, *, remote: bool, create: bool = True) -> bytes:
    """$AUDIT_FINGERPRINT_KEY (at least 32 characters), else locally `<state dir>/secrets/audit-fingerprint.key`
    (made once, 0600, git-ignored with the rest of .local/). --remote needs the variable: the key is the
    operator's, kept in their secret store with the platform's other keys."""
    raw = env.get(FINGERPRINT_KEY_ENV, "")
    if raw:
        if len(raw) < 32:
            raise ConfigError(
                f"{FINGERPRINT_KEY_ENV} is too short: use at least 32 random characters "
                "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return raw.encode()
    if remote:
        raise ConfigError(
            f"delete --remote needs {FINGERPRINT_KEY_ENV} (the key of the erasure record's fingerprint, "
            "from your secret store; make one with python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')"
        )
    path = Path(state_dir) / "secrets" / FINGERPRINT_KEY_FILE
    if path.is_file():
        return path.read_text().strip().encode()
    if not create:
        raise ConfigError(f"no {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip().encode()


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
        "d1": {
            "tenants": [r for r in [await cp.replica.tenant(tenant_id)] if r],
            "tenant_domains": await cp.replica.domains(tenant_id),
        },
        "worker": {
            "script_name": tenant.script_name,
            "deployed": await cp.scripts.exists(tenant.script_name),
            "secrets": "not exported",
        },
        "runtime": await cp.runtime_data.describe(tenant_id, tenant.script_name) if cp.runtime_data else {},
    }
    # Recorded after the read, so an export does not contain its own record.
    await cp.registry.audit(tenant_id, "tenant.exported", tenant_id, {"rows": {t: len(r) for t, r in supabase.items()}})
    return data


def export_counts(data: dict[str, Any]) -> dict[str, int]:
    """Rows per table of an export (what the CLI prints next to the file it wrote)."""
    return {table: len(rows) for table, rows in data.get("supabase", {}).items()}


async def delete_tenant(cp: ControlPlane, tenant_id: str, key: bytes) -> dict[str, Any]:
    """Erase every row of a tenant everywhere. Re-runnable: a second run finishes a first one.
    A dry run returns what it would erase, counted, under `would_erase`."""
    tenant_id = parse_tenant_id(tenant_id)
    tenant = await cp.registry.tenant(tenant_id)
    if tenant_id == PRIMARY_TENANT_ID or (tenant is not None and tenant.type is TenantType.PRIMARY):
        raise Refused("the primary tenant cannot be deleted: it is the platform itself")
    d1_row = await cp.replica.tenant(tenant_id)
    script = tenant.script_name if tenant else (d1_row or {}).get("script_name") or script_name_for(tenant_id)
    fingerprint = erasure_fingerprint(key, tenant_id)
    if tenant is None and d1_row is None and not await cp.scripts.exists(script):
        primary = await cp.registry.primary_tenant()
        if primary is not None and await cp.registry.has_audit(primary.tenant_id, "tenant.erased", fingerprint):
            return {"tenant": fingerprint, "erased": {}, "note": "already erased"}
        raise NotFound(f"no tenant {tenant_id!r} anywhere (Supabase, D1, namespace)")

    domains = await cp.registry.domains(tenant_id) if tenant else []
    d1_counts = {"d1.tenants": int(d1_row is not None), "d1.tenant_domains": len(await cp.replica.domains(tenant_id))}
    if tenant is not None:
        cp.reporter.step(f"supabase: set {tenant_id} status inactive (erasure starts)")
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

    erased: dict[str, int] = dict(d1_counts)  # the routing rows, unrouted above
    if cp.runtime_data is not None:
        cp.reporter.step(f"{cp.runtime_data.label}: erase {tenant_id}'s keys and objects")
        erased.update({f"runtime.{k}": v for k, v in (await cp.runtime_data.erase(tenant_id, script)).items()})
    tables = await cp.registry.tenant_tables()
    for table in tables:
        if table in CASCADE_ONLY:
            erased[table] = await cp.registry.count(table, tenant_id)
            continue
        present = await cp.registry.count(table, tenant_id) if cp.dry_run else None
        cp.reporter.step(f"supabase: erase {table}" + (f" ({present} row(s))" if present is not None else ""))
        deleted = await cp.registry.erase(table, tenant_id)
        erased[table] = present if present is not None else deleted
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
    return {"tenant": fingerprint, ("would_erase" if cp.dry_run else "erased"): erased}

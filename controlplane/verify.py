"""`verify`: do Supabase (the master), D1, KV and the namespace agree? `--repair` makes them.

Drift is reported per tenant as plain sentences an operator can act on. Repair is the
same convergence every action ends with (controlplane.lifecycle.ControlPlane.converge),
plus deploying a routed tenant's missing Worker and removing a removed tenant's Worker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from controlplane.lifecycle import ControlPlane
from controlplane.model import DomainRecord, TenantRecord
from shared.models import TenantStatus


@dataclass
class Drift:
    tenant_id: str
    problems: list[str] = field(default_factory=list)


def _d1_fields(tenant: TenantRecord) -> dict[str, Any]:
    return {
        "name": tenant.name,
        "type": tenant.type.value,
        "status": tenant.status.value,
        "subscription_tier": tenant.subscription_tier.value,
        "script_name": tenant.script_name,
    }


def _expected_kv(tenant: TenantRecord) -> dict[str, Any]:
    return {
        "tenant_id": tenant.tenant_id,
        "tenant_type": tenant.type.value,
        "tier": tenant.subscription_tier.value,
        "status": tenant.status.value,
        "script_name": tenant.script_name,
    }


@dataclass
class Snapshot:
    """Supabase and D1 read whole, once: a few reads however many tenants there are."""

    tenants: dict[str, TenantRecord]
    domains: dict[str, list[DomainRecord]]
    d1_tenants: dict[str, dict[str, Any]]
    d1_domains: dict[str, list[dict[str, Any]]]

    @classmethod
    async def take(cls, cp: ControlPlane) -> "Snapshot":
        tenants = {t.tenant_id: t for t in await cp.registry.tenants()}
        d1_tenants, d1_domains = await cp.replica.snapshot()
        return cls(tenants, await cp.registry.all_domains(), d1_tenants, d1_domains)


async def check_tenant(cp: ControlPlane, tenant_id: str, snap: Snapshot) -> Drift:
    drift = Drift(tenant_id)
    tenant = snap.tenants.get(tenant_id)
    row = snap.d1_tenants.get(tenant_id)
    routed = {d["domain"]: d for d in snap.d1_domains.get(tenant_id, [])}
    should_route = tenant is not None and tenant.status is not TenantStatus.INACTIVE
    master = {d.domain: d for d in snap.domains.get(tenant_id, [])} if tenant is not None else {}
    expected: dict[str, DomainRecord] = {}  # what D1 must route for this tenant

    if not should_route:
        if row is not None or routed:
            state = "not in Supabase" if tenant is None else "removed in Supabase"
            drift.problems.append(f"{state} but D1 still routes {', '.join(sorted(routed)) or 'its tenant row'}")
        if tenant is not None and await cp.scripts.exists(tenant.script_name):
            drift.problems.append(f"removed, but its Worker {tenant.script_name} is still in the namespace")
    else:
        assert tenant is not None
        if row is None:
            drift.problems.append("in Supabase but missing from D1 (not routed)")
        else:
            d1 = {k: row.get(k) for k in ("name", "type", "status", "subscription_tier", "script_name")}
            for key, want in _d1_fields(tenant).items():
                if d1.get(key) != want:
                    drift.problems.append(f"D1 {key} is {d1.get(key)!r}, Supabase says {want!r}")
        worker = await cp.scripts.exists(tenant.script_name)
        if not worker:
            drift.problems.append(f"its Worker {tenant.script_name} is missing from the namespace")
        # What D1 must route: the verified (or platform-assigned) names, and only while the Worker exists.
        expected = {d: rec for d, rec in master.items() if rec.routable(tenant)} if worker else {}
        for domain in sorted(set(expected) - set(routed)):
            drift.problems.append(f"domain {domain} is in Supabase but not routed in D1")
        for domain in sorted(set(routed) - set(expected)):
            if domain not in master:
                drift.problems.append(f"D1 routes {domain}, which Supabase does not list for this tenant")
            elif not master[domain].routable(tenant):
                drift.problems.append(f"D1 routes {domain}, whose ownership is not verified")
            else:
                drift.problems.append(f"D1 routes {domain}, but the tenant's Worker is missing")
        for domain in sorted(set(expected) & set(routed)):
            m, r = master[domain], routed[domain]
            if (m.domain_type, m.ssl_status, m.dns_configured) != (
                r["domain_type"],
                r["ssl_status"],
                bool(r["dns_configured"]),
            ):
                drift.problems.append(f"domain {domain}: D1 status differs from Supabase")
        for domain in sorted(d for d, rec in master.items() if rec.domain_type == "custom" and rec.routable(tenant)):
            # A verified custom domain needs its custom hostname; a pending one must not get one yet.
            if await cp.hostnames.find(domain) is None:
                drift.problems.append(f"custom domain {domain} has no custom hostname on Cloudflare")

    for host in sorted(set(master) | set(routed)):
        raw = await cp.cache.get(host)
        if raw is None:
            continue
        try:
            cached = json.loads(raw)
        except ValueError:
            drift.problems.append(f"KV entry for {host} is not valid JSON")
            continue
        if host in expected and tenant is not None:
            want = _expected_kv(tenant)
            if cached.get("missing") or any(cached.get(k) != v for k, v in want.items()):
                drift.problems.append(f"KV caches a stale route for {host}")
        elif not cached.get("missing"):
            drift.problems.append(f"KV still caches a route for {host}")
    return drift


async def verify(cp: ControlPlane, *, repair: bool = False) -> dict[str, Any]:
    snap = await Snapshot.take(cp)
    ids = set(snap.tenants) | set(snap.d1_tenants) | set(snap.d1_domains)
    drifts = [d for d in [await check_tenant(cp, tid, snap) for tid in sorted(ids)] if d.problems]
    report: dict[str, Any] = {
        "tenants_checked": len(ids),
        "consistent": not drifts,
        "drift": [{"tenant_id": d.tenant_id, "problems": d.problems} for d in drifts],
    }
    if repair and drifts:
        for d in drifts:
            await repair_tenant(cp, d.tenant_id)
            if d.tenant_id in snap.tenants:  # a tenant erased from Supabase has no chain to write to
                await cp.registry.audit(d.tenant_id, "tenant.repaired", d.tenant_id, {"problems": d.problems[:20]})
        if not cp.dry_run:
            snap = await Snapshot.take(cp)
            after = [x for x in [await check_tenant(cp, d.tenant_id, snap) for d in drifts] if x.problems]
            report["repaired"] = [d.tenant_id for d in drifts if d.tenant_id not in {a.tenant_id for a in after}]
            report["still_drifting"] = [{"tenant_id": a.tenant_id, "problems": a.problems} for a in after]
    return report


async def repair_tenant(cp: ControlPlane, tenant_id: str) -> None:
    tenant = await cp.registry.tenant(tenant_id)
    if tenant is not None and tenant.status is not TenantStatus.INACTIVE:
        for domain in await cp.registry.domains(tenant_id):
            await cp._ensure_hostname(domain, tenant)  # routable custom domains only
        if not await cp.scripts.exists(tenant.script_name):
            cp.reporter.step(f"deploy missing {tenant.script_name}")
            await cp._deploy(tenant, {})
            cp._changed()  # locally: wait until the Worker runs, before its hosts are routed
        await cp.converge(tenant_id)
        return
    await cp.converge(tenant_id)  # unroute first
    if tenant is not None and await cp.scripts.exists(tenant.script_name):
        cp.reporter.step(f"{cp.scripts.label}: remove {tenant.script_name}")
        await cp.scripts.remove(tenant.script_name)

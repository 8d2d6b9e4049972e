"""Operator actions on tenants, in the one safe order: Supabase → (script) → D1 → KV purge.

Supabase is the master; D1 is made to match it by `converge()`, which every action ends
with and `verify --repair` reuses. Every write is an upsert or a delete, so re-running an
action after a failure part-way completes it. A tenant's Worker is deployed before its
host is routed (no 502 window) and unrouted before its Worker is removed, so no host is
ever routed to a removed tenant.

How fast a change reaches traffic: on the local platform at once (KV purged through the
running host, and each command waits until the host has started or stopped the changed
tenant Workers; the local dispatcher's in-isolate route cache lives ROUTE_ISOLATE_TTL_SECONDS). On Cloudflare, the KV purge reaches
every edge within KV's propagation (cached reads up to 60 s), and each dispatcher isolate
re-reads its in-isolate cache within dispatcher.routing.ISOLATE_TTL_SECONDS (15 s): a
suspend or removal holds everywhere within about 75 s.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Protocol

from controlplane.edges import (
    Hostnames,
    RouteCache,
    TenantObjects,
    TenantRuntimeData,
    TenantScripts,
    require_platform_secrets,
)
from controlplane.errors import BackendError, ConfigError, ControlPlaneError, NotFound, Refused
from controlplane.meter import MeterControl
from controlplane.model import (
    NAMESPACE,
    PRIMARY_ZONE,
    DomainRecord,
    TenantRecord,
    domain_type_for,
    new_tenant,
    parse_domain,
    parse_tenant_id,
    parse_tier,
)
from controlplane.output import Reporter
from controlplane.registry import SupabaseRegistry
from controlplane.replica import RoutingReplica
from controlplane.wrangler import Runner, dispatcher_deploy_command, namespace_create_command, namespace_state
from dispatcher.routing import ISOLATE_TTL_SECONDS
from shared.domains import OwnershipResult, challenge_name, challenge_url, overlapping
from shared.models import TenantStatus, TenantType
from shared.tiers import UsageKind, plan_for

KV_PROPAGATION_SECONDS = 60
CHANGE_BOUND_SECONDS = KV_PROPAGATION_SECONDS + ISOLATE_TTL_SECONDS

# Checks that `token` is published for `domain` (shared.domains.check_ownership, built in wiring).
OwnershipChecker = Callable[[str, str], Awaitable[OwnershipResult]]


class SessionKeySink(Protocol):
    def read(self, name: str) -> str: ...
    def write(self, name: str, value: str) -> None: ...


@dataclass
class ControlPlane:
    registry: SupabaseRegistry
    replica: RoutingReplica
    cache: RouteCache
    scripts: TenantScripts
    hostnames: Hostnames
    reporter: Reporter
    local: bool = True
    dry_run: bool = False
    on_change: Callable[[], None] = lambda: None
    runner: Runner | None = None
    master_secret: str | None = None  # the dispatcher's CONTEXT_SIGNING_SECRET, uploaded with it (remote)
    # The dispatcher's other secrets (remote): Supabase for its health checks, the alert webhook's key.
    dispatcher_secrets: dict[str, str] = field(default_factory=dict)
    runtime_data: TenantRuntimeData | None = None  # AUTH_KV keys, Durable Object storage
    ownership: OwnershipChecker | None = None  # DNS TXT / HTTP token check of a pending custom domain
    meter: MeterControl | None = None  # tenants' UsageMeters through the running platform (backup/restore)
    objects: TenantObjects | None = None  # tenants' R2 objects (None: no bucket bound yet)
    # Remote: where a new tenant's session keyring is kept before it is deployed (Cloudflare never
    # gives a secret back; `keys rotate session --remote` reads it there). None: not kept.
    session_keys: SessionKeySink | None = None
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _namespace_ready: bool = False
    _deployed: set[str] = field(default_factory=set)  # scripts this run deployed (dry-run: planned)

    async def close(self) -> None:
        for close in self.closers:
            await close()

    # ---- shared pieces ---------------------------------------------------------------------
    async def require(self, tenant_id: str) -> TenantRecord:
        tenant = await self.registry.tenant(parse_tenant_id(tenant_id))
        if tenant is None:
            raise NotFound(f"no tenant {tenant_id!r} in the registry")
        return tenant

    async def worker_ready(self, tenant: TenantRecord) -> bool:
        """The tenant's Worker is in the namespace (or this run has just deployed it)."""
        return tenant.script_name in self._deployed or await self.scripts.exists(tenant.script_name)

    async def _deploy(self, tenant: TenantRecord, secrets_: Mapping[str, str]) -> None:
        self.reporter.step(f"{self.scripts.label}: deploy {tenant.script_name}")
        await self.scripts.deploy(tenant, secrets_)
        self._deployed.add(tenant.script_name)

    async def converge(self, tenant_id: str) -> list[str]:
        """Make D1 and KV match Supabase for one tenant; returns the hosts whose cache was purged.

        The one routing write: it routes only a tenant whose Worker exists, and only its
        routable domains (verified, or assigned by the platform); a pending custom domain
        stays unrouted until its ownership is proven."""
        tenant = await self.registry.tenant(tenant_id)
        routed = await self.replica.domains(tenant_id)
        hosts = {d["domain"] for d in routed}
        if tenant is None or tenant.status is TenantStatus.INACTIVE:
            self.reporter.step(f"d1: unroute {tenant_id}")
            await self.replica.drop_tenant(tenant_id)
            if tenant is not None:
                hosts |= {d.domain for d in await self.registry.domains(tenant_id)}
        else:
            domains = await self.registry.domains(tenant_id)
            hosts |= {d.domain for d in domains}
            routable = [d for d in domains if d.routable(tenant)]
            pending = [d.domain for d in domains if not d.routable(tenant)]
            if not await self.worker_ready(tenant):
                self.reporter.warn(
                    f"{tenant_id}: its Worker {tenant.script_name} is not deployed, so none of its "
                    f"hosts is routed (deploy it: tenants.py deploy {tenant_id})"
                )
                routable = []
            shown = ", ".join(d.domain for d in routable) or "no host"
            self.reporter.step(
                f"d1: route {tenant_id} ({tenant.status.value}) at {shown}"
                + (f"; not routed until ownership is verified: {', '.join(pending)}" if pending else "")
            )
            await self.replica.replace_tenant(tenant, routable)
        if hosts:
            self.reporter.step(f"kv: purge {len(hosts)} cached route(s)")
        for host in sorted(hosts):
            await self.cache.purge(host)
        self._changed()
        return sorted(hosts)

    def _changed(self) -> None:
        if self.dry_run:
            return
        self.on_change()

    def bound_note(self) -> str:
        if self.local:
            return "effective now on the local platform"
        return f"effective on Cloudflare within ~{CHANGE_BOUND_SECONDS} s (KV propagation + isolate cache)"

    async def _audit(self, tenant_id: str, action: str, details: dict[str, Any] | None = None) -> None:
        """One row in the tenant's audit chain for an operator action (actor system:tenant-cli;
        the run's request id ties the rows of one command together)."""
        await self.registry.audit(tenant_id, action, tenant_id, details or {})

    async def _check_domain_free(self, domain: str, tenant_id: str) -> None:
        """Nobody else holds it, nor a name under or above it (shared.domains.overlapping; the
        database refuses the same with CMD01). The operator may know who holds what; tenants
        never see these messages."""
        holder = await self.registry.domain_holder(domain) or await self.replica.domain_holder(domain)
        if holder is not None and holder != tenant_id:
            raise Refused(f"domain {domain} is already held by tenant {holder!r}")
        clash = overlapping(domain, tenant_id, await self.registry.held_names(), zone=PRIMARY_ZONE)
        if clash is not None:
            other, name = clash
            raise Refused(
                f"domain {domain} overlaps {name}, held by tenant {other!r}: a name equal to, under or "
                "above another tenant's domain cannot be added"
            )

    async def _ensure_hostname(self, domain: DomainRecord, tenant: TenantRecord) -> DomainRecord:
        """A routable custom domain needs a Cloudflare for SaaS custom hostname; record its SSL/DNS
        state. A pending one gets none: its name is not the tenant's until it is proven."""
        if domain.domain_type != "custom" or not domain.routable(tenant):
            return domain
        self.reporter.step(f"{self.hostnames.label}: ensure {domain.domain}")
        state = await self.hostnames.create(domain.domain)
        updated = domain.model_copy(update={"ssl_status": state.ssl_status, "dns_configured": state.dns_configured})
        if updated != domain:
            await self.registry.update_domain(
                domain.domain, {"ssl_status": updated.ssl_status, "dns_configured": updated.dns_configured}
            )
        return updated

    # ---- actions -----------------------------------------------------------------------------
    async def add(
        self,
        tenant_id: str,
        name: str,
        tenant_type: str,
        domain: str,
        tier: str,
        *,
        brand_name: str | None = None,
        deploy: bool = True,
    ) -> tuple[TenantRecord, bool]:
        """Register, deploy and route a tenant; returns it and whether anything had to change.

        An id that exists already: with other parameters the add is refused, naming the command
        that changes each (an add never changes a tenant silently); with the same ones it only
        completes what an earlier, interrupted add left undone, and is a no-op when nothing is."""
        tenant, primary_domain = new_tenant(tenant_id, name, tenant_type, domain, tier, brand_name)
        existing = await self.registry.tenant(tenant.tenant_id)
        if existing is not None:
            differences = add_differences(existing, tenant, brand_given=brand_name is not None)
            if differences:
                raise Refused(
                    f"tenant {tenant.tenant_id!r} already exists with other parameters; add changes "
                    "nothing that exists: " + "; ".join(differences)
                )
            self.reporter.step(
                f"{tenant.tenant_id} is already registered with these parameters: "
                "completing whatever an earlier add left undone",
                read=True,
            )
            if await self._add_complete(existing, deploy=deploy):
                self.reporter.step(
                    f"{tenant.tenant_id}: registered, deployed and routed already: nothing to do", read=True
                )
                return existing, False
            tenant = existing
        if tenant.type is TenantType.PRIMARY:
            primary = await self.registry.primary_tenant()
            if primary is not None and primary.tenant_id != tenant.tenant_id:
                raise Refused(f"there is already a primary tenant ({primary.tenant_id!r}); there can be only one")
        await self._check_domain_free(primary_domain.domain, tenant.tenant_id)
        if existing is None and deploy:
            # before any write: a Worker without them would refuse to start
            require_platform_secrets(self.scripts.missing_platform_secrets(), tenant.tenant_id)

        if existing is None:
            self.reporter.step(
                f"supabase: register {tenant.tenant_id} ({tenant.type.value}, {tenant.subscription_tier.value})"
            )
            await self.registry.upsert_tenant(tenant)
        current = {d.domain: d for d in await self.registry.domains(tenant.tenant_id)}
        if primary_domain.domain not in current:
            self.reporter.step(f"supabase: add domain {primary_domain.domain} to {tenant.tenant_id}")
            await self.registry.upsert_domain(primary_domain)
        await self._ensure_hostname(current.get(primary_domain.domain, primary_domain), tenant)
        if deploy and not (existing is not None and await self.scripts.exists(tenant.script_name)):
            self.ensure_namespace()
            # A new tenant's session key is made once here; re-runs keep it (users stay signed in).
            await self._deploy(tenant, {} if existing else {"SESSION_SECRET": self._new_session_secret(tenant)})
            self._changed()  # locally: wait until the Worker runs, before its host is routed
        await self.converge(tenant.tenant_id)
        if not await self.registry.has_audit(tenant.tenant_id, "tenant.added", tenant.tenant_id):
            await self._audit(
                tenant.tenant_id, "tenant.added", {"type": tenant.type.value, "tier": tenant.subscription_tier.value}
            )
        return tenant, True

    def _new_session_secret(self, tenant: TenantRecord) -> str:
        """A new tenant's SESSION_SECRET. Remote: one already in the operator's store (a re-run of an
        add that stopped after storing it) is reused; a new one is stored before it is deployed."""
        from controlplane.keys import session_secret_name

        name = session_secret_name(tenant.tenant_id)
        if self.session_keys is not None:
            kept = self.session_keys.read(name)
            if kept:
                return kept
        secret = secrets.token_urlsafe(48)
        if self.session_keys is not None and not self.dry_run:
            self.reporter.step(f"keyring: keep {name} in {getattr(self.session_keys, 'path', 'the store')}")
            self.session_keys.write(name, secret)
        return secret

    async def _add_complete(self, tenant: TenantRecord, *, deploy: bool) -> bool:
        """An existing tenant is as a finished add leaves it: its primary domain registered (and its
        custom hostname there), its Worker deployed (unless --no-deploy), D1 and KV in agreement,
        and its `tenant.added` audit row written."""
        from controlplane.verify import Snapshot, check_tenant

        domains = {d.domain for d in await self.registry.domains(tenant.tenant_id)}
        if tenant.domain not in domains:
            return False
        if deploy and not await self.scripts.exists(tenant.script_name):
            return False
        if not await self.registry.has_audit(tenant.tenant_id, "tenant.added", tenant.tenant_id):
            return False
        drift = await check_tenant(self, tenant.tenant_id, await Snapshot.take(self))
        return not [p for p in drift.problems if deploy or "Worker" not in p]

    async def rename(self, tenant_id: str, name: str) -> TenantRecord:
        """Change a tenant's display name (Supabase, then D1's copy of it)."""
        tenant = await self.require(tenant_id)
        new = name.strip() if isinstance(name, str) else ""
        if not new or len(new) > 200:
            raise Refused("tenant name must be 1 to 200 characters")
        if new == tenant.name:
            self.reporter.step(f"{tenant_id} is named {new!r} already: nothing to do", read=True)
            return tenant
        self.reporter.step(f"supabase: set {tenant_id} name {tenant.name!r} -> {new!r}")
        await self.registry.set_tenant(tenant.tenant_id, {"name": new})
        await self.converge(tenant.tenant_id)
        await self._audit(tenant.tenant_id, "tenant.renamed")  # names stay out of the trail
        return tenant.model_copy(update={"name": new})

    async def set_status(self, tenant_id: str, status: TenantStatus) -> TenantRecord:
        tenant = await self.require(tenant_id)
        if tenant.type is TenantType.PRIMARY and status is not TenantStatus.ACTIVE:
            raise Refused("the primary tenant cannot be suspended or removed: it is the platform itself")
        if status is TenantStatus.ACTIVE and tenant.status is TenantStatus.INACTIVE:
            return await self.restore(tenant)
        if tenant.status is TenantStatus.INACTIVE and status is TenantStatus.SUSPENDED:
            raise Refused(f"tenant {tenant_id!r} was removed; resume it first")
        self.reporter.step(f"supabase: set {tenant_id} status {tenant.status.value} -> {status.value}")
        await self.registry.set_tenant(tenant.tenant_id, {"status": status.value})
        await self.converge(tenant.tenant_id)
        if tenant.status is not status:
            await self._audit(
                tenant.tenant_id, f"tenant.{'suspended' if status is TenantStatus.SUSPENDED else 'resumed'}"
            )
        return tenant.model_copy(update={"status": status})

    async def restore(self, tenant: TenantRecord) -> TenantRecord:
        """Resume a removed tenant: active again, Worker redeployed, hosts routed again."""
        self.reporter.step(f"supabase: set {tenant.tenant_id} status inactive -> active")
        await self.registry.set_tenant(tenant.tenant_id, {"status": "active"})
        tenant = tenant.model_copy(update={"status": TenantStatus.ACTIVE})
        for domain in await self.registry.domains(tenant.tenant_id):
            await self._ensure_hostname(domain, tenant)
        await self._deploy(tenant, {})
        self._changed()  # locally: wait until the Worker runs, before its host is routed
        await self.converge(tenant.tenant_id)
        await self._audit(tenant.tenant_id, "tenant.resumed", {"from": "inactive"})
        return tenant

    async def remove(self, tenant_id: str) -> TenantRecord:
        """Take a tenant off the platform (data kept for export or delete): hosts answer 404."""
        tenant = await self.require(tenant_id)
        if tenant.type is TenantType.PRIMARY:
            raise Refused("the primary tenant cannot be removed: it is the platform itself")
        self.reporter.step(f"supabase: set {tenant_id} status {tenant.status.value} -> inactive")
        await self.registry.set_tenant(tenant.tenant_id, {"status": "inactive"})
        await self.converge(tenant.tenant_id)  # unrouted before the Worker goes
        for domain in await self.registry.domains(tenant.tenant_id):
            if domain.domain_type == "custom":
                self.reporter.step(f"{self.hostnames.label}: delete {domain.domain}")
                await self.hostnames.delete(domain.domain)
        self.reporter.step(f"{self.scripts.label}: remove {tenant.script_name}")
        await self.scripts.remove(tenant.script_name)
        self._changed()
        if tenant.status is not TenantStatus.INACTIVE:
            await self._audit(tenant.tenant_id, "tenant.removed")
        return tenant.model_copy(update={"status": TenantStatus.INACTIVE})

    async def set_tier(self, tenant_id: str, tier: str) -> TenantRecord:
        tenant = await self.require(tenant_id)
        new = parse_tier(tier)
        count = len(await self.registry.domains(tenant.tenant_id))
        allowed = plan_for(new).limit_for(UsageKind.DOMAINS)
        if count > allowed:
            raise Refused(
                f"tier {new.value} allows {allowed} domain(s) and {tenant_id} has {count}: remove domains first"
            )
        self.reporter.step(f"supabase: set {tenant_id} tier {tenant.subscription_tier.value} -> {new.value}")
        await self.registry.set_tenant(tenant.tenant_id, {"subscription_tier": new.value})
        await self.converge(tenant.tenant_id)
        if tenant.subscription_tier is not new:
            await self._audit(
                tenant.tenant_id, "tenant.tier_changed", {"from": tenant.subscription_tier.value, "to": new.value}
            )
        return tenant.model_copy(update={"subscription_tier": new})

    async def add_domain(self, tenant_id: str, raw_domain: str) -> DomainRecord:
        tenant = await self.require(tenant_id)
        if tenant.status is TenantStatus.INACTIVE:
            raise Refused(f"tenant {tenant_id!r} was removed; resume it before adding domains")
        domain = parse_domain(raw_domain)
        dtype = domain_type_for(tenant.type, domain)
        await self._check_domain_free(domain, tenant.tenant_id)
        current = {d.domain: d for d in await self.registry.domains(tenant.tenant_id)}
        if domain in current and not current[domain].routable(tenant):
            raise Refused(
                f"{domain} is {tenant_id}'s own claim, pending proof of ownership: the tenant publishes "
                f"TXT {challenge_name(domain)} (its token: `domains status {tenant_id} --json`), then run "
                f"`domains verify {tenant_id} {domain}`"
            )
        allowed = plan_for(tenant.subscription_tier).limit_for(UsageKind.DOMAINS)
        if domain not in current and len(current) + 1 > allowed:
            raise Refused(
                f"tier {tenant.subscription_tier.value} allows {allowed} domain(s) and {tenant_id} "
                f"has {len(current)}: upgrade with set-tier or remove a domain first"
            )
        # The operator assigns the name: verified by assignment (a tenant's own claim through the
        # API is pending until proven; `domains verify` proves one).
        record = current.get(domain) or DomainRecord(
            tenant_id=tenant.tenant_id,
            domain=domain,
            domain_type=dtype,
            ssl_status="pending" if dtype == "custom" else "active",
            dns_configured=dtype != "custom",
            verification_status="verified",
        )
        if domain not in current:
            self.reporter.step(f"supabase: add domain {domain} to {tenant_id}")
            await self.registry.upsert_domain(record)
        record = await self._ensure_hostname(record, tenant)
        await self.converge(tenant.tenant_id)
        if domain not in current:
            await self._audit(tenant.tenant_id, "domain.added", {"domain_type": dtype})
        return record

    async def remove_domain(self, tenant_id: str, raw_domain: str) -> None:
        tenant = await self.require(tenant_id)
        domain = parse_domain(raw_domain)
        if domain == tenant.domain:
            raise Refused(f"{domain} is {tenant_id}'s primary domain; remove the tenant instead")
        current = {d.domain: d for d in await self.registry.domains(tenant.tenant_id)}
        routed = {d["domain"] for d in await self.replica.domains(tenant.tenant_id)}
        if domain not in current and domain not in routed:
            raise NotFound(f"{domain} is not a domain of tenant {tenant_id!r}")
        self.reporter.step(f"supabase: remove domain {domain} from {tenant_id}")
        await self.registry.delete_domain(tenant.tenant_id, domain)
        await self.converge(tenant.tenant_id)  # unrouted before its certificate goes
        if domain_type_for(tenant.type, domain) == "custom":
            self.reporter.step(f"{self.hostnames.label}: delete {domain}")
            await self.hostnames.delete(domain)
        if domain in current:
            await self._audit(tenant.tenant_id, "domain.removed", {"domain_type": current[domain].domain_type})

    async def domains_status(self, tenant_id: str | None = None, *, refresh: bool = False) -> list[dict[str, Any]]:
        """Every domain's ownership, certificate and routing state. Read only, unless `refresh`:
        then pending domains are checked for their token again, newly verified ones get their
        custom hostname, SSL/DNS state from Cloudflare is written back, and a tenant whose
        state changed is converged (routed only if its Worker exists)."""
        tenants = [await self.require(tenant_id)] if tenant_id else await self.registry.tenants()
        out: list[dict[str, Any]] = []
        for tenant in tenants:
            active = tenant.status is not TenantStatus.INACTIVE
            changed = False
            rows: list[dict[str, Any]] = []
            for domain in await self.registry.domains(tenant.tenant_id):
                if refresh and active and not domain.routable(tenant):
                    domain, _ = await self._recheck(tenant, domain)
                    if domain.routable(tenant):
                        domain = await self._ensure_hostname(domain, tenant)
                        changed = True
                row: dict[str, Any] = {**domain.view(), "custom_hostname": None}
                if domain.domain_type == "custom" and active and domain.routable(tenant):
                    state = await self.hostnames.find(domain.domain)
                    if state is None:
                        row["custom_hostname"] = "missing"
                    else:
                        row["custom_hostname"] = f"{state.cloudflare_status}/{state.cloudflare_ssl_status}"
                        if refresh and (state.ssl_status, state.dns_configured) != (
                            domain.ssl_status,
                            domain.dns_configured,
                        ):
                            await self.registry.update_domain(
                                domain.domain, {"ssl_status": state.ssl_status, "dns_configured": state.dns_configured}
                            )
                            row.update(ssl_status=state.ssl_status, dns_configured=state.dns_configured)
                            changed = True
                if not domain.routable(tenant):
                    row["verify_with"] = {
                        "txt_name": challenge_name(domain.domain),
                        "http_url": challenge_url(domain.domain, domain.verification_token or ""),
                    }
                rows.append(row)
            if changed:
                await self.converge(tenant.tenant_id)
            routed = {d["domain"] for d in await self.replica.domains(tenant.tenant_id)}
            out += [{**r, "routed": r["domain"] in routed} for r in rows]
        return out

    async def _recheck(self, tenant: TenantRecord, domain: DomainRecord) -> tuple[DomainRecord, OwnershipResult]:
        """Check a pending domain's token (DNS TXT, then HTTP) and record the outcome in Supabase
        (the service role: the only role that may mark a domain verified)."""
        if self.ownership is None:
            raise ConfigError("no ownership checker is configured")
        result = await self.ownership(domain.domain, domain.verification_token or "")
        values: dict[str, Any] = {
            "verification_checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "verification_detail": result.detail[:300],
        }
        if result.verified:
            values["verification_status"] = "verified"
            self.reporter.step(f"supabase: mark {domain.domain} verified ({result.method})")
        await self.registry.record_verification(tenant.tenant_id, domain.domain, domain.verification_token, values)
        return domain.model_copy(update=values), result

    async def verify_domain(self, tenant_id: str, raw_domain: str) -> DomainRecord:
        """The operator's ownership check of one domain: verified, it gets its custom hostname
        and is routed (if the tenant's Worker exists); not yet, the command says what is missing."""
        tenant = await self.require(tenant_id)
        domain = parse_domain(raw_domain)
        record = next((d for d in await self.registry.domains(tenant.tenant_id) if d.domain == domain), None)
        if record is None:
            raise NotFound(f"{domain} is not a domain of tenant {tenant_id!r}")
        if record.routable(tenant):
            self.reporter.step(f"{domain} is verified already", read=True)
        else:
            record, result = await self._recheck(tenant, record)
            if not result.verified:
                if result.resolver_failed:
                    raise BackendError(f"{domain}: the ownership check could not run ({result.detail}); re-run it")
                raise Refused(
                    f"{domain} is not verified yet: {result.detail}. The tenant publishes TXT "
                    f"{challenge_name(domain)} = its token (or serves it at "
                    f"{challenge_url(domain, record.verification_token or '<token>')})"
                )
            await self._audit(tenant.tenant_id, "domain.verified", {"method": result.method, "by": "operator"})
        if tenant.status is not TenantStatus.INACTIVE:
            record = await self._ensure_hostname(record, tenant)
            await self.converge(tenant.tenant_id)
        return record

    def ensure_namespace(self) -> None:
        """Create the dispatch namespace `cmgsite-tenants` on Cloudflare when it is missing.

        "Not found" and "could not read" are different answers: only the first creates it. A read
        that fails otherwise (no network, a refused token) stops a real run with the reason; a dry
        run warns once and plans the create, since it cannot know."""
        if self.local or self.runner is None or self._namespace_ready:
            return
        self._namespace_ready = True
        state, detail = namespace_state(self.runner)
        if state == "exists":
            self.reporter.step(f"namespace {NAMESPACE} exists", read=True)
            return
        if state == "unreadable":
            if not self.dry_run:
                raise BackendError(
                    f"could not read the dispatch namespace {NAMESPACE} "
                    f"(`wrangler dispatch-namespace get` failed: {detail}); nothing was created: "
                    "check the network and CLOUDFLARE_API_TOKEN, then re-run"
                )
            self.reporter.warn(
                f"could not read the dispatch namespace {NAMESPACE} ({detail}): the plan assumes it is missing"
            )
        self.reporter.step(
            f"namespace: create {NAMESPACE} (not found)"
            if state == "missing"
            else f"namespace: create {NAMESPACE} if it is missing"
        )
        self.runner.run(namespace_create_command())

    def deploy_dispatcher(self) -> None:
        """Upload the dispatch Worker (after the namespace it binds exists), with its master secret if given."""
        if self.local or self.runner is None:
            self.reporter.step(
                "local platform: the dispatcher runs from dispatcher/ directly (nothing to upload)", read=True
            )
            return
        self.ensure_namespace()
        master_secret = self.master_secret
        if not master_secret:
            self.runner.run(dispatcher_deploy_command())
            return
        values = {"CONTEXT_SIGNING_SECRET": master_secret, **self.dispatcher_secrets}
        if self.dry_run:
            self.runner.run(
                dispatcher_deploy_command(secrets_file=f"<temporary JSON file with {', '.join(sorted(values))}>")
            )
            return
        fd, path = tempfile.mkstemp(prefix="cmgsite-secrets-", suffix=".json")  # 0600
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(values, f)
            self.runner.run(dispatcher_deploy_command(secrets_file=path))
        finally:
            os.unlink(path)

    async def deploy(self, tenant_id: str | None, secrets: dict[str, str] | None = None) -> list[str]:
        """(Re)deploy one tenant's Worker (None: every tenant that is not removed, stopping at the
        first failure; `deploy_all` goes on past one)."""
        self.ensure_namespace()
        tenants = [await self.require(tenant_id)] if tenant_id else await self.registry.tenants()
        done: list[str] = []
        for tenant in tenants:
            if tenant.status is TenantStatus.INACTIVE:
                if tenant_id:
                    raise Refused(f"tenant {tenant_id!r} was removed; resume it to deploy it again")
                continue
            await self._deploy_one(tenant, secrets or {})
            done.append(tenant.script_name)
        self._changed()
        return done

    async def deploy_all(self) -> dict[str, Any]:
        """Every tenant that is not removed, one after another with N/M progress; a tenant that
        fails is reported and the rest still go. The report lists deployed, failed and skipped."""
        self.ensure_namespace()
        tenants = await self.registry.tenants()
        live = [t for t in tenants if t.status is not TenantStatus.INACTIVE]
        report: dict[str, Any] = {
            "deployed": [],
            "failed": [],
            "skipped": [t.tenant_id for t in tenants if t.status is TenantStatus.INACTIVE],
        }
        for i, tenant in enumerate(live, 1):
            self.reporter.step(f"[{i}/{len(live)}] {tenant.tenant_id} ({tenant.script_name})", read=True)
            try:
                await self._deploy_one(tenant, {})
            except (Refused, ConfigError):
                raise  # the same for every tenant (a missing secret, a bad setting): stop at once
            except ControlPlaneError as exc:
                self.reporter.warn(f"[{i}/{len(live)}] {tenant.tenant_id} failed: {exc}")
                report["failed"].append({"tenant_id": tenant.tenant_id, "error": str(exc)})
                continue
            report["deployed"].append(tenant.script_name)
        self._changed()
        return report

    async def _deploy_one(self, tenant: TenantRecord, secrets: dict[str, str]) -> None:
        was_there = await self.scripts.exists(tenant.script_name)
        await self._deploy(tenant, secrets)
        if secrets:  # names only: a secret's value never reaches the audit trail
            await self._audit(tenant.tenant_id, "tenant.secrets_set", {"names": sorted(secrets)})
        else:
            await self._audit(
                tenant.tenant_id, "tenant.deployed", {"script_name": tenant.script_name, "first_deploy": not was_there}
            )
        if not was_there:  # its hosts were held back (never routed to a missing Worker): route them now
            if self.dry_run:
                self.reporter.plan(
                    "control plane",
                    f"converge {tenant.tenant_id} (route its hosts) once {tenant.script_name} is deployed",
                )
            else:
                self._changed()
                await self.converge(tenant.tenant_id)


def add_differences(existing: TenantRecord, wanted: TenantRecord, *, brand_given: bool) -> list[str]:
    """What an `add` of an existing id asks differently, each with the command that changes it."""
    tid = existing.tenant_id
    out: list[str] = []
    if existing.type is not wanted.type:
        out.append(
            f"type is {existing.type.value}, not {wanted.type.value} (a tenant's type does not change: "
            f"`remove {tid}` and `delete {tid}`, then add it again)"
        )
    if existing.domain != wanted.domain:
        out.append(
            f"domain is {existing.domain}, not {wanted.domain} (the primary domain does not change; "
            f"`add-domain {tid} {wanted.domain}` adds another host)"
        )
    if existing.subscription_tier is not wanted.subscription_tier:
        out.append(
            f"tier is {existing.subscription_tier.value}, not {wanted.subscription_tier.value} "
            f"(`set-tier {tid} {wanted.subscription_tier.value}`)"
        )
    if existing.name != wanted.name:
        out.append(f"name is {existing.name!r}, not {wanted.name!r} (`rename {tid} {shlex.quote(wanted.name)}`)")
    brand = existing.whitelabel_config.get("brand_name")
    if brand_given and brand != wanted.whitelabel_config.get("brand_name"):
        out.append(
            f"brand name is {brand!r}, not {wanted.whitelabel_config.get('brand_name')!r} "
            f"(`branding {tid} --brand-name {shlex.quote(str(wanted.whitelabel_config.get('brand_name')))}`)"
        )
    if existing.status is not TenantStatus.ACTIVE:
        out.append(f"status is {existing.status.value} (`resume {tid}`)")
    return out

"""The master registry in Supabase (`tenants`, `tenant_domains`, and the tenant's other rows).

The control plane talks to PostgREST with the service role (shared.supabase), the one
place besides usage and audit writes where bypassing RLS is the design.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any, Literal

from controlplane.audit_chain import AuditChainRow
from controlplane.errors import BackendError, Refused
from controlplane.model import DomainRecord, TenantRecord
from shared.outbound_http import HttpClient, HttpError
from shared.supabase import SupabaseClient, SupabaseError

# Tables holding a tenant's rows, children first (the order erasure deletes them in).
# Tables other issues add are found at run time from PostgREST's schema (tenant_tables()).
KNOWN_TENANT_TABLES = (
    "tenant_usage",
    "profiles",
    "tenant_domains",
    "integration_credentials",
    "tenant_data_keys",
    "audit_log",
    "tenants",
)
# SQLSTATEs of the domain rules in supabase/migrations/20261126232039_domain_rules.sql.
DOMAIN_QUOTA_SQLSTATE = "CMQ01"
DOMAIN_TAKEN_SQLSTATE = "CMD01"
# public.audit_restore() refusing an archived chain (supabase/migrations/20261126233134_audit_chain.sql).
AUDIT_RESTORE_SQLSTATE = "CMA01"
CLI_ACTOR = "system:tenant-cli"
CHAIN_PAGE = 1000
Outcome = Literal["success", "failure", "denied"]


def tenant_fingerprint(tenant_id: str) -> str:
    """What the erasure audit record keeps: proves which tenant was erased to whoever knows the id."""
    return "sha256:" + hashlib.sha256(f"cmgsite-tenant:{tenant_id}".encode()).hexdigest()[:32]


class SupabaseRegistry:
    """`dry_run`: writes are only printed (by the HTTP layer), and later reads in the same run
    see them through an in-memory overlay, so the printed D1 and KV steps are the real ones."""

    def __init__(
        self,
        http: HttpClient,
        *,
        url: str,
        service_role_key: str,
        dry_run: bool = False,
        read_http: HttpClient | None = None,
    ) -> None:
        self._http, self._url, self._key = http, url.rstrip("/"), service_role_key
        self._db = SupabaseClient.as_service_role(http, url=url, service_role_key=service_role_key)
        # Read-only RPCs are POSTs: under --dry-run they still go out (through the unwrapped client).
        self._reader = SupabaseClient.as_service_role(read_http or http, url=url, service_role_key=service_role_key)
        self._dry = dry_run
        # Every audit row this run writes carries it: one operator command, one request id.
        self.request_id = "cli-" + secrets.token_hex(8)
        self._tenants: dict[str, TenantRecord | None] = {}
        self._domains: dict[str, DomainRecord | None] = {}

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            return await coro
        except SupabaseError as exc:
            # The database's domain rules (supabase/migrations/20261126232039_domain_rules.sql): a refusal, not an outage. The CLI
            # checks first with a clearer message; these answer a race with another writer.
            if exc.code == DOMAIN_QUOTA_SQLSTATE:
                raise Refused(f"supabase refused to {what}: {exc.message}") from None
            if exc.code == DOMAIN_TAKEN_SQLSTATE:
                raise Refused(f"supabase refused to {what}: the domain overlaps a name another tenant holds") from None
            if exc.code == AUDIT_RESTORE_SQLSTATE:
                raise Refused(f"supabase refused to {what}: {exc.message}") from None
            raise BackendError(f"supabase {what} failed: {exc.status} {exc.code or ''} {exc.message}") from None
        except HttpError as exc:
            raise BackendError(f"supabase unreachable during {what}: {exc}") from None

    # ---- reads ----------------------------------------------------------------------------
    async def tenant(self, tenant_id: str) -> TenantRecord | None:
        if tenant_id in self._tenants:
            return self._tenants[tenant_id]
        rows = await self._call("read tenant", self._db.select("tenants", eq={"tenant_id": tenant_id}))
        return TenantRecord.model_validate(rows[0]) if rows else None

    async def tenants(self) -> list[TenantRecord]:
        rows = await self._call("list tenants", self._db.select("tenants", order="tenant_id.asc"))
        found: dict[str, TenantRecord | None] = {r["tenant_id"]: TenantRecord.model_validate(r) for r in rows}
        found.update(self._tenants)
        return [t for _, t in sorted(found.items()) if t is not None]

    async def domains(self, tenant_id: str) -> list[DomainRecord]:
        rows = await self._call(
            "read domains", self._db.select("tenant_domains", eq={"tenant_id": tenant_id}, order="domain.asc")
        )
        found: dict[str, DomainRecord | None] = {r["domain"]: DomainRecord.model_validate(r) for r in rows}
        found.update({k: v for k, v in self._domains.items() if v is None or v.tenant_id == tenant_id})
        return [d for _, d in sorted(found.items()) if d is not None and d.tenant_id == tenant_id]

    # ---- data keys (envelope encryption, controlplane.keys) ----------------------------------
    async def data_keys(self) -> list[dict[str, Any]]:
        """Every tenant's wrapped data keys (never a plaintext key: the database holds none)."""
        rows: list[dict[str, Any]] = []
        while True:
            page = await self._call(
                "read data keys",
                self._db.select(
                    "tenant_data_keys",
                    columns="tenant_id,key_id,wrapped_key,platform_key_id",
                    order=["tenant_id.asc", "key_id.asc"],
                    limit=1000,
                    offset=len(rows),
                ),
            )
            rows.extend(page)
            if len(page) < 1000:
                return rows

    async def rewrap_data_key(
        self, tenant_id: str, key_id: str, old_wrapped: str, wrapped: str, platform_key_id: str
    ) -> bool:
        """Replace one wrapped data key, only if nobody changed it meanwhile; True when replaced."""
        if self._dry:
            return True
        rows = await self._call(
            "re-wrap a data key",
            self._db.update(
                "tenant_data_keys",
                {
                    "wrapped_key": wrapped,
                    "platform_key_id": platform_key_id,
                    "rewrapped_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
                eq={"tenant_id": tenant_id, "key_id": key_id, "wrapped_key": old_wrapped},
                columns="key_id",
            ),
        )
        return bool(rows)

    async def accepts_token(self, token: str) -> bool:
        """Does the data API (PostgREST) accept a JWT signed with this key? (key rotation's probe)"""
        try:
            resp = await self._http.request(
                "GET",
                f"{self._url}/rest/v1/",
                headers={"apikey": self._key, "authorization": f"Bearer {token}"},
                timeout=5.0,
            )
        except HttpError:
            return False
        return resp.status == 200

    async def all_domains(self) -> dict[str, list[DomainRecord]]:
        rows = await self._call("read domains", self._db.select("tenant_domains", order="domain.asc"))
        out: dict[str, list[DomainRecord]] = {}
        for r in rows:
            d = DomainRecord.model_validate(r)
            out.setdefault(d.tenant_id, []).append(d)
        return out

    async def domain_holder(self, domain: str) -> str | None:
        """The tenant holding a domain (as a routed domain or a tenant's primary domain), if any."""
        if self._domains.get(domain) is not None:
            return self._domains[domain].tenant_id  # type: ignore[union-attr]
        rows = await self._call(
            "read domain", self._db.select("tenant_domains", columns="tenant_id", eq={"domain": domain})
        )
        if rows:
            return str(rows[0]["tenant_id"])
        rows = await self._call("read domain", self._db.select("tenants", columns="tenant_id", eq={"domain": domain}))
        return str(rows[0]["tenant_id"]) if rows else None

    async def held_names(self) -> list[tuple[str, str]]:
        """Every (tenant_id, name) on the platform: tenant_domains rows and each tenant's primary domain."""
        rows = await self._call("read domains", self._db.select("tenant_domains", columns="tenant_id,domain"))
        names = {(str(r["tenant_id"]), str(r["domain"])) for r in rows}
        names |= {(t.tenant_id, t.domain) for t in await self.tenants()}
        names |= {(d.tenant_id, d.domain) for d in self._domains.values() if d is not None}
        return sorted(names)

    async def primary_tenant(self) -> TenantRecord | None:
        rows = await self._call("read primary", self._db.select("tenants", eq={"type": "primary"}))
        return TenantRecord.model_validate(rows[0]) if rows else None

    # ---- writes (all idempotent) ---------------------------------------------------------
    async def upsert_tenant(self, tenant: TenantRecord) -> None:
        await self._call("write tenant", self._db.upsert("tenants", tenant.row(), on_conflict="tenant_id"))
        if self._dry:
            self._tenants[tenant.tenant_id] = tenant

    async def set_tenant(self, tenant_id: str, values: dict[str, Any]) -> None:
        await self._call("update tenant", self._db.update("tenants", values, eq={"tenant_id": tenant_id}))
        if self._dry and (current := await self.tenant(tenant_id)) is not None:
            self._tenants[tenant_id] = TenantRecord.model_validate({**current.row(), **values})

    async def upsert_domain(self, domain: DomainRecord) -> None:
        await self._call("write domain", self._db.upsert("tenant_domains", domain.row(), on_conflict="domain"))
        if self._dry:
            self._domains[domain.domain] = domain

    async def update_domain(self, domain: str, values: dict[str, Any]) -> None:
        await self._call("update domain", self._db.update("tenant_domains", values, eq={"domain": domain}))
        if self._dry:
            rows = await self._call("read domain", self._db.select("tenant_domains", eq={"domain": domain}))
            current = self._domains.get(domain) or (DomainRecord.model_validate(rows[0]) if rows else None)
            if current is not None:
                self._domains[domain] = DomainRecord.model_validate({**current.view(), **values})

    async def record_verification(self, tenant_id: str, domain: str, token: str | None, values: dict[str, Any]) -> None:
        """Write the outcome of an ownership check, only onto the pending row whose token was checked
        (a row removed or re-added meanwhile is left alone)."""
        await self._call(
            "record verification",
            self._db.update(
                "tenant_domains",
                values,
                eq={
                    "tenant_id": tenant_id,
                    "domain": domain,
                    "verification_status": "pending",
                    "verification_token": token,
                },
                columns="domain",
            ),
        )
        if self._dry:
            current = self._domains.get(domain)
            if current is None:
                rows = await self._call("read domain", self._db.select("tenant_domains", eq={"domain": domain}))
                current = DomainRecord.model_validate(rows[0]) if rows else None
            if current is not None:
                self._domains[domain] = DomainRecord.model_validate({**current.view(), **values})

    async def delete_domain(self, tenant_id: str, domain: str) -> None:
        await self._call(
            "delete domain", self._db.delete("tenant_domains", eq={"tenant_id": tenant_id, "domain": domain})
        )
        if self._dry:
            self._domains[domain] = None

    async def audit(
        self, tenant_id: str, action: str, target: str | None, details: dict[str, Any], *, outcome: Outcome = "success"
    ) -> None:
        """One row in the tenant's chain (the database links and hashes it)."""
        row = {
            "tenant_id": tenant_id,
            "actor": CLI_ACTOR,
            "action": action,
            "target": target,
            "details": details,
            "request_id": self.request_id,
            "outcome": outcome,
        }
        await self._call("write audit", self._db.insert("audit_log", row, columns="id"))

    async def audit_chain(self, tenant_id: str) -> list[AuditChainRow]:
        """The tenant's whole chain in seq order, with the exact text the database hashed."""
        rows: list[AuditChainRow] = []
        after = 0
        while True:
            page = await self._call(
                "read audit chain",
                self._reader.rpc(
                    "audit_chain_rows", {"p_tenant_id": tenant_id, "p_after_seq": after, "p_limit": CHAIN_PAGE}
                ),
            )
            if not isinstance(page, list):
                raise BackendError("supabase read audit chain: unexpected answer")
            rows += [AuditChainRow.model_validate(r) for r in page]
            if len(page) < CHAIN_PAGE:
                return rows
            after = rows[-1].seq

    async def audited_tenants(self) -> list[str]:
        """Every tenant id that has a registry row (chains of erased tenants are gone with them)."""
        return [t.tenant_id for t in await self.tenants()]

    async def restore_audit(self, tenant_id: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        result = await self._call(
            "restore the audit trail", self._db.rpc("audit_restore", {"p_tenant_id": tenant_id, "p_rows": rows})
        )
        return result if isinstance(result, dict) else {}

    async def record_usage(self, rows: list[dict[str, Any]]) -> None:
        """tenant_usage through public.record_usage(): a counter never goes down."""
        if rows:
            await self._call("restore usage", self._db.rpc("record_usage", {"usage_rows": rows}))

    async def upsert_rows(self, table: str, rows: list[dict[str, Any]], on_conflict: str) -> None:
        if rows:
            await self._call(
                f"restore {table}", self._db.upsert(table, rows, on_conflict=on_conflict, columns=on_conflict)
            )

    async def select_rows(self, table: str, eq: dict[str, Any], columns: str = "*") -> list[dict[str, Any]]:
        return await self._call(f"read {table}", self._db.select(table, columns=columns, eq=eq))

    async def has_audit(self, tenant_id: str, action: str, target: str) -> bool:
        rows = await self._call(
            "read audit",
            self._db.select(
                "audit_log", columns="id", eq={"tenant_id": tenant_id, "action": action, "target": target}, limit=1
            ),
        )
        return bool(rows)

    # ---- a tenant's data (export and erasure) --------------------------------------------
    async def _definitions(self) -> dict[str, Any]:
        """PostgREST's OpenAPI `definitions` (what the service role sees), {} if unreadable."""
        try:
            resp = await self._http.request(
                "GET",
                self._url + "/rest/v1/",
                headers={
                    "apikey": self._key,
                    "authorization": f"Bearer {self._key}",
                    "accept": "application/openapi+json",
                },
            )
            spec = resp.json() if resp.ok else None
        except (HttpError, ValueError):
            return {}
        definitions = spec.get("definitions") if isinstance(spec, dict) else None
        return definitions if isinstance(definitions, dict) else {}

    async def discovered_tables(self) -> set[str]:
        """Tables with a tenant_id column, from PostgREST's OpenAPI root (what the service role sees)."""
        return {
            table
            for table, d in (await self._definitions()).items()
            if isinstance(d, dict) and "tenant_id" in (d.get("properties") or {})
        }

    async def primary_keys(self) -> dict[str, list[str]]:
        """Each exposed table's primary key columns (PostgREST marks them `<pk/>` in the schema)."""
        out: dict[str, list[str]] = {}
        for table, d in (await self._definitions()).items():
            props = (d.get("properties") or {}) if isinstance(d, dict) else {}
            pk = [c for c, p in props.items() if isinstance(p, dict) and "<pk/>" in str(p.get("description") or "")]
            if pk:
                out[table] = pk
        return out

    async def tenant_tables(self) -> list[str]:
        """Every table holding a tenant's rows, children before `tenants`."""
        found = await self.discovered_tables()
        ordered = [t for t in KNOWN_TENANT_TABLES if t != "tenants"]
        ordered += sorted(t for t in found if t not in KNOWN_TENANT_TABLES)
        return ordered + ["tenants"]

    async def rows_of(self, table: str, tenant_id: str) -> list[dict[str, Any]]:
        order = "seq.asc" if table == "audit_log" else None  # the trail in its chain's order
        return await self._call(f"export {table}", self._db.select(table, eq={"tenant_id": tenant_id}, order=order))

    async def erase(self, table: str, tenant_id: str) -> int:
        rows = await self._call(
            f"erase {table}", self._db.delete(table, eq={"tenant_id": tenant_id}, columns="tenant_id")
        )
        return len(rows)

    async def count(self, table: str, tenant_id: str) -> int:
        rows = await self._call(
            f"count {table}", self._db.select(table, columns="tenant_id", eq={"tenant_id": tenant_id})
        )
        return len(rows)

"""The routing replica in D1: what the dispatcher reads (tenants ⋈ tenant_domains).

Statements are built once as (sql, params) with `?N` placeholders and always run with the
values bound, never quoted into the SQL: on the local D1 file (the SQLite database
`wrangler d1 ... --local` uses) through localrt.d1, and on Cloudflare through D1's query API
(`client.d1.database.query(..., params=[...])`, controlplane.cloudflare). Each write is one
batch: all of it lands or none of it. `render()` quotes values only to *print* a local
dry-run's SQL; a remote dry-run prints the API request itself (controlplane.dryrun).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from controlplane.errors import BackendError
from controlplane.model import DomainRecord, TenantRecord
from controlplane.output import Reporter
from controlplane.wrangler import D1_NAME

if TYPE_CHECKING:
    from controlplane.cloudflare import CloudflareApi

Statement = tuple[str, tuple[Any, ...]]
_PLACEHOLDER = re.compile(r"\?(\d+)")

UPSERT_TENANT = (
    "INSERT INTO tenants (tenant_id, name, type, status, subscription_tier, script_name, whitelabel_config)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(tenant_id) DO UPDATE SET name = excluded.name,"
    " type = excluded.type, status = excluded.status, subscription_tier = excluded.subscription_tier,"
    " script_name = excluded.script_name,"
    " whitelabel_config = excluded.whitelabel_config, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
)
UPSERT_DOMAIN = (
    "INSERT INTO tenant_domains (domain, tenant_id, domain_type, ssl_status, dns_configured)"
    " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(domain) DO UPDATE SET tenant_id = excluded.tenant_id,"
    " domain_type = excluded.domain_type, ssl_status = excluded.ssl_status,"
    " dns_configured = excluded.dns_configured, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
)


def sql_literal(value: Any) -> str:
    """A SQLite literal: strings single-quoted with quotes doubled (SQLite has no backslash escapes)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("NUL byte in SQL value")
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"unsupported SQL value type {type(value).__name__}")


def render(statement: Statement) -> str:
    sql, params = statement
    return _PLACEHOLDER.sub(lambda m: sql_literal(params[int(m.group(1)) - 1]), sql)


class D1Executor(Protocol):
    async def query(self, statement: Statement) -> list[dict[str, Any]]: ...
    async def batch(self, statements: Sequence[Statement]) -> None: ...


class LocalD1:
    """The local D1 file through localrt.d1.D1Database (bound parameters, one transaction)."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self.label = f"d1 (local {getattr(db, 'path', '')})"

    async def query(self, statement: Statement) -> list[dict[str, Any]]:
        sql, params = statement
        try:
            return list((await self._db.prepare(sql).bind(*params).all())["results"])
        except Exception as exc:  # JsException("D1_ERROR: ...") from the local runtime
            raise BackendError(f"D1 read failed: {exc}") from None

    async def batch(self, statements: Sequence[Statement]) -> None:
        try:
            await self._db.batch([self._db.prepare(sql).bind(*params) for sql, params in statements])
        except Exception as exc:
            raise BackendError(f"D1 write failed: {exc}") from None


def bind_params(params: Sequence[Any]) -> list[str]:
    """Values for D1's query API, whose `params` are strings: SQLite's column affinity stores a
    bound "1" in an INTEGER column as 1 (dns_configured), and TEXT as given."""
    out: list[str] = []
    for value in params:
        if value is None or not isinstance(value, (str, int)):
            raise TypeError(f"D1's query API binds strings; cannot bind {type(value).__name__}")
        out.append(("1" if value else "0") if isinstance(value, bool) else str(value))
    return out


class ApiD1:
    """D1 on Cloudflare through its query API (the SDK), with bound parameters; a write is one
    request holding the whole batch."""

    def __init__(self, api: "CloudflareApi", database_id: str) -> None:
        self._api, self.database_id = api, database_id
        self.label = f"d1 (remote {D1_NAME} {database_id})"

    async def query(self, statement: Statement) -> list[dict[str, Any]]:
        sql, params = statement
        return await self._api.d1_query(self.database_id, sql, bind_params(params))

    async def batch(self, statements: Sequence[Statement]) -> None:
        await self._api.d1_batch(self.database_id, [(sql, bind_params(params)) for sql, params in statements])


class DryRunD1:
    """Local dry-run: reads go to the D1 file; writes are printed as the SQL that would run.
    (Remote dry-run needs no wrapper: the API's transport prints the request it would send.)"""

    def __init__(self, inner: D1Executor, reporter: Reporter) -> None:
        self._inner, self._reporter = inner, reporter

    async def query(self, statement: Statement) -> list[dict[str, Any]]:
        return await self._inner.query(statement)

    async def batch(self, statements: Sequence[Statement]) -> None:
        label = getattr(self._inner, "label", "d1")
        for s in statements:
            self._reporter.plan(label, render(s))


class RoutingReplica:
    """The D1 side of every lifecycle step."""

    def __init__(self, executor: D1Executor) -> None:
        self.executor = executor

    async def tenant(self, tenant_id: str) -> dict[str, Any] | None:
        rows = await self.executor.query(
            (
                "SELECT tenant_id, name, type, status, subscription_tier, script_name, whitelabel_config"
                " FROM tenants WHERE tenant_id = ?1",
                (tenant_id,),
            )
        )
        return rows[0] if rows else None

    async def domains(self, tenant_id: str) -> list[dict[str, Any]]:
        return await self.executor.query(
            (
                "SELECT domain, tenant_id, domain_type, ssl_status, dns_configured FROM tenant_domains"
                " WHERE tenant_id = ?1 ORDER BY domain",
                (tenant_id,),
            )
        )

    async def snapshot(self) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        """Every tenant row and every domain row in two reads (on Cloudflare: two API requests)."""
        tenants = {
            r["tenant_id"]: r
            for r in await self.executor.query(
                (
                    "SELECT tenant_id, name, type, status, subscription_tier, script_name, whitelabel_config FROM tenants"
                    " ORDER BY tenant_id",
                    (),
                )
            )
        }
        domains: dict[str, list[dict[str, Any]]] = {}
        for r in await self.executor.query(
            (
                "SELECT domain, tenant_id, domain_type, ssl_status, dns_configured FROM tenant_domains"
                " ORDER BY tenant_id, domain",
                (),
            )
        ):
            domains.setdefault(r["tenant_id"], []).append(r)
        return tenants, domains

    async def domain_holder(self, domain: str) -> str | None:
        rows = await self.executor.query(("SELECT tenant_id FROM tenant_domains WHERE domain = ?1", (domain,)))
        return rows[0]["tenant_id"] if rows else None

    async def replace_tenant(self, tenant: TenantRecord, domains: Sequence[DomainRecord]) -> None:
        """Make D1 hold exactly this tenant row and these domains for it (one batch)."""
        names = [d.domain for d in domains]
        statements: list[Statement] = [
            (
                UPSERT_TENANT,
                (
                    tenant.tenant_id,
                    tenant.name,
                    tenant.type.value,
                    tenant.status.value,
                    tenant.subscription_tier.value,
                    tenant.script_name,
                    json.dumps(tenant.whitelabel_config, sort_keys=True, separators=(",", ":")),
                ),
            )
        ]
        marks = ", ".join(f"?{i + 2}" for i in range(len(names)))
        stale = "DELETE FROM tenant_domains WHERE tenant_id = ?1" + (f" AND domain NOT IN ({marks})" if names else "")
        statements.append((stale, (tenant.tenant_id, *names)))
        for d in domains:
            statements.append(
                (UPSERT_DOMAIN, (d.domain, d.tenant_id, d.domain_type, d.ssl_status, 1 if d.dns_configured else 0))
            )
        await self.executor.batch(statements)

    async def drop_tenant(self, tenant_id: str) -> None:
        """Unroute a tenant: its domains and its row leave D1 (one batch)."""
        await self.executor.batch(
            [
                ("DELETE FROM tenant_domains WHERE tenant_id = ?1", (tenant_id,)),
                ("DELETE FROM tenants WHERE tenant_id = ?1", (tenant_id,)),
            ]
        )

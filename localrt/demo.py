"""The three demo tenants the run command seeds, and their local secrets."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localrt.d1 import D1Database
from localrt.devvars import read_dev_vars, write_dev_vars
from localrt.namespace import NamespaceRegistry, ScriptSpec
from shared.context import derive_tenant_keyring
from shared.keys import Key, Keyring, new_secret
from shared.platform import PLATFORM_ZONE, PRIMARY_TENANT_ID


@dataclass(frozen=True)
class DemoTenant:
    tenant_id: str
    name: str
    type: str
    tier: str
    script_name: str
    domain: str
    domain_type: str
    brand_name: str


DEMO_TENANTS = (
    DemoTenant(
        PRIMARY_TENANT_ID,
        "Cozyartz Media Group",
        "primary",
        "enterprise",
        "cmgsite-primary-tenant",
        PLATFORM_ZONE,
        "primary",
        "Cozyartz Media Group",
    ),
    DemoTenant(
        "partner1",
        "Partner One",
        "partner-subdomain",
        "growth",
        "cmgsite-partner-tenant",
        f"partner1.{PLATFORM_ZONE}",
        "subdomain",
        "Partner One",
    ),
    DemoTenant(
        "partner-seo",
        "Partner SEO",
        "custom-domain",
        "starter",
        "cmgsite-custom-tenant",
        "partner-seo.com",
        "custom",
        "Partner SEO",
    ),
)


def ensure_dispatcher_secret(path: Path) -> str:
    """Create the master context secret once (the dispatcher's .dev.vars); keep it across runs."""
    values = read_dev_vars(path)
    if not values.get("CONTEXT_SIGNING_SECRET"):
        values["CONTEXT_SIGNING_SECRET"] = secrets.token_urlsafe(48)
        write_dev_vars(path, values)
    return values["CONTEXT_SIGNING_SECRET"]


# What the dispatcher needs of Supabase: its cron handler records health checks and alerts there.
DISPATCHER_SUPABASE = ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY")


def set_dispatcher_supabase(path: Path, supabase: dict[str, str]) -> None:
    """Point the dispatcher's secrets at this run's Supabase (kept with its master secret)."""
    values = read_dev_vars(path)
    wanted = {k: supabase[k] for k in DISPATCHER_SUPABASE if supabase.get(k)}
    if wanted and any(values.get(k) != v for k, v in wanted.items()):
        write_dev_vars(path, {**values, **wanted})


def ensure_platform_keys(path: Path) -> dict[str, str]:
    """The platform's keyrings every tenant Worker gets (`.local/secrets/platform.dev.vars`):
    PLATFORM_DATA_KEYS, which wraps the tenants' data keys, made once (`keys rotate data` changes it)."""
    values = read_dev_vars(path)
    if not values.get("PLATFORM_DATA_KEYS"):
        values["PLATFORM_DATA_KEYS"] = Keyring((Key("p1", new_secret()),)).format()
        write_dev_vars(path, values)
    return {"PLATFORM_DATA_KEYS": values["PLATFORM_DATA_KEYS"]}


async def upsert_route(d1: D1Database, t: DemoTenant, status: str = "active") -> None:
    config = json.dumps({"brand_name": t.brand_name})
    await (
        d1.prepare(
            "INSERT INTO tenants (tenant_id, name, type, status, subscription_tier, script_name, whitelabel_config)"
            " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            " ON CONFLICT(tenant_id) DO UPDATE SET name = excluded.name, type = excluded.type, status = excluded.status,"
            " subscription_tier = excluded.subscription_tier, script_name = excluded.script_name, whitelabel_config = excluded.whitelabel_config,"
            " updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
        )
        .bind(t.tenant_id, t.name, t.type, status, t.tier, t.script_name, config)
        .run()
    )
    await (
        d1.prepare(
            "INSERT INTO tenant_domains (domain, tenant_id, domain_type, ssl_status, dns_configured) VALUES (?1, ?2, ?3, 'active', 1)"
            " ON CONFLICT(domain) DO UPDATE SET tenant_id = excluded.tenant_id, domain_type = excluded.domain_type"
        )
        .bind(t.domain, t.tenant_id, t.domain_type)
        .run()
    )


def deploy_script(
    registry: NamespaceRegistry,
    t: DemoTenant,
    master_secret: str,
    extra_secrets: dict[str, str] | None = None,
    extra_vars: dict[str, str] | None = None,
) -> None:
    """Register the tenant's script in the local namespace with its vars and secrets."""
    values = registry.secrets_of(t.script_name)
    values["TENANT_CONTEXT_KEY"] = derive_tenant_keyring(master_secret, t.tenant_id).format()
    values.setdefault("SESSION_SECRET", secrets.token_urlsafe(48))  # per tenant, kept across runs
    values.update(extra_secrets or {})
    vars_: dict[str, Any] = {"TENANT_ID": t.tenant_id}
    vars_.update(extra_vars or {})
    registry.deploy(ScriptSpec(t.script_name, vars=vars_), secrets=values)


async def seed_demo(
    d1: D1Database,
    registry: NamespaceRegistry,
    dispatcher_secrets: Path,
    *,
    extra_secrets: dict[str, str] | None = None,
    extra_vars: dict[str, str] | None = None,
) -> None:
    master = ensure_dispatcher_secret(dispatcher_secrets)
    set_dispatcher_supabase(dispatcher_secrets, extra_secrets or {})
    keys = ensure_platform_keys(dispatcher_secrets.parent / "platform.dev.vars")
    for t in DEMO_TENANTS:
        await upsert_route(d1, t)
        deploy_script(registry, t, master, {**keys, **(extra_secrets or {})}, extra_vars)

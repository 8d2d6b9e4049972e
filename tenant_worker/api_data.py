"""The tenant's data endpoints. Every call runs as the signed-in user through RLS.

    GET   /api/tenant            any member: the tenant's record and branding
    GET   /api/domains           any member: the tenant's domains (POST/DELETE: api_usage)
    GET   /api/profiles          admin: the tenant's profiles
    PATCH /api/profiles/<id>     admin: grant client/admin inside this tenant (never super_admin)
    GET   /api/audit             admin: the tenant's audit trail, newest first
    GET   /api/platform/tenants  super_admin on the primary tenant: every tenant, status and tier
"""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, ValidationError

from shared.models import TenantType
from tenant_worker.auth_store import AuthStore, AuthStoreMissing
from tenant_worker.http import ApiError, Call, Reply, RequestBody, Route, json_reply
from tenant_worker.principal import Role, require
from tenant_worker.supabase_access import guarded, tenant_db, write_audit

_WHOLE = re.compile(r"[0-9]{1,6}")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TENANT_COLUMNS = "tenant_id,name,domain,type,subscription_tier,status,whitelabel_config"
PROFILE_COLUMNS = "id,tenant_id,tenant_role,email,display_name,created_at,updated_at"
DOMAIN_COLUMNS = "domain,domain_type,ssl_status,dns_configured,created_at"
AUDIT_COLUMNS = "id,actor,action,target,at,details"
PLATFORM_COLUMNS = "tenant_id,name,domain,type,subscription_tier,status,created_at"


def _page(call: Call, default: int = 50, most: int = 200) -> tuple[int, int]:
    raw_limit, raw_offset = call.arg("limit") or str(default), call.arg("offset") or "0"
    if not _WHOLE.fullmatch(raw_limit) or not _WHOLE.fullmatch(raw_offset):  # int() takes " 5", "1_0", "٣"
        raise ApiError(400, "invalid_query", "limit and offset must be whole numbers.")
    limit, offset = int(raw_limit), int(raw_offset)
    if not 1 <= limit <= most or not 0 <= offset <= 100_000:
        raise ApiError(400, "invalid_query", f"limit must be 1..{most} and offset 0..100000.")
    return limit, offset


async def get_tenant(call: Call) -> Reply:
    principal = require(call)
    rows = await guarded(tenant_db(call, principal).select(
        "tenants", columns=TENANT_COLUMNS, eq={"tenant_id": call.tenant.tenant_id}, limit=1))
    if not rows:
        raise ApiError(404, "not_found", "This tenant has no record yet.")
    row = rows[0]
    return json_reply({"tenant": {k: v for k, v in row.items() if k != "whitelabel_config"},
                       "branding": row.get("whitelabel_config") or {}})


async def list_domains(call: Call) -> Reply:
    principal = require(call)
    rows = await guarded(tenant_db(call, principal).select(
        "tenant_domains", columns=DOMAIN_COLUMNS, eq={"tenant_id": call.tenant.tenant_id}, order="domain.asc"))
    return json_reply({"domains": rows})


async def list_profiles(call: Call) -> Reply:
    principal = require(call, Role.ADMIN)
    limit, offset = _page(call)
    rows = await guarded(tenant_db(call, principal).select(
        "profiles", columns=PROFILE_COLUMNS, eq={"tenant_id": call.tenant.tenant_id},
        order=["created_at.asc", "id.asc"], limit=limit, offset=offset))
    return json_reply({"profiles": rows, "limit": limit, "offset": offset})


class ProfilePatch(RequestBody):
    """What a tenant admin may change on a profile of their tenant."""

    tenant_role: Literal["client", "admin", "super_admin"] | None = None
    display_name: str | None = Field(default=None, min_length=1, max_length=200)


async def patch_profile(call: Call) -> Reply:
    principal = require(call, Role.ADMIN)
    target = call.params["id"].lower()
    if not _UUID.match(target):
        raise ApiError(400, "invalid_id", "The profile id must be a UUID.")
    try:
        patch = ProfilePatch.model_validate(await call.json())
    except ValidationError as exc:
        raise ApiError(400, "invalid_body", "Send {\"tenant_role\": \"client\"|\"admin\"} and/or a display_name.",
                       extra={"fields": sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]})}) from None
    values: dict[str, Any] = patch.model_dump(exclude_none=True)
    if not values:
        raise ApiError(400, "invalid_body", "Nothing to change.")
    if values.get("tenant_role") == "super_admin":
        # Only the database's super_admin may grant it, and only in the primary tenant.
        if principal.role is not Role.SUPER_ADMIN or call.tenant.tenant_type is not TenantType.PRIMARY:
            raise ApiError(403, "forbidden", "Only a platform super admin can grant super_admin.")
    if "tenant_role" in values and target == principal.user_id:
        raise ApiError(403, "forbidden", "You cannot change your own role.")
    rows = await guarded(tenant_db(call, principal).update(
        "profiles", values, eq={"id": target, "tenant_id": call.tenant.tenant_id}, columns=PROFILE_COLUMNS))
    if not rows:  # RLS hides other tenants' rows: the same answer as a missing one
        raise ApiError(404, "not_found", "No such profile in this tenant.")
    if "tenant_role" in values:
        await _after_role_change(call, principal.user_id, target, values["tenant_role"])
    return json_reply({"profile": rows[0]})


async def _after_role_change(call: Call, actor: str, target: str, role: str) -> None:
    try:  # the target's live sessions rotate to the new role on their next request
        await AuthStore.of(call.env, call.tenant.tenant_id).set_epoch(target, "role", call.services.clock())
    except AuthStoreMissing:
        pass
    await guarded(write_audit(call, actor=actor, action="profile.role_changed", target=target,
                              details={"tenant_role": role}))


async def list_audit(call: Call) -> Reply:
    principal = require(call, Role.ADMIN)
    limit, offset = _page(call)
    rows = await guarded(tenant_db(call, principal).select(
        "audit_log", columns=AUDIT_COLUMNS, eq={"tenant_id": call.tenant.tenant_id},
        order=["at.desc", "id.desc"], limit=limit, offset=offset))
    return json_reply({"entries": rows, "limit": limit, "offset": offset})


async def platform_tenants(call: Call) -> Reply:
    if call.tenant.tenant_type is not TenantType.PRIMARY:
        raise ApiError(404, "not_found", "There is nothing here.")  # platform endpoints exist on the primary only
    principal = require(call, Role.SUPER_ADMIN)
    limit, offset = _page(call, 100, 1000)
    rows = await guarded(tenant_db(call, principal).select(
        "tenants", columns=PLATFORM_COLUMNS, order="tenant_id.asc", limit=limit, offset=offset))
    return json_reply({"tenants": rows, "limit": limit, "offset": offset})


ROUTES = [
    Route("GET", "/api/tenant", get_tenant, "tenant.get"),
    Route("GET", "/api/domains", list_domains, "domains.list"),
    Route("GET", "/api/profiles", list_profiles, "profiles.list"),
    Route("PATCH", "/api/profiles/<id>", patch_profile, "profiles.patch"),
    Route("GET", "/api/audit", list_audit, "audit.list"),
    Route("GET", "/api/platform/tenants", platform_tenants, "platform.tenants"),
]

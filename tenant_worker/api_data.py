"""The tenant's data endpoints. Every call runs as the signed-in user through RLS.

    GET   /api/tenant            any member: the tenant's record and branding
    GET   /api/domains           any member: the tenant's domains (POST/DELETE: api_usage)
    GET   /api/profiles          admin: the tenant's profiles
    PATCH /api/profiles/<id>     admin: grant client/admin inside this tenant (never super_admin)
    GET   /api/audit             admin: the tenant's audit trail, newest first (cursor, filters)
    GET   /api/platform/tenants  super_admin on the primary tenant: every tenant, status and tier
    GET   /api/platform/audit    super_admin on the primary tenant: every tenant's audit trail

Audit listings take `limit` (1..200, default 50), `cursor` (the `next_cursor` of the page
before), `action` (exact, or a prefix ending in `*`: `domain.*`), `actor`, `since` and `until`
(ISO 8601 with a time zone; since inclusive, until exclusive), and on the platform listing
`tenant`. Anything else is a 400 `invalid_query`. Rows come from public.audit_trail*() with the
user's token, so RLS decides what is seen (supabase/migrations/20261126233134_audit_chain.sql).
"""

from __future__ import annotations

import base64
import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.ids import UUID_RE
from shared.models import TENANT_ID_RE, TenantType
from shared.roles import RoleName
from tenant_worker.auth_store import AuthStore, AuthStoreMissing
from tenant_worker.inbound_http import WHOLE, ApiError, Call, Reply, RequestBody, Route, json_reply
from tenant_worker.principal import Role, require
from tenant_worker.request_body import nothing_to_change, read_body
from tenant_worker.supabase_access import guarded, tenant_db, write_audit

_UUID = UUID_RE  # shared.ids
TENANT_COLUMNS = "tenant_id,name,domain,type,subscription_tier,status,whitelabel_config"
PROFILE_COLUMNS = "id,tenant_id,tenant_role,email,display_name,created_at,updated_at"
DOMAIN_COLUMNS = "domain,domain_type,ssl_status,dns_configured,created_at"
_ACTION = re.compile(r"^[a-z][a-z0-9_.:-]{0,63}$")
_ACTION_PREFIX = re.compile(r"^[a-z][a-z0-9_.:-]{0,62}\*$")
_CURSOR = re.compile(r"^(seq|id):([1-9][0-9]{0,17})$")
AUDIT_QUERY = frozenset({"limit", "cursor", "action", "actor", "since", "until"})
PLATFORM_COLUMNS = "tenant_id,name,domain,type,subscription_tier,status,created_at"


async def get_tenant(call: Call) -> Reply:
    principal = require(call)
    rows = await guarded(
        tenant_db(call, principal).select(
            "tenants", columns=TENANT_COLUMNS, eq={"tenant_id": call.tenant.tenant_id}, limit=1
        )
    )
    if not rows:
        raise ApiError(404, "not_found", "This tenant has no record yet.")
    row = rows[0]
    return json_reply(
        {
            "tenant": {k: v for k, v in row.items() if k != "whitelabel_config"},
            "branding": row.get("whitelabel_config") or {},
        }
    )


async def list_domains(call: Call) -> Reply:
    principal = require(call)
    rows = await guarded(
        tenant_db(call, principal).select(
            "tenant_domains", columns=DOMAIN_COLUMNS, eq={"tenant_id": call.tenant.tenant_id}, order="domain.asc"
        )
    )
    return json_reply({"domains": rows})


async def list_profiles(call: Call) -> Reply:
    principal = require(call, Role.ADMIN)
    limit, offset = call.page_args()
    rows = await guarded(
        tenant_db(call, principal).select(
            "profiles",
            columns=PROFILE_COLUMNS,
            eq={"tenant_id": call.tenant.tenant_id},
            order=["created_at.asc", "id.asc"],
            limit=limit,
            offset=offset,
        )
    )
    return json_reply({"profiles": rows, "limit": limit, "offset": offset})


class ProfilePatch(RequestBody):
    """What a tenant admin may change on a profile of their tenant."""

    tenant_role: RoleName | None = None
    display_name: str | None = Field(default=None, min_length=1, max_length=200)


async def patch_profile(call: Call) -> Reply:
    principal = require(call, Role.ADMIN)
    target = call.params["id"].lower()
    if not _UUID.match(target):
        raise ApiError(400, "invalid_id", "The profile id must be a UUID.")
    patch = await read_body(call, ProfilePatch)
    values: dict[str, Any] = patch.model_dump(exclude_none=True)
    if not values:
        raise nothing_to_change()
    if values.get("tenant_role") == "super_admin":
        # Only the database's super_admin may grant it, and only in the primary tenant.
        if principal.role is not Role.SUPER_ADMIN or call.tenant.tenant_type is not TenantType.PRIMARY:
            raise ApiError(403, "forbidden", "Only a platform super admin can grant super_admin.")
    if "tenant_role" in values and target == principal.user_id:
        raise ApiError(403, "forbidden", "You cannot change your own role.")
    rows = await guarded(
        tenant_db(call, principal).update(
            "profiles", values, eq={"id": target, "tenant_id": call.tenant.tenant_id}, columns=PROFILE_COLUMNS
        )
    )
    if not rows:  # RLS hides other tenants' rows: the same answer as a missing one
        raise ApiError(404, "not_found", "No such profile in this tenant.")
    if "tenant_role" in values:
        await _after_role_change(call, principal.user_id, target, values["tenant_role"])
    changed = sorted(k for k in values if k != "tenant_role")
    if changed:  # the values themselves stay out of the trail (a display name is personal data)
        await guarded(
            write_audit(
                call, actor=principal.user_id, action="profile.updated", target=target, details={"fields": changed}
            )
        )
    return json_reply({"profile": rows[0]})


async def _after_role_change(call: Call, actor: str, target: str, role: str) -> None:
    try:  # the target's live sessions rotate to the new role on their next request
        await AuthStore.of(call.env, call.tenant.tenant_id).set_epoch(target, "role", call.services.clock())
    except AuthStoreMissing:
        pass
    await guarded(
        write_audit(call, actor=actor, action="profile.role_changed", target=target, details={"tenant_role": role})
    )


# ---- the audit trail ------------------------------------------------------------------------
class AuditEntry(BaseModel):
    """An audit_log row as the API shows it (what PostgREST returns, validated at the edge)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: int
    tenant_id: str
    seq: int
    at: str
    actor: str
    action: str
    target: str | None = None
    request_id: str | None = None
    outcome: str
    details: dict[str, Any] = Field(default_factory=dict)
    prev_hash: str
    row_hash: str


class AuditQuery(BaseModel):
    model_config = ConfigDict(frozen=True)

    limit: int
    before: int | None
    action: str | None
    action_prefix: str | None
    actor: str | None
    since: str | None
    until: str | None


def _bad_query(message: str) -> ApiError:
    return ApiError(400, "invalid_query", message)


def _timestamp(call: Call, name: str) -> str | None:
    raw = call.arg(name)
    if raw is None:
        return None
    try:
        when = datetime.fromisoformat(raw) if len(raw) <= 40 else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise _bad_query(f"{name} must be an ISO 8601 time with a time zone, e.g. 2026-11-01T00:00:00Z.")
    return when.isoformat()


def encode_cursor(kind: str, value: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


def decode_cursor(raw: str, kind: str) -> int:
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii") if len(raw) <= 40 else ""
    except (ValueError, UnicodeDecodeError):
        text = ""
    m = _CURSOR.match(text)
    if m is None or m.group(1) != kind:
        raise _bad_query("cursor is not one this listing handed out.")
    return int(m.group(2))


def audit_query(call: Call, cursor_kind: str, extra: frozenset[str] = frozenset()) -> AuditQuery:
    """The listing's query string, checked whole: unknown names and bad values are 400s."""
    unknown = sorted(set(call.query) - AUDIT_QUERY - extra)
    if unknown:
        raise _bad_query(
            f"Unknown query parameter(s): {', '.join(unknown)}. Use {', '.join(sorted(AUDIT_QUERY | extra))}."
        )
    if any(len(v) > 1 for v in call.query.values()):
        raise _bad_query("Each query parameter may be given once.")
    raw_limit = call.arg("limit") or "50"
    if not WHOLE.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= 200:
        raise _bad_query("limit must be a whole number 1..200.")
    action = call.arg("action")
    action_prefix = None
    if action is not None:
        if _ACTION_PREFIX.match(action):
            action_prefix = action[:-1]
            action = None
        elif not _ACTION.match(action):
            raise _bad_query("action must be an action name (e.g. domain.added) or a prefix ending in * (domain.*).")
    actor = call.arg("actor")
    if actor is not None and not 1 <= len(actor) <= 200:
        raise _bad_query("actor must be 1..200 characters.")
    cursor = call.arg("cursor")
    return AuditQuery(
        limit=int(raw_limit),
        before=decode_cursor(cursor, cursor_kind) if cursor else None,
        action=action,
        action_prefix=action_prefix,
        actor=actor,
        since=_timestamp(call, "since"),
        until=_timestamp(call, "until"),
    )


def _entries(rows: Any) -> list[AuditEntry]:
    try:
        return [AuditEntry.model_validate(r) for r in rows]
    except (ValidationError, TypeError):
        raise ApiError(502, "upstream_error", "The data service returned an unexpected answer.") from None


def _page_reply(entries: list[AuditEntry], q: AuditQuery, kind: str, *, with_tenant: bool) -> Reply:
    more = len(entries) > q.limit
    entries = entries[: q.limit]
    last = entries[-1] if entries else None
    next_cursor = encode_cursor(kind, last.seq if kind == "seq" else last.id) if more and last else None
    drop = set() if with_tenant else {"tenant_id"}
    return json_reply(
        {"entries": [e.model_dump(exclude=drop) for e in entries], "limit": q.limit, "next_cursor": next_cursor},
        headers={"cache-control": "no-store"},
    )


def _filters(q: AuditQuery) -> dict[str, Any]:
    return {
        "p_action": q.action,
        "p_action_prefix": q.action_prefix,
        "p_actor": q.actor,
        "p_since": q.since,
        "p_until": q.until,
        "p_limit": q.limit + 1,
    }


async def list_audit(call: Call) -> Reply:
    """This tenant's trail, newest first (by its chain position)."""
    principal = require(call, Role.ADMIN)
    q = audit_query(call, "seq")
    rows = await guarded(
        tenant_db(call, principal).rpc(
            "audit_trail", {"p_tenant_id": call.tenant.tenant_id, "p_before_seq": q.before, **_filters(q)}
        )
    )
    entries = [e for e in _entries(rows) if e.tenant_id == call.tenant.tenant_id]
    return _page_reply(entries, q, "seq", with_tenant=False)


async def platform_audit(call: Call) -> Reply:
    """Every tenant's trail for a platform super admin (on the primary tenant only), newest first."""
    if call.tenant.tenant_type is not TenantType.PRIMARY:
        raise ApiError(404, "not_found", "There is nothing here.")
    principal = require(call, Role.SUPER_ADMIN)
    q = audit_query(call, "id", frozenset({"tenant"}))
    tenant = call.arg("tenant")
    if tenant is not None and not TENANT_ID_RE.match(tenant):
        raise _bad_query("tenant must be a tenant id.")
    rows = await guarded(
        tenant_db(call, principal).rpc(
            "audit_trail_all", {"p_tenant_id": tenant, "p_before_id": q.before, **_filters(q)}
        )
    )
    return _page_reply(_entries(rows), q, "id", with_tenant=True)


async def platform_tenants(call: Call) -> Reply:
    if call.tenant.tenant_type is not TenantType.PRIMARY:
        raise ApiError(404, "not_found", "There is nothing here.")  # platform endpoints exist on the primary only
    principal = require(call, Role.SUPER_ADMIN)
    limit, offset = call.page_args(100, 1000)
    rows = await guarded(
        tenant_db(call, principal).select(
            "tenants", columns=PLATFORM_COLUMNS, order="tenant_id.asc", limit=limit, offset=offset
        )
    )
    return json_reply({"tenants": rows, "limit": limit, "offset": offset})


ROUTES = [
    Route("GET", "/api/tenant", get_tenant, "tenant.get"),
    Route("GET", "/api/domains", list_domains, "domains.list"),
    Route("GET", "/api/profiles", list_profiles, "profiles.list"),
    Route("PATCH", "/api/profiles/<id>", patch_profile, "profiles.patch"),
    Route("GET", "/api/audit", list_audit, "audit.list"),
    Route("GET", "/api/platform/tenants", platform_tenants, "platform.tenants"),
    Route("GET", "/api/platform/audit", platform_audit, "platform.audit"),
]

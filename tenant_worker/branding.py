"""A tenant's white-label branding: name, logo, colours, support contact.

    PATCH /api/tenant/branding   admin: {"brand_name"?, "logo_url"?, "primary_color"?, "secondary_color"?,
                                         "support_email"?}   (null removes a field)

    brand = await tenant_branding(call)   # what every page of the tenant shows (cached per isolate)

Stored in `tenants.whitelabel_config` (the tenant admin may update it under RLS). Validated on
the way in (colours `#rrggbb`, the logo an https URL without quotes, spaces or angle brackets,
the support contact an e-mail address) and again on the way out (`shared.branding.Brand.from_config`),
so a value written some other way never reaches a page unchecked; pages escape every value as well.
The home page, the error pages and the dashboards all draw the one `shared.branding.Brand`.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import field_validator

from shared.branding import FIELDS, Brand, check_field, merged
from shared.outbound_http import HttpError
from shared.supabase import SupabaseError
from tenant_worker.inbound_http import ApiError, Call, Reply, RequestBody, Route, json_reply
from tenant_worker.principal import Role, require
from tenant_worker.request_body import nothing_to_change, read_body
from tenant_worker.supabase_access import guarded, service_db, tenant_db, write_audit

BRAND_TTL_SECONDS = 300.0


_brands: dict[str, tuple[float, Brand]] = {}


def forget_branding(tenant_id: str) -> None:
    """After a branding change: this isolate reads it again (others within BRAND_TTL_SECONDS)."""
    _brands.pop(tenant_id, None)


async def tenant_branding(call: Call) -> Brand:
    """The tenant's own brand for its pages, cached per isolate by tenant id (the id from the
    verified context, so one tenant's entry is never another's); its host name if unknown."""
    tid, now = call.tenant.tenant_id, time.monotonic()
    cached = _brands.get(tid)
    if cached and cached[0] > now:
        return cached[1]
    try:
        rows = await service_db(call).select(
            "tenants", columns="name,whitelabel_config", eq={"tenant_id": tid}, limit=1
        )
    except (SupabaseError, HttpError, ApiError):
        return Brand(call.tenant.host)  # not cached: the next page tries again
    if not rows:
        return Brand(call.tenant.host)
    brand = Brand.from_config(rows[0].get("whitelabel_config"), str(rows[0].get("name") or call.tenant.host))
    _brands[tid] = (now + BRAND_TTL_SECONDS, brand)
    return brand


class BrandingUpdate(RequestBody):
    brand_name: str | None = None
    logo_url: str | None = None
    primary_color: str | None = None
    secondary_color: str | None = None
    support_email: str | None = None

    @field_validator("brand_name", "logo_url", "primary_color", "secondary_color", "support_email")
    @classmethod
    def _checked(cls, v: str | None, info: Any) -> str | None:
        value, problem = check_field(info.field_name, v)
        if problem:
            raise ValueError(problem)
        return value


async def update_branding(call: Call) -> Reply:
    principal = require(call, Role.ADMIN)
    update = await read_body(call, BrandingUpdate)
    raw = update.model_fields_set  # the fields the body named (null removes one)
    if not raw:
        raise nothing_to_change()
    db = tenant_db(call, principal)
    rows = await guarded(
        db.select("tenants", columns="name,whitelabel_config", eq={"tenant_id": call.tenant.tenant_id}, limit=1)
    )
    if not rows:
        raise ApiError(404, "not_found", "This tenant has no record yet.")
    config = merged(rows[0].get("whitelabel_config"), {k: getattr(update, k) for k in FIELDS if k in raw})
    updated = await guarded(
        db.update(
            "tenants",
            {"whitelabel_config": config},
            eq={"tenant_id": call.tenant.tenant_id},
            columns="name,whitelabel_config",
        )
    )
    if not updated:
        raise ApiError(403, "forbidden", "Not allowed.")
    await guarded(
        write_audit(
            call,
            actor=principal.user_id,
            action="tenant.branding_changed",
            target=call.tenant.tenant_id,
            details={"fields": sorted(k for k in FIELDS if k in raw)},
        )
    )
    forget_branding(call.tenant.tenant_id)  # this isolate's pages pick the new brand up at once
    return json_reply({"branding": Brand.from_config(updated[0].get("whitelabel_config"), updated[0]["name"]).view()})


ROUTES = [Route("PATCH", "/api/tenant/branding", update_branding, "tenant.branding")]

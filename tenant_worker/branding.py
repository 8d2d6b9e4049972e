"""A tenant's white-label branding: name, logo, colours, support contact.

    PATCH /api/tenant/branding   admin: {"brand_name"?, "logo_url"?, "primary_color"?, "secondary_color"?,
                                         "support_email"?}   (null removes a field)

Stored in `tenants.whitelabel_config` (the tenant admin may update it under RLS). Validated on
the way in (colours `#rrggbb`, the logo an https URL without quotes, spaces or angle brackets,
the support contact an e-mail address) and again on the way out (`Brand.from_config`), so a value
written some other way never reaches a page unchecked; pages escape every value as well.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from pydantic import field_validator

from shared.branding import COLOR, EMAIL, FIELDS, check_field, merged, valid_logo_url
from shared.errors import DEFAULT_COLOR
from tenant_worker.http import ApiError, Call, Reply, RequestBody, Route, json_reply
from tenant_worker.principal import Role, require
from tenant_worker.request_body import nothing_to_change, read_body
from tenant_worker.supabase_access import guarded, tenant_db, write_audit

DEFAULT_SECONDARY = "#4b5563"


@dataclass(frozen=True)
class Brand:
    name: str
    primary_color: str = DEFAULT_COLOR
    secondary_color: str = DEFAULT_SECONDARY
    logo_url: str | None = None
    support_email: str | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None, fallback_name: str) -> "Brand":
        wl = dict(config or {})

        def text(key: str) -> str:
            v = wl.get(key)
            return v if isinstance(v, str) else ""

        name = (text("brand_name") or fallback_name)[:120]
        logo = text("logo_url")
        email = text("support_email")
        return cls(name,
                   text("primary_color") if COLOR.match(text("primary_color")) else DEFAULT_COLOR,
                   text("secondary_color") if COLOR.match(text("secondary_color")) else DEFAULT_SECONDARY,
                   logo if logo and valid_logo_url(logo) else None,
                   email if email and EMAIL.match(email) else None)

    def view(self) -> dict[str, Any]:
        return {"brand_name": self.name, "primary_color": self.primary_color, "secondary_color": self.secondary_color,
                "logo_url": self.logo_url, "support_email": self.support_email}


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
    rows = await guarded(db.select("tenants", columns="name,whitelabel_config", eq={"tenant_id": call.tenant.tenant_id},
                                   limit=1))
    if not rows:
        raise ApiError(404, "not_found", "This tenant has no record yet.")
    config = merged(rows[0].get("whitelabel_config"), {k: getattr(update, k) for k in FIELDS if k in raw})
    updated = await guarded(db.update("tenants", {"whitelabel_config": config}, eq={"tenant_id": call.tenant.tenant_id},
                                      columns="name,whitelabel_config"))
    if not updated:
        raise ApiError(403, "forbidden", "Not allowed.")
    await guarded(write_audit(call, actor=principal.user_id, action="tenant.branding_changed",
                              target=call.tenant.tenant_id, details={"fields": sorted(k for k in FIELDS if k in raw)}))
    from tenant_worker import auth  # this isolate's pages pick the new brand up at once

    auth.forget_branding(call.tenant.tenant_id)
    return json_reply({"branding": Brand.from_config(updated[0].get("whitelabel_config"), updated[0]["name"]).view()})


ROUTES = [Route("PATCH", "/api/tenant/branding", update_branding, "tenant.branding")]

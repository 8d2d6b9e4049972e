"""A tenant's white-label branding: name, logo, colours, support contact.

    PATCH /api/tenant/branding   admin: {"brand_name"?, "logo_url"?, "primary_color"?, "secondary_color"?,
                                         "support_email"?}   (null removes a field)

Stored in `tenants.whitelabel_config` (the tenant admin may update it under RLS). Validated on
the way in (colours `#rrggbb`, the logo an https URL without quotes, spaces or angle brackets,
the support contact an e-mail address) and again on the way out (`Brand.from_config`), so a value
written some other way never reaches a page unchecked; pages escape every value as well.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

from pydantic import field_validator

from shared.errors import DEFAULT_COLOR
from tenant_worker.http import ApiError, Call, Reply, RequestBody, Route, json_reply
from tenant_worker.principal import Role, require
from tenant_worker.supabase_access import guarded, tenant_db, write_audit

COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
EMAIL = re.compile(r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})+$")
DEFAULT_SECONDARY = "#4b5563"
FIELDS = ("brand_name", "logo_url", "primary_color", "secondary_color", "support_email")


def valid_logo_url(value: str) -> bool:
    if len(value) > 500 or any(c in value for c in "\"'<> \\\t\r\n`"):
        return False
    parts = urlsplit(value)
    return parts.scheme == "https" and bool(parts.hostname) and not parts.username and not parts.password


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

    @field_validator("brand_name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not 1 <= len(v.strip()) <= 120:
            raise ValueError("1 to 120 characters")
        return v.strip() if v is not None else None

    @field_validator("primary_color", "secondary_color")
    @classmethod
    def _color(cls, v: str | None) -> str | None:
        if v is not None and not COLOR.match(v):
            raise ValueError("a colour as #rrggbb")
        return v.lower() if v is not None else None

    @field_validator("logo_url")
    @classmethod
    def _logo(cls, v: str | None) -> str | None:
        if v is not None and not valid_logo_url(v):
            raise ValueError("an https URL")
        return v

    @field_validator("support_email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        if v is not None and (len(v) > 254 or not EMAIL.match(v)):
            raise ValueError("an e-mail address")
        return v


async def update_branding(call: Call) -> Reply:
    principal = require(call, Role.ADMIN)
    raw = await call.json()
    try:
        update = BrandingUpdate.model_validate(raw)
    except Exception as exc:
        errors = getattr(exc, "errors", lambda: [])()
        fields = sorted({str(e["loc"][0]) for e in errors if e.get("loc")}) or ["body"]
        raise ApiError(400, "invalid_body", f"Invalid field(s): {', '.join(fields)}.", extra={"fields": fields}) from None
    if not raw:
        raise ApiError(400, "invalid_body", "Nothing to change.")
    db = tenant_db(call, principal)
    rows = await guarded(db.select("tenants", columns="name,whitelabel_config", eq={"tenant_id": call.tenant.tenant_id},
                                   limit=1))
    if not rows:
        raise ApiError(404, "not_found", "This tenant has no record yet.")
    config = dict(rows[0].get("whitelabel_config") or {})
    for key in FIELDS:
        if key in raw:
            value = getattr(update, key)
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value
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

"""A tenant's white-label branding: the one `Brand` type every page draws (home, error pages,
dashboards, the dispatcher's pages), and the rules shared by the tenant API and the operator CLI.

    brand = Brand.from_config(row["whitelabel_config"], row["name"])   # checked again on the way out
    cleaned, problems = check_branding({"primary_color": "#0A7D33", "logo_url": "https://..."})

Fields: brand_name (1-120 characters), logo_url (https with a plain DNS host, no credentials,
no quotes, spaces, angle brackets, `;` or `,`, ≤ 500 characters), primary_color and secondary_color (#rrggbb, stored lower-case),
support_email (an e-mail address). None removes a field. Pages validate again when they read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

FIELDS = ("brand_name", "logo_url", "primary_color", "secondary_color", "support_email")
COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
EMAIL = re.compile(r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})+$")


DEFAULT_BRAND = "Cozyartz Media Group"  # the platform's own pages (no tenant known)
DEFAULT_COLOR = "#1f2937"
DEFAULT_SECONDARY = "#4b5563"
_HOST = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


def valid_logo_url(value: str) -> bool:
    """An https URL with a plain DNS host (it also goes into the page's CSP as an img-src origin)."""
    if len(value) > 500 or any(c in value for c in "\"'<> \\\t\r\n`;,"):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (ValueError for a junk port)
    except ValueError:
        return False
    return (
        parts.scheme == "https"
        and bool(parts.hostname)
        and _HOST.match(parts.hostname or "") is not None
        and not parts.username
        and not parts.password
        and "@" not in parts.netloc
    )


def logo_origin(value: str | None) -> str | None:
    """The origin a page's CSP must allow images from to show this logo; None for no usable logo."""
    if not value or not valid_logo_url(value):
        return None
    parts = urlsplit(value)
    return f"https://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


@dataclass(frozen=True)
class Brand:
    """What a page shows of a tenant: its name, colours (#rrggbb), logo (an https URL) and support
    contact; the platform's own where no tenant is known (`Brand()`)."""

    name: str = DEFAULT_BRAND
    primary_color: str = DEFAULT_COLOR
    secondary_color: str = DEFAULT_SECONDARY
    logo_url: str | None = None
    support_email: str | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None, fallback_name: str) -> "Brand":
        """The brand in `tenants.whitelabel_config`, each value checked again (a value written some
        other way never reaches a page unchecked); `fallback_name` where it names no brand."""
        wl = dict(config) if isinstance(config, Mapping) else {}

        def text(key: str) -> str:
            v = wl.get(key)
            return v if isinstance(v, str) else ""

        logo, email = text("logo_url"), text("support_email")
        return cls(
            (text("brand_name") or fallback_name)[:120],
            text("primary_color") if COLOR.match(text("primary_color")) else DEFAULT_COLOR,
            text("secondary_color") if COLOR.match(text("secondary_color")) else DEFAULT_SECONDARY,
            logo if logo and valid_logo_url(logo) else None,
            email if email and len(email) <= 254 and EMAIL.match(email) else None,
        )

    def view(self) -> dict[str, Any]:
        return {
            "brand_name": self.name,
            "primary_color": self.primary_color,
            "secondary_color": self.secondary_color,
            "logo_url": self.logo_url,
            "support_email": self.support_email,
        }


def safe_color(value: str, default: str = DEFAULT_COLOR) -> str:
    """A colour goes into CSS only as #rrggbb; anything else is the default."""
    return value if isinstance(value, str) and COLOR.match(value) else default


def check_field(name: str, value: Any) -> tuple[Any, str | None]:
    """(the value to store, or None to remove; a problem, or None)."""
    if value is None:
        return None, None
    if not isinstance(value, str):
        return None, "must be text"
    if name == "brand_name":
        v = value.strip()
        return (v, None) if 1 <= len(v) <= 120 else (None, "1 to 120 characters")
    if name in ("primary_color", "secondary_color"):
        return (value.lower(), None) if COLOR.match(value) else (None, "a colour as #rrggbb")
    if name == "logo_url":
        return (value, None) if valid_logo_url(value) else (None, "an https URL")
    if name == "support_email":
        return (value, None) if len(value) <= 254 and EMAIL.match(value) else (None, "an e-mail address")
    return None, "unknown field"


def check_branding(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    cleaned: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for name, value in values.items():
        if name not in FIELDS:
            problems[name] = "unknown field"
            continue
        v, problem = check_field(name, value)
        if problem:
            problems[name] = problem
        else:
            cleaned[name] = v
    return cleaned, problems


def merged(config: Mapping[str, Any] | None, cleaned: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(config or {})
    for k, v in cleaned.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out

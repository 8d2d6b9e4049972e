"""The route the dispatcher resolves and the tenant context it signs.

These two cross the dispatcher's boundary on every request, so they are validated frozen
dataclasses (stdlib only) rather than pydantic models: importing pydantic and building
models costs the dispatcher ~200 ms of cold start under CPython and more in Pyodide.
Validation is just as strict: `from_mapping` refuses anything off-pattern.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any, Mapping

from shared.ids import (  # noqa: F401  (re-exported: the id shapes live in shared.ids)
    REQUEST_ID_PATTERN,
    REQUEST_ID_RE,
    SCRIPT_NAME_PATTERN,
    SCRIPT_NAME_RE,
    TENANT_ID_PATTERN,
    TENANT_ID_RE,
)
from shared.tiers import Tier

HOST_RE = re.compile(r"^[a-z0-9.-]{1,253}$")


class TenantType(str, Enum):
    PRIMARY = "primary"
    PARTNER_SUBDOMAIN = "partner-subdomain"
    CUSTOM_DOMAIN = "custom-domain"


class TenantStatus(str, Enum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    INACTIVE = "inactive"


class InvalidModel(ValueError):
    """A value read at a boundary does not fit the model."""


def _match(regex: re.Pattern[str], value: Any, field: str) -> str:
    if not isinstance(value, str) or not regex.match(value):
        raise InvalidModel(f"invalid {field}")
    return value


def _enum(enum: type[Enum], value: Any, field: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        raise InvalidModel(f"invalid {field}") from None


@dataclass(frozen=True, slots=True)
class TenantRoute:
    """What the dispatcher needs to send a host's traffic to a tenant's Worker."""

    tenant_id: str
    tenant_type: TenantType
    tier: Tier
    status: TenantStatus
    script_name: str
    brand_name: str | None = None

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> "TenantRoute":
        brand = row.get("brand_name")
        if brand is not None and (not isinstance(brand, str) or len(brand) > 120):
            raise InvalidModel("invalid brand_name")
        return cls(
            tenant_id=_match(TENANT_ID_RE, row.get("tenant_id"), "tenant_id"),
            tenant_type=_enum(TenantType, row.get("tenant_type"), "tenant_type"),
            tier=_enum(Tier, row.get("tier"), "tier"),
            status=_enum(TenantStatus, row.get("status"), "status"),
            script_name=_match(SCRIPT_NAME_RE, row.get("script_name"), "script_name"),
            brand_name=brand or None,
        )

    def to_mapping(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("tenant_type", "tier", "status"):
            out[key] = out[key].value
        return out


@dataclass(frozen=True, slots=True)
class TenantContext:
    """The signed facts the dispatcher hands a tenant Worker with each request."""

    tenant_id: str
    tenant_type: TenantType
    tier: Tier
    host: str
    request_id: str
    issued_at: int  # unix seconds

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> "TenantContext":
        issued_at = row.get("issued_at")
        if not isinstance(issued_at, int) or isinstance(issued_at, bool) or issued_at < 0:
            raise InvalidModel("invalid issued_at")
        return cls(
            tenant_id=_match(TENANT_ID_RE, row.get("tenant_id"), "tenant_id"),
            tenant_type=_enum(TenantType, row.get("tenant_type"), "tenant_type"),
            tier=_enum(Tier, row.get("tier"), "tier"),
            host=_match(HOST_RE, row.get("host"), "host"),
            request_id=_match(REQUEST_ID_RE, row.get("request_id"), "request_id"),
            issued_at=issued_at,
        )

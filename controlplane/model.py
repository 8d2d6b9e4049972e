"""What the operator hands the control plane, validated once (pydantic) before anything is written."""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from controlplane.errors import Refused
from shared.hosts import InvalidHost, normalize_host
from shared.models import SCRIPT_NAME_PATTERN, TENANT_ID_PATTERN, TenantStatus, TenantType
from shared.tiers import Tier

PRIMARY_ZONE = "cozyartzmedia.com"
PRIMARY_TENANT_ID = "cozyartz"
NAMESPACE = "cmgsite-tenants"
SCRIPT_PREFIX = "cmgsite-"
# The same pattern Supabase's tenant_domains.domain CHECK holds (plain DNS name, two labels or more).
DOMAIN_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$")

DomainType = Literal["primary", "custom", "subdomain"]
SslStatus = Literal["pending", "active", "failed"]


def parse_domain(raw: str) -> str:
    """A domain an operator typed, normalised (lower-case, IDNA) or refused with the reason."""
    text = (raw or "").strip()
    if ":" in text or "/" in text:
        raise Refused(f"invalid domain {raw!r}: give a bare host name (no scheme, port or path)")
    try:
        domain = normalize_host(text)
    except InvalidHost as exc:
        raise Refused(f"invalid domain {raw!r}: {exc}") from None
    if not DOMAIN_RE.match(domain) or len(domain) > 253:
        raise Refused(f"invalid domain {raw!r}: expected a DNS name such as shop.example.com")
    if domain.rsplit(".", 1)[-1].isdigit():
        raise Refused(f"invalid domain {raw!r}: IP addresses are not tenant domains")
    return domain


def parse_tier(raw: str) -> Tier:
    try:
        return Tier(raw.strip().lower())
    except ValueError:
        raise Refused(f"unknown tier {raw!r}: choose one of {', '.join(t.value for t in Tier)}") from None


def parse_type(raw: str) -> TenantType:
    try:
        return TenantType(raw.strip().lower())
    except ValueError:
        raise Refused(f"unknown tenant type {raw!r}: choose one of {', '.join(t.value for t in TenantType)}") from None


def parse_tenant_id(raw: str) -> str:
    if not isinstance(raw, str) or not re.match(TENANT_ID_PATTERN, raw):
        raise Refused(f"invalid tenant id {raw!r}: lower-case letters, digits and '-', 1 to 63 characters")
    return raw


def is_primary_subdomain(domain: str) -> bool:
    return domain.endswith("." + PRIMARY_ZONE)


def domain_type_for(tenant_type: TenantType, domain: str) -> DomainType:
    """Which kind of domain this is for that tenant, refusing combinations that cannot route."""
    if domain == PRIMARY_ZONE or domain == "www." + PRIMARY_ZONE:
        if tenant_type is not TenantType.PRIMARY:
            raise Refused(f"{domain} belongs to the platform's primary tenant")
        return "primary"
    if is_primary_subdomain(domain):
        if tenant_type is TenantType.CUSTOM_DOMAIN:
            raise Refused(f"{domain} is under {PRIMARY_ZONE}: use type partner-subdomain for it")
        return "subdomain"
    if tenant_type is TenantType.PARTNER_SUBDOMAIN:
        raise Refused(f"a partner-subdomain tenant's domains end in .{PRIMARY_ZONE}; {domain} does not")
    return "custom"


class TenantRecord(BaseModel):
    """A row of Supabase's `tenants` (the master registry)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    tenant_id: str = Field(pattern=TENANT_ID_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    domain: str
    type: TenantType
    subscription_tier: Tier
    status: TenantStatus = TenantStatus.ACTIVE
    script_name: str = Field(pattern=SCRIPT_NAME_PATTERN)
    whitelabel_config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        if not DOMAIN_RE.match(value):
            raise ValueError("invalid domain")
        return value

    def row(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class DomainRecord(BaseModel):
    """A row of `tenant_domains` (Supabase and D1 hold the same facts)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    tenant_id: str = Field(pattern=TENANT_ID_PATTERN)
    domain: str
    domain_type: DomainType
    ssl_status: SslStatus = "pending"
    dns_configured: bool = False

    def row(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def new_tenant(tenant_id: str, name: str, tenant_type: str, domain: str, tier: str,
               brand_name: str | None = None) -> tuple[TenantRecord, DomainRecord]:
    """Validate an `add` request into the registry rows it will write."""
    tid = parse_tenant_id(tenant_id)
    ttype = parse_type(tenant_type)
    dom = parse_domain(domain)
    dtype = domain_type_for(ttype, dom)
    if not name or not name.strip() or len(name) > 200:
        raise Refused("tenant name must be 1 to 200 characters")
    try:
        tenant = TenantRecord(
            tenant_id=tid, name=name.strip(), domain=dom, type=ttype, subscription_tier=parse_tier(tier),
            status=TenantStatus.ACTIVE, script_name=script_name_for(tid),
            whitelabel_config={"brand_name": (brand_name or name).strip()[:120]},
        )
    except ValidationError as exc:
        raise Refused(f"invalid tenant: {exc.errors()[0]['msg']}") from None
    return tenant, DomainRecord(tenant_id=tid, domain=dom, domain_type=dtype,
                                ssl_status="active" if dtype != "custom" else "pending",
                                dns_configured=dtype != "custom")


def script_name_for(tenant_id: str) -> str:
    """The tenant's Worker script in the namespace: cmgsite-<tenant>, as the product document names it."""
    name = SCRIPT_PREFIX + tenant_id
    if not re.match(SCRIPT_NAME_PATTERN, name):
        raise Refused(f"tenant id {tenant_id!r} is too long for a script name (63 characters at most)")
    return name

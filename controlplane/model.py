"""What the operator hands the control plane, validated once (pydantic) before anything is written."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from controlplane.errors import Refused
from shared import domains as rules
from shared.domains import DOMAIN_RE, PLATFORM_ZONE, Actor, DomainError, DomainType  # noqa: F401 (re-exported)
from shared.models import SCRIPT_NAME_PATTERN, TENANT_ID_PATTERN, TenantStatus, TenantType
from shared.platform import PRIMARY_TENANT_ID  # noqa: F401 (re-exported)
from shared.tiers import Tier

PRIMARY_ZONE = PLATFORM_ZONE
NAMESPACE = "cmgsite-tenants"
SCRIPT_PREFIX = "cmgsite-"

SslStatus = Literal["pending", "active", "failed"]
VerificationStatus = Literal["pending", "verified"]


def parse_domain(raw: str) -> str:
    """A domain an operator typed, normalised (lower-case, IDNA) or refused with the reason
    (shared.domains: the same rules the tenant API applies)."""
    try:
        return rules.parse_domain(raw or "")
    except DomainError as exc:
        raise Refused(f"invalid domain {raw!r}: {exc.message}") from None


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
    return rules.is_under(domain, PRIMARY_ZONE)


def domain_type_for(tenant_type: TenantType, domain: str) -> DomainType:
    """Which kind of domain this is for that tenant (the operator assigning it), refusing
    combinations that cannot route: shared.domains.classify, the rules the tenant API uses too."""
    try:
        return rules.classify(tenant_type, domain, by=Actor.OPERATOR, zone=PRIMARY_ZONE)
    except DomainError as exc:
        raise Refused(exc.message) from None


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
    """A row of `tenant_domains` (D1 holds the routing facts of the routable ones).

    `verification_status` is the ownership proof: a custom domain a tenant admin adds through
    the API is `pending` until its token is seen in DNS or over HTTP; names the operator
    assigns are verified by assignment. Only routable domains are ever routed (see routable)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    tenant_id: str = Field(pattern=TENANT_ID_PATTERN)
    domain: str
    domain_type: DomainType
    ssl_status: SslStatus = "pending"
    dns_configured: bool = False
    verification_status: VerificationStatus = "verified"
    verification_token: str | None = None
    verified_at: str | None = None
    verification_checked_at: str | None = None
    verification_detail: str | None = None

    def row(self) -> dict[str, Any]:
        """What the control plane writes: the routing facts and the verification state it decides
        (the token and timestamps are the database's)."""
        return self.model_dump(
            mode="json",
            include={"tenant_id", "domain", "domain_type", "ssl_status", "dns_configured", "verification_status"},
        )

    def view(self) -> dict[str, Any]:
        """Everything, for the operator's output."""
        return self.model_dump(mode="json")

    def routable(self, tenant: "TenantRecord") -> bool:
        """Only a verified name, or one the platform assigned (the primary domain, platform
        subdomains), is ever routed."""
        return self.verification_status == "verified" or self.domain == tenant.domain or self.domain_type != "custom"


def new_tenant(
    tenant_id: str, name: str, tenant_type: str, domain: str, tier: str, brand_name: str | None = None
) -> tuple[TenantRecord, DomainRecord]:
    """Validate an `add` request into the registry rows it will write."""
    tid = parse_tenant_id(tenant_id)
    ttype = parse_type(tenant_type)
    dom = parse_domain(domain)
    dtype = domain_type_for(ttype, dom)
    if not name or not name.strip() or len(name) > 200:
        raise Refused("tenant name must be 1 to 200 characters")
    try:
        tenant = TenantRecord(
            tenant_id=tid,
            name=name.strip(),
            domain=dom,
            type=ttype,
            subscription_tier=parse_tier(tier),
            status=TenantStatus.ACTIVE,
            script_name=script_name_for(tid),
            whitelabel_config={"brand_name": (brand_name or name).strip()[:120]},
        )
    except ValidationError as exc:
        raise Refused(f"invalid tenant: {exc.errors()[0]['msg']}") from None
    return tenant, DomainRecord(
        tenant_id=tid,
        domain=dom,
        domain_type=dtype,
        ssl_status="active" if dtype != "custom" else "pending",
        dns_configured=dtype != "custom",
    )


def script_name_for(tenant_id: str) -> str:
    """The tenant's Worker script in the namespace: cmgsite-<tenant>, as the product document names it."""
    name = SCRIPT_PREFIX + tenant_id
    if not re.match(SCRIPT_NAME_PATTERN, name):
        raise Refused(f"tenant id {tenant_id!r} is too long for a script name (63 characters at most)")
    return name

"""A tenant's domain names: one set of rules for the tenant API and the operator's CLI, and the
ownership check both run (in the Worker over the runtime's fetch, in the CLI over httpx).

    domain = parse_domain(" Shop.Example.COM. ")             # "shop.example.com", or DomainError
    kind = classify(TenantType.CUSTOM_DOMAIN, domain, by=Actor.TENANT)   # "custom", or DomainError
    holder = overlapping(domain, "acme", held)               # another tenant's overlapping name, if any
    result = await check_ownership(http, domain, token, resolver_url=DEFAULT_DOH_URL)

Rules (each refusal is a DomainError with a stable `code` and a message for its audience):
  * syntax: a plain DNS name of two labels or more (IDNA to punycode), no scheme, port, path,
    wildcard or IP address; what Supabase's tenant_domains.domain CHECK holds;
  * the platform zone (PLATFORM_ZONE) and the names under it are the platform's: a tenant
    never adds one; the operator assigns the apex and www to the primary tenant and
    subdomains to partner (and primary) tenants;
  * a partner-subdomain tenant holds only platform subdomains: no custom domains;
  * across tenants (the database enforces it too): no name equal to, under, or a parent of a
    name another tenant holds, except partner subdomains under the platform apex.

Ownership, as Cloudflare for SaaS validates custom hostnames: the tenant publishes the token
its pending domain was given, either as a TXT record `_cmgsite-challenge.<domain>` (looked up
through a DNS-over-HTTPS resolver's JSON API, `application/dns-json`) or as the body of
`http://<domain>/.well-known/cmgsite-challenge/<token>`.

Pure Python (pydantic and the shared HTTP edge only): runs on CPython and in Pyodide.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
from enum import Enum
from typing import Iterable, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.hosts import InvalidHost, normalize_host
from shared.models import TenantType
from shared.outbound_http import HttpClient, HttpError
from shared.platform import PLATFORM_ZONE

# The pattern of Supabase's tenant_domains.domain CHECK (plain DNS name, two labels or more).
DOMAIN_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$")
MAX_DOMAIN_LENGTH = 253

CHALLENGE_LABEL = "_cmgsite-challenge"
WELL_KNOWN_PREFIX = "/.well-known/cmgsite-challenge/"
DEFAULT_DOH_URL = "https://cloudflare-dns.com/dns-query"
TOKEN_RE = re.compile(r"^[0-9a-f]{32,128}$")  # what the database generates (64 hex characters)
DNS_TXT, DNS_A, DNS_AAAA, DNS_CNAME = 16, 1, 28, 5
MAX_HTTP_BODY = 1024

DomainType = Literal["primary", "custom", "subdomain"]


class Actor(str, Enum):
    """Who adds the name: the operator (control plane) or a tenant admin (tenant API)."""

    OPERATOR = "operator"
    TENANT = "tenant"


class DomainError(ValueError):
    """A name refused by the rules. `code` is stable (API error codes build on it)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


# ---- names --------------------------------------------------------------------------------
def parse_domain(raw: object) -> str:
    """A typed domain, normalised (lower-case, one trailing dot dropped, IDNA to punycode), or
    DomainError("invalid_domain", reason)."""
    if not isinstance(raw, str):
        raise DomainError("invalid_domain", "expected a DNS name such as shop.example.com")
    text = raw.strip()
    if ":" in text or "/" in text:
        raise DomainError("invalid_domain", "give a bare host name (no scheme, port or path)")
    try:
        domain = normalize_host(text)
    except InvalidHost as exc:
        raise DomainError("invalid_domain", str(exc)) from None
    if not DOMAIN_RE.match(domain) or len(domain) > MAX_DOMAIN_LENGTH:
        raise DomainError("invalid_domain", "expected a DNS name such as shop.example.com")
    if domain.rsplit(".", 1)[-1].isdigit():
        raise DomainError("invalid_domain", "IP addresses are not tenant domains")
    return domain


def is_under(domain: str, parent: str) -> bool:
    """`domain` is a proper subdomain of `parent` (label-wise: notshop.com is not under shop.com)."""
    return domain.endswith("." + parent)


def in_zone(domain: str, zone: str = PLATFORM_ZONE) -> bool:
    return domain == zone or is_under(domain, zone)


def overlaps(a: str, b: str) -> bool:
    """Equal, or one under the other."""
    return a == b or is_under(a, b) or is_under(b, a)


def classify(tenant_type: TenantType, domain: str, *, by: Actor, zone: str = PLATFORM_ZONE) -> DomainType:
    """The kind of domain `domain` is for a tenant of `tenant_type`, added by `by`; DomainError
    when that combination is not allowed (or could not route)."""
    if by is Actor.TENANT:
        if in_zone(domain, zone):
            raise DomainError("platform_zone", f"Names under {zone} are assigned by the platform.")
        if tenant_type is TenantType.PARTNER_SUBDOMAIN:
            raise DomainError(
                "custom_domains_not_allowed",
                "This site's address is assigned by the platform: custom domains need a custom-domain plan.",
            )
        return "custom"
    if domain == zone or domain == "www." + zone:
        if tenant_type is not TenantType.PRIMARY:
            raise DomainError("platform_zone", f"{domain} belongs to the platform's primary tenant")
        return "primary"
    if is_under(domain, zone):
        if tenant_type is TenantType.CUSTOM_DOMAIN:
            raise DomainError("platform_zone", f"{domain} is under {zone}: use type partner-subdomain for it")
        return "subdomain"
    if tenant_type is TenantType.PARTNER_SUBDOMAIN:
        raise DomainError(
            "custom_domains_not_allowed", f"a partner-subdomain tenant's domains end in .{zone}; {domain} does not"
        )
    return "custom"


def overlapping(
    domain: str, tenant_id: str, held: Iterable[tuple[str, str]], *, zone: str = PLATFORM_ZONE
) -> tuple[str, str] | None:
    """The first (tenant_id, name) another tenant holds that `domain` overlaps, if any.

    `held` is every (tenant_id, name) on the platform. Partner subdomains under the platform
    apex do not overlap the apex itself (the database applies the same exception)."""
    for holder, name in held:
        if holder == tenant_id or not overlaps(domain, name):
            continue
        if (name == zone and is_under(domain, zone)) or (domain == zone and is_under(name, zone)):
            continue
        return holder, name
    return None


# ---- ownership ----------------------------------------------------------------------------
def challenge_name(domain: str) -> str:
    return f"{CHALLENGE_LABEL}.{domain}"


def challenge_url(domain: str, token: str) -> str:
    return f"http://{domain}{WELL_KNOWN_PREFIX}{token}"


class VerificationMethod(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: Literal["dns-txt", "http"]
    name: str | None = None  # dns-txt: the record's name
    value: str | None = None  # dns-txt: the record's value
    url: str | None = None  # http: where the token must be served
    body: str | None = None  # http: the exact body


def instructions(domain: str, token: str) -> list[VerificationMethod]:
    """How a tenant proves it controls `domain` (either method suffices)."""
    return [
        VerificationMethod(type="dns-txt", name=challenge_name(domain), value=token),
        VerificationMethod(type="http", url=challenge_url(domain, token), body=token),
    ]


class DohRecord(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str = ""
    type: int
    data: str = ""


class DohAnswer(BaseModel):
    """A DNS-over-HTTPS JSON answer (Cloudflare's and Google's `application/dns-json`)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    status: int = Field(alias="Status")
    answer: list[DohRecord] = Field(default_factory=list, alias="Answer")


def txt_value(data: str) -> str:
    """A TXT record's text from dns-json `data`: one or more quoted character-strings
    (`"a" "b"` is `ab`, with \\" \\\\ and \\DDD escapes), or unquoted text as some resolvers send."""
    data = data.strip()
    if not data.startswith('"'):
        return data
    out: list[str] = []
    i, n, inside = 0, len(data), False
    while i < n:
        ch = data[i]
        if not inside:
            if ch == '"':
                inside = True
            i += 1
            continue
        if ch == '"':
            inside = False
        elif ch == "\\" and i + 1 < n:
            nxt = data[i + 1]
            if nxt.isdigit() and i + 3 < n and data[i + 1 : i + 4].isdigit():
                out.append(chr(int(data[i + 1 : i + 4])))
                i += 3
            else:
                out.append(nxt)
                i += 1
        else:
            out.append(ch)
        i += 1
    return "".join(out)


class ResolverError(Exception):
    """The DNS-over-HTTPS resolver gave no usable answer (unreachable, HTTP error, not dns-json)."""


async def doh_query(http: HttpClient, resolver_url: str, name: str, rtype: str, *, timeout: float = 5.0) -> DohAnswer:
    url = f"{resolver_url}{'&' if '?' in resolver_url else '?'}name={quote(name, safe='')}&type={rtype}"
    try:
        resp = await http.request("GET", url, headers={"accept": "application/dns-json"}, timeout=timeout)
    except HttpError:
        raise ResolverError("the DNS resolver is unreachable") from None
    if resp.status != 200:
        raise ResolverError(f"the DNS resolver answered HTTP {resp.status}")
    try:
        return DohAnswer.model_validate(json.loads(resp.body.decode("utf-8")))
    except (ValueError, UnicodeDecodeError, ValidationError):
        raise ResolverError("the DNS resolver's answer is not dns-json") from None


class OwnershipResult(BaseModel):
    """The outcome of one ownership check."""

    model_config = ConfigDict(frozen=True)

    verified: bool
    method: Literal["dns-txt", "http"] | None = None
    detail: str
    resolver_failed: bool = False  # the TXT lookup could not be made (not a negative answer)


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


async def _txt_check(http: HttpClient, resolver_url: str, domain: str, token: str, timeout: float) -> bool:
    answer = await doh_query(http, resolver_url, challenge_name(domain), "TXT", timeout=timeout)
    if answer.status != 0:  # NXDOMAIN (3), SERVFAIL (2), …: no record
        return False
    return any(r.type == DNS_TXT and _same(txt_value(r.data), token) for r in answer.answer)


async def _public_addresses(http: HttpClient, resolver_url: str, domain: str, timeout: float) -> bool:
    """Every A/AAAA answer of `domain` is a global address (and there is one): the CLI's guard
    before it fetches a tenant-named URL from the operator's network."""
    found = []
    for rtype, code in (("A", DNS_A), ("AAAA", DNS_AAAA)):
        answer = await doh_query(http, resolver_url, domain, rtype, timeout=timeout)
        for r in answer.answer:
            if r.type == code:
                try:
                    found.append(ipaddress.ip_address(r.data.strip()))
                except ValueError:
                    return False
    return bool(found) and all(a.is_global for a in found)


async def _http_check(http: HttpClient, domain: str, token: str, timeout: float, http_base: str | None) -> bool:
    url = challenge_url(domain, token)
    headers = {"accept": "text/plain"}
    if http_base is not None:  # tests: the same request, sent to a loopback server
        url = http_base.rstrip("/") + WELL_KNOWN_PREFIX + token
        headers["host"] = domain
    try:
        resp = await http.request("GET", url, headers=headers, timeout=timeout)
    except HttpError:
        return False
    return resp.status == 200 and _same(resp.body[:MAX_HTTP_BODY].decode("utf-8", "replace").strip(), token)


async def check_ownership(
    http: HttpClient,
    domain: str,
    token: str,
    *,
    resolver_url: str = DEFAULT_DOH_URL,
    use_http: bool = True,
    public_only: bool = False,
    http_base: str | None = None,
    timeout: float = 5.0,
) -> OwnershipResult:
    """Is `token` published for `domain`? The TXT record first, then the HTTP URL.

    `public_only` (the CLI): fetch the HTTP URL only when the name resolves to global
    addresses alone, so a tenant cannot point the operator's machine at its own network.
    """
    if not TOKEN_RE.match(token or ""):
        return OwnershipResult(verified=False, detail="this domain has no verification token")
    resolver_failed = False
    try:
        if await _txt_check(http, resolver_url, domain, token, timeout):
            return OwnershipResult(
                verified=True, method="dns-txt", detail=f"TXT {challenge_name(domain)} holds the token"
            )
        txt_detail = f"no TXT record {challenge_name(domain)} holding the token"
    except ResolverError as exc:
        resolver_failed, txt_detail = True, str(exc)
    if use_http:
        allowed = True
        if public_only:
            try:
                allowed = await _public_addresses(http, resolver_url, domain, timeout)
            except ResolverError:
                allowed = False
        if allowed and await _http_check(http, domain, token, timeout, http_base):
            return OwnershipResult(
                verified=True, method="http", detail=f"{challenge_url(domain, token)} serves the token"
            )
        http_detail = (
            "not fetched: the name does not resolve to public addresses only"
            if not allowed
            else f"{challenge_url(domain, token)} does not serve the token"
        )
        return OwnershipResult(verified=False, resolver_failed=resolver_failed, detail=f"{txt_detail}; {http_detail}")
    return OwnershipResult(verified=False, resolver_failed=resolver_failed, detail=txt_detail)

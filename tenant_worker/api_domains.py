"""A tenant's custom domains through the tenant API (tenant admins). `GET /api/domains`, the list
every member may read, is in api_data.

    POST   /api/domains                   {"domain"}   claim a custom domain: 201, stored pending with a token
    GET    /api/domains/<domain>                       its state and, while pending, how to prove ownership
    POST   /api/domains/<domain>/verify                check the token (DNS TXT over DoH, or HTTP); 200 verified
    DELETE /api/domains/<domain>                       give a custom domain up (never the primary domain)

Supabase is the authority (supabase/migrations/20261126232039_domain_rules.sql), whichever path adds a
domain, the operator's CLI included: the quota (429 `usage_limit_exceeded`, from the tenant's row
lock, so concurrent adds cannot pass it), no overlap with another tenant's names (409, one
answer for "taken", "under" and "above" alike, so nothing about a neighbour is told), a claim is
`pending` with a random token only the database makes, and only the service role marks it
verified: this Worker does, after it has seen the token. The names rules (syntax, the platform
zone, the tenant type) are shared.domains, the same the CLI applies. A verified domain is routed
(and gets its Cloudflare for SaaS custom hostname) at the operator's next `verify --repair` or
`domains status --refresh`; a pending one never is.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.domains import (
    Actor,
    DomainError,
    check_ownership,
    classify,
    instructions,
    parse_domain,
)
from shared.outbound_http import HttpError
from shared.supabase import SupabaseClient, SupabaseError
from shared.tiers import UsageKind
from shared.usage import UsageDecision, decision
from tenant_worker.api_usage import domain_count
from tenant_worker.inbound_http import ApiError, Call, Reply, RequestBody, Route, json_reply
from tenant_worker.metering import audit_limit_hit, limit_exceeded, usage_view
from tenant_worker.principal import Principal, Role, require
from tenant_worker.request_body import read_body
from tenant_worker.supabase_access import (
    record_audit,
    service_db,
    supabase_failure,
    tenant_db,
)

log = logging.getLogger("cmgsite.tenant.domains")

DOMAIN_COLUMNS = (
    "domain,domain_type,ssl_status,dns_configured,verification_status,verification_token,"
    "verified_at,verification_checked_at,verification_detail"
)
# The domain rules' SQLSTATEs (supabase/migrations/20261126232039_domain_rules.sql).
QUOTA_SQLSTATE, TAKEN_SQLSTATE = "CMQ01", "CMD01"
ROUTING_NOTE = "The platform routes a verified domain at its next sync (within minutes)."


class DomainRequest(RequestBody):
    domain: str = Field(min_length=1, max_length=260)


class DomainRow(BaseModel):
    """A tenant_domains row as PostgREST returns it (the boundary: nothing else reaches the logic)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    domain: str
    domain_type: Literal["primary", "custom", "subdomain"]
    ssl_status: str
    dns_configured: bool
    verification_status: Literal["pending", "verified"]
    verification_token: str | None = None
    verified_at: str | None = None
    verification_checked_at: str | None = None
    verification_detail: str | None = None


def _row(data: Any) -> DomainRow:
    try:
        return DomainRow.model_validate(data)
    except ValidationError:
        log.warning(json.dumps({"event": "domain_row_unexpected"}))
        raise ApiError(502, "upstream_error", "The data service returned an unexpected answer.") from None


def view(row: DomainRow) -> dict[str, Any]:
    """A domain as the API shows it; while pending, the two ways to prove ownership."""
    verification: dict[str, Any] = {
        "status": row.verification_status,
        "verified_at": row.verified_at,
        "checked_at": row.verification_checked_at,
        "detail": row.verification_detail,
    }
    if row.verification_status == "pending" and row.verification_token:
        verification["methods"] = [
            m.model_dump(exclude_none=True) for m in instructions(row.domain, row.verification_token)
        ]
    return {
        "domain": row.domain,
        "domain_type": row.domain_type,
        "ssl_status": row.ssl_status,
        "dns_configured": row.dns_configured,
        "verification": verification,
    }


def _resolver(call: Call) -> str:
    return call.services.config.doh_resolver_url


def _name(raw: str) -> str:
    try:
        return parse_domain(raw)
    except DomainError as exc:
        raise ApiError(422, "invalid_domain", f"Not a usable domain name: {exc.message}.") from None


def _quota_decision(call: Call, exc: SupabaseError) -> UsageDecision:
    """The database's quota refusal as a refused decision (kind domains, a level: no reset)."""
    limit = used = None
    try:
        detail = json.loads(exc.details or "")
        limit, used = int(detail["limit"]), int(detail["used"])
    except (ValueError, TypeError, KeyError):
        pass
    now = call.services.clock()
    fallback = decision(UsageKind.DOMAINS, call.tenant.tier, 0, now, allowed=False)
    limit = fallback.limit if limit is None else limit
    used = limit if used is None else used
    return UsageDecision.model_construct(
        allowed=False,
        kind=UsageKind.DOMAINS,
        used=used,
        limit=limit,
        remaining=max(0, limit - used),
        period=fallback.period,
        resets_at=None,
    )


def _failure(call: Call, exc: Exception) -> ApiError:
    """Supabase's answer as the API's: the domain rules' own codes here, the rest as
    supabase_failure() maps every data call (outages 503 with Retry-After, RLS 403, …)."""
    if isinstance(exc, SupabaseError):
        if exc.code == QUOTA_SQLSTATE:
            return limit_exceeded(_quota_decision(call, exc), call.services.clock())
        if exc.code in (TAKEN_SQLSTATE, "23505"):
            # One answer for taken, under and above another tenant's name: nothing more is told.
            return ApiError(409, "domain_unavailable", "That domain is not available.")
        if exc.code == "42501" and exc.hint == "primary_domain":
            return ApiError(
                409,
                "primary_domain",
                "This is the site's primary domain: it can only be removed "
                "by the platform operator, together with the site.",
            )
        if exc.code == "42501" and exc.hint == "custom_domains_not_allowed":
            return ApiError(
                403,
                "custom_domains_not_allowed",
                "This site's address is assigned by the platform: custom domains need a custom-domain plan.",
            )
    return supabase_failure(exc)


def _db(call: Call, principal: Principal) -> SupabaseClient:
    return tenant_db(call, principal)


async def _usage(call: Call, principal: Principal) -> dict[str, Any] | None:
    """Where the tenant stands after the change (Supabase's count), or None if it cannot be read now."""
    try:
        used = await domain_count(call, principal)
    except (ApiError, SupabaseError, HttpError):
        return None
    return usage_view(decision(UsageKind.DOMAINS, call.tenant.tier, used, call.services.clock(), allowed=True))


async def _own(call: Call, db: SupabaseClient, domain: str) -> DomainRow:
    """This tenant's row for `domain`; RLS hides every other tenant's, so theirs are 404 like missing ones."""
    try:
        rows = await db.select(
            "tenant_domains", columns=DOMAIN_COLUMNS, eq={"tenant_id": call.tenant.tenant_id, "domain": domain}, limit=1
        )
    except (SupabaseError, HttpError) as exc:
        raise _failure(call, exc) from None
    if not rows:
        raise ApiError(404, "not_found", "No domain of this site has that name.")
    return _row(rows[0])


# ---- handlers ------------------------------------------------------------------------------
async def add_domain(call: Call) -> Reply:
    principal = require(call, Role.ADMIN)
    domain = _name((await read_body(call, DomainRequest)).domain)
    try:
        classify(call.tenant.tenant_type, domain, by=Actor.TENANT)
    except DomainError as exc:
        status = 403 if exc.code == "custom_domains_not_allowed" else 422
        raise ApiError(status, exc.code, exc.message) from None
    try:
        rows = await _db(call, principal).insert(
            "tenant_domains",
            {"tenant_id": call.tenant.tenant_id, "domain": domain, "domain_type": "custom"},
            columns=DOMAIN_COLUMNS,
        )
    except (SupabaseError, HttpError) as exc:
        if isinstance(exc, SupabaseError) and exc.code == QUOTA_SQLSTATE:
            await audit_limit_hit(call, principal.user_id, _quota_decision(call, exc))
        raise _failure(call, exc) from None
    if not rows:
        raise ApiError(403, "forbidden", "Not allowed.")
    row = _row(rows[0])
    await record_audit(
        call,
        actor=principal.user_id,
        action="domain.added",
        target=domain,
        details={"verification": row.verification_status},
    )
    return json_reply(
        {
            **view(row),
            "usage": await _usage(call, principal),
            "note": "Publish the TXT record (or serve the token over HTTP), then call "
            f"POST /api/domains/{domain}/verify. " + ROUTING_NOTE,
        },
        status=201,
    )


async def get_domain(call: Call) -> Reply:
    principal = require(call, Role.ADMIN)
    row = await _own(call, _db(call, principal), _name(call.params["domain"]))
    return json_reply(view(row), headers={"cache-control": "no-store"})


async def verify_domain(call: Call) -> Reply:
    principal = require(call, Role.ADMIN)
    domain = _name(call.params["domain"])
    row = await _own(call, _db(call, principal), domain)
    if row.verification_status == "verified":
        return json_reply({**view(row), "note": ROUTING_NOTE})
    token = row.verification_token or ""
    result = await check_ownership(call.services.http, domain, token, resolver_url=_resolver(call))
    values: dict[str, Any] = {
        "verification_checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(call.services.clock())),
        "verification_detail": result.detail[:300],
    }
    if result.verified:
        values["verification_status"] = "verified"
    try:  # the service role: the only role that may mark a domain verified (never the tenant's token)
        updated = await service_db(call).update(
            "tenant_domains",
            values,
            columns=DOMAIN_COLUMNS,
            eq={
                "tenant_id": call.tenant.tenant_id,
                "domain": domain,
                "verification_status": "pending",
                "verification_token": token,
            },
        )
    except (ApiError, SupabaseError, HttpError) as exc:
        if result.verified:
            raise _failure(call, exc) from None
        updated = []  # a failed check stays failed; only its note was not kept
    if not result.verified:
        if result.resolver_failed:
            raise ApiError(
                503,
                "verification_unavailable",
                "The DNS lookup could not be made. Please try again.",
                headers={"retry-after": "30"},
            )
        current = _row(updated[0]) if updated else row
        await record_audit(
            call,
            actor=principal.user_id,
            action="domain.verification_failed",
            target=domain,
            details={"detail": result.detail[:300]},
            outcome="failure",
        )
        raise ApiError(
            422,
            "verification_failed",
            f"Ownership of {domain} is not proven yet: {result.detail}.",
            extra={"verification": view(current)["verification"]},
        )
    if not updated:  # removed or re-claimed meanwhile
        raise ApiError(409, "domain_changed", "The domain changed while it was being checked. Please try again.")
    await record_audit(
        call, actor=principal.user_id, action="domain.verified", target=domain, details={"method": result.method}
    )
    return json_reply({**view(_row(updated[0])), "note": ROUTING_NOTE})


async def remove_domain(call: Call) -> Reply:
    principal = require(call, Role.ADMIN)
    domain = _name(call.params["domain"])
    db = _db(call, principal)
    row = await _own(call, db, domain)
    try:
        tenants = await db.select("tenants", columns="domain", eq={"tenant_id": call.tenant.tenant_id}, limit=1)
    except (SupabaseError, HttpError) as exc:
        raise _failure(call, exc) from None
    if tenants and tenants[0].get("domain") == domain:
        raise ApiError(
            409,
            "primary_domain",
            "This is the site's primary domain: it can only be removed "
            "by the platform operator, together with the site.",
        )
    if row.domain_type != "custom":
        raise ApiError(
            409,
            "platform_assigned_domain",
            "The platform assigned this domain: only the platform operator can remove it.",
        )
    try:
        deleted = await db.delete(
            "tenant_domains", eq={"tenant_id": call.tenant.tenant_id, "domain": domain}, columns="domain"
        )
    except (SupabaseError, HttpError) as exc:
        raise _failure(call, exc) from None
    if not deleted:
        raise ApiError(404, "not_found", "No domain of this site has that name.")
    await record_audit(call, actor=principal.user_id, action="domain.removed", target=domain)
    return json_reply(
        {
            "deleted": domain,
            "usage": await _usage(call, principal),
            "note": "The platform stops routing it at its next sync (within minutes).",
        }
    )


ROUTES = [
    Route("POST", "/api/domains", add_domain, "domain_add"),
    Route("GET", "/api/domains/<domain>", get_domain, "domain_get"),
    Route("POST", "/api/domains/<domain>/verify", verify_domain, "domain_verify"),
    Route("DELETE", "/api/domains/<domain>", remove_domain, "domain_remove"),
]

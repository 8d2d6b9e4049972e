"""shared.domains without servers of ours: the name rules both paths apply (tenant API, CLI), and the
ownership check against a loopback DNS-over-HTTPS resolver (tests/fake_doh.py) and a loopback web
server for the HTTP token (the Worker's own run of the DoH path is in test_domains_http.py)."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from localrt.http_client import HttpxClient
from shared.domains import (
    Actor,
    DomainError,
    OwnershipResult,
    challenge_name,
    check_ownership,
    classify,
    instructions,
    overlapping,
    parse_domain,
    txt_value,
)
from shared.models import TenantType
from tests.fake_doh import FakeDoh, quoted

TOKEN = "0f" * 32
ZONE = "cozyartzmedia.com"


@pytest.mark.parametrize(
    "raw, expected", [("Shop.Example.COM.", "shop.example.com"), ("bücher.example", "xn--bcher-kva.example")]
)
def test_names_are_normalised(raw: str, expected: str) -> None:
    assert parse_domain(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "com",
        "localhost",
        "1.2.3.4",
        "shop.example.com:443",
        "http://a.example",
        "a.example/x",
        "*.example.com",
        "a..example",
        "-a.example",
        "x" * 300,
        None,
        42,
    ],
)
def test_junk_is_refused_as_invalid(raw: Any) -> None:
    with pytest.raises(DomainError) as err:
        parse_domain(raw)
    assert err.value.code == "invalid_domain"


@pytest.mark.parametrize("tenant_type", list(TenantType))
@pytest.mark.parametrize("domain", [ZONE, "www." + ZONE, "partner9." + ZONE, "a.b." + ZONE])
def test_a_tenant_never_adds_a_name_in_the_platform_zone(tenant_type: TenantType, domain: str) -> None:
    with pytest.raises(DomainError) as err:
        classify(tenant_type, domain, by=Actor.TENANT, zone=ZONE)
    assert err.value.code == "platform_zone"


def test_a_partner_subdomain_tenant_adds_no_custom_domain_on_either_path() -> None:
    for actor in Actor:
        with pytest.raises(DomainError) as err:
            classify(TenantType.PARTNER_SUBDOMAIN, "login.partner-seo.com", by=actor, zone=ZONE)
        assert err.value.code == "custom_domains_not_allowed"
    assert classify(TenantType.CUSTOM_DOMAIN, "shop.example.org", by=Actor.TENANT, zone=ZONE) == "custom"
    assert classify(TenantType.PRIMARY, "shop.example.org", by=Actor.TENANT, zone=ZONE) == "custom"


def test_the_operator_assigns_platform_names_by_type() -> None:
    assert classify(TenantType.PRIMARY, ZONE, by=Actor.OPERATOR, zone=ZONE) == "primary"
    assert classify(TenantType.PARTNER_SUBDOMAIN, "p." + ZONE, by=Actor.OPERATOR, zone=ZONE) == "subdomain"
    with pytest.raises(DomainError, match="partner-subdomain"):
        classify(TenantType.CUSTOM_DOMAIN, "p." + ZONE, by=Actor.OPERATOR, zone=ZONE)
    with pytest.raises(DomainError, match="primary tenant"):
        classify(TenantType.PARTNER_SUBDOMAIN, "www." + ZONE, by=Actor.OPERATOR, zone=ZONE)


HELD = [("cozyartz", ZONE), ("partner1", "partner1." + ZONE), ("partner-seo", "partner-seo.com")]


@pytest.mark.parametrize(
    "domain, clash",
    [
        ("partner-seo.com", ("partner-seo", "partner-seo.com")),  # equal
        ("login.partner-seo.com", ("partner-seo", "partner-seo.com")),  # under
        ("x.partner1." + ZONE, ("partner1", "partner1." + ZONE)),  # under a partner subdomain
        ("notpartner-seo.com", None),  # label-wise, not a suffix
        ("partner2." + ZONE, None),  # a new partner slot under the apex
    ],
)
def test_overlap_with_another_tenants_names(domain: str, clash: tuple[str, str] | None) -> None:
    assert overlapping(domain, "acme", HELD, zone=ZONE) == clash
    if clash is not None:
        assert overlapping(domain, clash[0], HELD, zone=ZONE) is None  # a tenant's own names are fine


def test_a_parent_of_another_tenants_name_overlaps() -> None:
    assert overlapping("shop.example", "acme", [("other", "eu.shop.example")], zone=ZONE) == (
        "other",
        "eu.shop.example",
    )


@pytest.mark.parametrize(
    "data, text",
    [
        ('"abc"', "abc"),
        ('"ab" "cd"', "abcd"),
        ("abc", "abc"),
        ('"a\\"b\\\\c"', 'a"b\\c'),
        ('"\\065\\066"', "AB"),
        ('""', ""),
    ],
)
def test_txt_data_as_resolvers_present_it(data: str, text: str) -> None:
    assert txt_value(data) == text


def test_a_long_txt_value_split_in_character_strings_still_matches() -> None:
    assert txt_value(quoted("k" * 300)) == "k" * 300


def test_instructions_name_the_record_and_the_url() -> None:
    txt, http = instructions("shop.example", TOKEN)
    assert (txt.name, txt.value) == ("_cmgsite-challenge.shop.example", TOKEN)
    assert http.url == f"http://shop.example/.well-known/cmgsite-challenge/{TOKEN}" and http.body == TOKEN


# ---- the ownership check ------------------------------------------------------------------
@pytest.fixture
def doh() -> Iterator[FakeDoh]:
    with FakeDoh() as fake:
        yield fake


def check(doh: FakeDoh, domain: str, token: str = TOKEN, **kw: Any) -> OwnershipResult:
    async def go() -> OwnershipResult:
        async with HttpxClient() as http:
            return await check_ownership(http, domain, token, resolver_url=doh.url, timeout=3, **kw)

    return asyncio.run(go())


def test_the_txt_record_proves_ownership(doh: FakeDoh) -> None:
    doh.txt("_cmgsite-challenge.shop.example", "v=unrelated")
    doh.txt("_cmgsite-challenge.shop.example", TOKEN)
    result = check(doh, "shop.example", use_http=False)
    assert result.verified and result.method == "dns-txt"
    assert ("_cmgsite-challenge.shop.example", "TXT") in doh.queries


@pytest.mark.parametrize("published", [TOKEN[:-1], TOKEN + "0", TOKEN.upper(), ""])
def test_a_near_miss_or_missing_record_proves_nothing(doh: FakeDoh, published: str) -> None:
    if published:
        doh.txt("_cmgsite-challenge.shop.example", published)
    result = check(doh, "shop.example", use_http=False)
    assert not result.verified and not result.resolver_failed and challenge_name("shop.example") in result.detail


def test_the_record_of_another_name_proves_nothing(doh: FakeDoh) -> None:
    doh.txt("_cmgsite-challenge.other.example", TOKEN)  # the attacker's own zone
    doh.txt("shop.example", TOKEN)  # not the challenge name
    assert not check(doh, "shop.example", use_http=False).verified


def test_a_resolver_outage_is_not_a_negative_answer(doh: FakeDoh) -> None:
    doh.failing = True
    result = check(doh, "shop.example", use_http=False)
    assert not result.verified and result.resolver_failed


def test_no_token_checks_nothing(doh: FakeDoh) -> None:
    doh.txt("_cmgsite-challenge.shop.example", "")
    assert not check(doh, "shop.example", token="").verified
    assert doh.queries == []


class TokenSite:
    """A web server on loopback serving one body under the well-known path, recording Host headers."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        self.hosts: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                site.hosts.append(self.headers.get("host") or "")
                ok = self.path.startswith("/.well-known/cmgsite-challenge/")
                self.send_response(status if ok else 404)
                self.send_header("content-length", str(len(body) if ok else 0))
                self.end_headers()
                if ok:
                    self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(
    "body, status, verified",
    [
        (TOKEN.encode() + b"\n", 200, True),
        (TOKEN.encode(), 404, False),
        (b"nope", 200, False),
        (b"x" * 2048 + TOKEN.encode(), 200, False),
    ],
)
def test_the_http_token_path(doh: FakeDoh, body: bytes, status: int, verified: bool) -> None:
    site = TokenSite(body, status)
    try:
        result = check(doh, "shop.example", http_base=site.base)
    finally:
        site.close()
    assert result.verified is verified and (result.method == "http") is verified
    assert site.hosts == ["shop.example"]  # the request is the one http://shop.example/… would be


def test_the_cli_fetches_no_url_of_a_name_pointing_inside(doh: FakeDoh) -> None:
    """public_only (the operator's CLI): a tenant cannot aim the operator's machine at loopback/private hosts."""
    site = TokenSite(TOKEN.encode())
    doh.a("shop.example", "127.0.0.1")
    try:
        result = check(doh, "shop.example", http_base=site.base, public_only=True)
    finally:
        site.close()
    assert not result.verified and site.hosts == [] and "public addresses" in result.detail

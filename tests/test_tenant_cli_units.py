"""Fast checks of the control plane's input parsing and its Cloudflare API edge (no servers)."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.cloudflare import CloudflareApi, CloudflareError, registry_ssl_status
from controlplane.errors import BackendError, Refused
from controlplane.model import DOMAIN_RE, domain_type_for, new_tenant, parse_domain, script_name_for
from controlplane.replica import render
from shared.http import HttpError, HttpResponse
from shared.models import TenantType


@given(st.text(max_size=300))
@settings(max_examples=1500, deadline=None)
def test_any_operator_typed_domain_is_normalised_or_refused(raw: str) -> None:
    try:
        domain = parse_domain(raw)
    except Refused as exc:
        assert str(exc).startswith("invalid domain")
        return
    assert DOMAIN_RE.match(domain) and domain == domain.lower() and len(domain) <= 253


@pytest.mark.parametrize("raw, expected", [
    ("Shop.Example.COM.", "shop.example.com"),
    ("bücher.example", "xn--bcher-kva.example"),
    ("  a-b.example  ", "a-b.example"),
])
def test_domains_are_normalised(raw: str, expected: str) -> None:
    assert parse_domain(raw) == expected


@pytest.mark.parametrize("raw", ["", "localhost", "example", "a..example", "-a.example", "a.example:443",
                                 "https://a.example", "a.example/x", "user@a.example", "192.168.0.1", "[::1]",
                                 "a_b.example", "x" * 64 + ".example", "a.example\nb.example", "*.example.com"])
def test_junk_domains_are_refused(raw: str) -> None:
    with pytest.raises(Refused):
        parse_domain(raw)


def test_domain_kind_must_fit_the_tenant_type() -> None:
    assert domain_type_for(TenantType.PARTNER_SUBDOMAIN, "p.cozyartzmedia.com") == "subdomain"
    assert domain_type_for(TenantType.CUSTOM_DOMAIN, "shop.example.com") == "custom"
    with pytest.raises(Refused, match="partner-subdomain"):
        domain_type_for(TenantType.CUSTOM_DOMAIN, "evil.cozyartzmedia.com")  # a partner slot, not a custom domain
    with pytest.raises(Refused, match="primary tenant"):
        domain_type_for(TenantType.CUSTOM_DOMAIN, "cozyartzmedia.com")


def test_tenant_ids_that_would_make_bad_script_names_are_refused() -> None:
    with pytest.raises(Refused, match="too long"):
        script_name_for("a" * 60)
    with pytest.raises(Refused, match="invalid tenant id"):
        new_tenant("../etc", "X", "custom-domain", "x.example", "starter")


@given(st.text(max_size=80))
@settings(max_examples=500, deadline=None)
def test_rendered_sql_literals_cannot_break_out(value: str) -> None:
    if "\x00" in value:
        with pytest.raises(ValueError):
            render(("SELECT ?1", (value,)))
        return
    sql = render(("SELECT ?1", (value,)))
    body = sql[len("SELECT "):]
    assert body[0] == body[-1] == "'" and "'" not in body[1:-1].replace("''", "")


def test_ssl_states_map_to_the_registry_vocabulary() -> None:
    assert registry_ssl_status("active") == "active"
    for pending in ("initializing", "pending_validation", "pending_issuance", "pending_deployment"):
        assert registry_ssl_status(pending) == "pending"
    for failed in ("validation_timed_out", "issuance_timed_out", "expired", "deleted"):
        assert registry_ssl_status(failed) == "failed"


class Canned:
    def __init__(self, response: HttpResponse | Exception) -> None:
        self.response = response

    async def request(self, method: str, url: str, **kw: object) -> HttpResponse:
        if isinstance(self.response, Exception):
            raise self.response
        return self.response


async def test_cloudflare_html_error_page_becomes_a_clear_error() -> None:
    api = CloudflareApi(Canned(HttpResponse(502, {}, b"<html>502 Bad Gateway</html>")), token="t", account_id="a",
                        zone_id="z")
    with pytest.raises(CloudflareError, match="HTTP 502.*not the API's JSON envelope"):
        await api.create_custom_hostname("shop.example.com")


async def test_cloudflare_success_false_with_200_is_still_an_error() -> None:
    body = json.dumps({"success": False, "errors": [{"code": 1406, "message": "Duplicate custom hostname found."}],
                       "messages": [], "result": None}).encode()
    api = CloudflareApi(Canned(HttpResponse(200, {}, body)), token="t", account_id="a", zone_id="z")
    with pytest.raises(CloudflareError, match="1406: Duplicate custom hostname found."):
        await api.create_custom_hostname("shop.example.com")


async def test_cloudflare_unreachable_is_a_backend_error_not_a_traceback() -> None:
    api = CloudflareApi(Canned(HttpError("connection refused")), token="t", account_id="a", zone_id="z")
    with pytest.raises(BackendError, match="unreachable"):
        await api.kv_delete("ns", "host:x.example")


@pytest.mark.parametrize("argv", [
    ["domains", "status", "--json", "partner-seo"],
    ["domains", "status", "partner-seo", "--json", "--refresh"],
    ["domains", "verify", "--json", "partner-seo", "login.partner-seo.com"],
    ["show", "--json", "partner-seo"],
    ["deploy", "--dry-run", "partner-seo"],
])
def test_a_tenant_id_after_an_option_is_understood(argv: list[str]) -> None:
    from scripts.tenants import parser

    args = parser().parse_args(argv)
    assert args.tenant_id == "partner-seo" and (args.json or args.dry_run)

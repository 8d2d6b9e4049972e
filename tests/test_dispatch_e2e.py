"""End to end over real HTTP: the dispatcher routes by Host to each tenant's own Worker."""
from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest

import js
from localrt.dispatch import ScriptSpec
from localrt.platform import Platform
from shared.context import context_headers, derive_tenant_key
from shared.models import TenantContext, TenantType
from shared.tiers import Tier
from tests.support import LiveServer

HOSTS = {
    "cozyartzmedia.com": ("cozyartz", "primary", "enterprise"),
    "partner1.cozyartzmedia.com": ("partner1", "partner-subdomain", "growth"),
    "partner-seo.com": ("partner-seo", "custom-domain", "starter"),
}


def get(live: LiveServer, host: str, path: str = "/api/health", **kw: object) -> httpx.Response:
    headers = {"Host": host, **kw.pop("headers", {})}  # type: ignore[dict-item]
    return httpx.get(live.url + path, headers=headers, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("host", list(HOSTS))
def test_each_host_is_answered_by_its_own_worker(live: LiveServer, platform: Platform, host: str) -> None:
    r = get(live, host)
    assert r.status_code == 200
    body = r.json()
    tenant_id, tenant_type, tier = HOSTS[host]
    assert (body["tenant_id"], body["tenant_type"], body["tier"], body["host"]) == (tenant_id, tenant_type, tier, host)
    assert body["status"] == "ok" and body["version"]
    assert body["request_id"] == r.headers["x-request-id"]
    script = {"cozyartz": "cmgsite-primary-tenant", "partner1": "cmgsite-partner-tenant",
              "partner-seo": "cmgsite-custom-tenant"}[tenant_id]
    assert platform.namespace.invocations[-1][0] == script


def test_host_with_case_port_and_trailing_dot_normalises(live: LiveServer) -> None:
    r = get(live, "PARTNER1.cozyartzmedia.com.:8787")
    assert r.status_code == 200 and r.json()["tenant_id"] == "partner1"
    assert r.json()["host"] == "partner1.cozyartzmedia.com"


def test_unknown_host_is_404_and_says_nothing_about_tenants(live: LiveServer) -> None:
    api = get(live, "nobody.example")
    assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"
    page = get(live, "nobody.example", "/")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    sibling = get(live, "partner9.cozyartzmedia.com", "/")
    # Same page for any unknown host, bar the request id: nothing tells tenants apart.
    strip = lambda r: r.text.replace(r.headers["x-request-id"], "")  # noqa: E731
    assert strip(page) == strip(sibling)
    for name in ("partner1", "partner-seo", "cozyartz", "Partner"):
        assert name not in api.text and name not in sibling.text


def raw_request(live: LiveServer, head: str) -> tuple[int, bytes]:
    """Send bytes no well-behaved client would (httpx refuses to)."""
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as s:
        s.sendall(head.encode("latin-1") + b"\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


@pytest.mark.parametrize("host", ["", "bad host", "a..b", "-x.com", "x" * 300, "[::1]", "user@x.com",
                                  "x.com:99999", "x.com:port", "\u00e9\u00e9..com", "a/b.com", "%41.com"])
def test_malformed_host_is_400(live: LiveServer, host: str) -> None:
    status, data = raw_request(live, f"GET /api/health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n")
    assert status == 400
    if b'"bad_host"' in data:  # the dispatcher refused it: with a request id, as every response
        assert b"x-request-id:" in data.lower()
    else:  # the HTTP parser refused it before the dispatcher saw it
        assert b"Invalid HTTP request" in data


def test_missing_host_is_400(live: LiveServer) -> None:
    status, data = raw_request(live, "GET /api/health HTTP/1.0\r\nConnection: close\r\n")
    assert status == 400 and b'"bad_host"' in data


def test_idna_host_is_punycoded(platform: Platform, live: LiveServer) -> None:
    asyncio.run(platform.d1.prepare(
        "INSERT INTO tenant_domains (domain, tenant_id, domain_type) VALUES ('xn--bcher-kva.example', 'partner-seo', 'custom')"
    ).run())
    status, data = raw_request(live, "GET /api/health HTTP/1.1\r\nHost: B\u00fccher.example\r\nConnection: close\r\n")
    assert status == 200 and b'"tenant_id": "partner-seo"' in data and b"xn--bcher-kva.example" in data


def _set_status(platform: Platform, tenant_id: str, status: str) -> None:
    asyncio.run(platform.d1.prepare("UPDATE tenants SET status = ?1 WHERE id = ?2").bind(status, tenant_id).run())


def test_suspended_tenant_is_403_and_inactive_410(platform: Platform, live: LiveServer) -> None:
    _set_status(platform, "partner1", "suspended")
    _set_status(platform, "partner-seo", "inactive")
    r = get(live, "partner1.cozyartzmedia.com")
    assert r.status_code == 403 and r.json()["error"]["code"] == "tenant_suspended"
    page = get(live, "partner1.cozyartzmedia.com", "/dashboard")
    assert page.status_code == 403 and "Partner One" in page.text and "text/html" in page.headers["content-type"]
    assert get(live, "partner-seo.com").status_code == 410
    assert get(live, "cozyartzmedia.com").status_code == 200


def test_script_missing_from_namespace_is_502_with_request_id(platform: Platform, live: LiveServer) -> None:
    platform.namespace.remove("cmgsite-custom-tenant")
    r = get(live, "partner-seo.com")
    assert r.status_code == 502
    assert r.json()["error"]["request_id"] == r.headers["x-request-id"]
    page = get(live, "partner-seo.com", "/")
    assert page.status_code == 502 and r.headers["x-request-id"] not in page.text
    assert page.headers["x-request-id"] in page.text


def test_client_sent_tenant_headers_never_steer_or_arrive(platform: Platform, live: LiveServer) -> None:
    seen: list[dict[str, str]] = []
    spec = ScriptSpec("cmgsite-partner-tenant", module="tests.workers.echo", vars={"TENANT_ID": "partner1"})
    platform.namespace.deploy(spec)
    import tests.workers.echo as echo

    echo.SEEN = seen
    spoof = {
        "X-Tenant-Id": "cozyartz", "X-Tenant-Tier": "enterprise", "X-Tenant-Type": "primary",
        "x-tenant-signature": "v1=" + "0" * 64, "X-Tenant-Timestamp": "1", "X-Request-Id": "attacker-chosen-id",
        "Cloudflare-Workers-Version-Overrides": 'cmgsite-partner-tenant="v0"', "Cloudflare-Workers-Version-Key": "x",
        "X-Tenant-Evil": "1",
    }
    r = get(live, "partner1.cozyartzmedia.com", headers=spoof)
    assert r.status_code == 200
    got = seen[-1]
    assert got["x-tenant-id"] == "partner1" and got["x-tenant-tier"] == "growth"
    assert "x-tenant-evil" not in got and "cloudflare-workers-version-overrides" not in got
    assert "cloudflare-workers-version-key" not in got
    assert got["x-request-id"] != "attacker-chosen-id" and r.headers["x-request-id"] == got["x-request-id"]


def test_spoofed_tenant_id_does_not_change_which_tenant_answers(live: LiveServer) -> None:
    r = get(live, "partner-seo.com", headers={"X-Tenant-Id": "cozyartz", "X-Tenant-Type": "primary"})
    assert r.status_code == 200 and r.json()["tenant_id"] == "partner-seo" and r.json()["tier"] == "starter"


def _call_tenant_directly(platform: Platform, script: str, headers: dict[str, str]) -> tuple[int, dict]:
    """What an attacker who reached a tenant Worker without the dispatcher could send."""
    async def go() -> tuple[int, dict]:
        req = js.Request.new("https://partner1.cozyartzmedia.com/api/health", headers=list(headers.items()))
        resp = await platform.namespace.get(script).fetch(req)
        import json

        return resp.status, json.loads(resp.body)
    return asyncio.run(go())


def _ctx(tenant_id: str = "partner1", issued_at: int | None = None) -> TenantContext:
    return TenantContext(tenant_id, TenantType.PARTNER_SUBDOMAIN, Tier.GROWTH, "partner1.cozyartzmedia.com",
                         "a1b2c3d4e5f6a7b8", int(time.time()) if issued_at is None else issued_at)


def test_tenant_worker_refuses_forged_stale_and_foreign_context(platform: Platform) -> None:
    master = platform.dispatcher_env.CONTEXT_SIGNING_SECRET
    good_key = derive_tenant_key(master, "partner1")
    status, body = _call_tenant_directly(platform, "cmgsite-partner-tenant", context_headers(_ctx(), good_key))
    assert status == 200 and body["tenant_id"] == "partner1"  # the genuine article passes

    attacks = {
        "no context": {},
        "forged with a guessed key": context_headers(_ctx(), "guessed-key"),
        "stale": context_headers(_ctx(issued_at=int(time.time()) - 3600), good_key),
        "from the future": context_headers(_ctx(issued_at=int(time.time()) + 3600), good_key),
        # A genuine context for another tenant, signed with that tenant's own key.
        "other tenant": context_headers(_ctx("cozyartz"), derive_tenant_key(master, "cozyartz")),
        "other tenant's key over our id": context_headers(_ctx(), derive_tenant_key(master, "cozyartz")),
    }
    tampered = context_headers(_ctx(), good_key)
    tampered["x-tenant-tier"] = "enterprise"
    attacks["tampered tier"] = tampered
    for name, headers in attacks.items():
        status, body = _call_tenant_directly(platform, "cmgsite-partner-tenant", headers)
        assert status == 403, name
        assert body["error"]["code"] == "forbidden", name


def test_unknown_path_on_tenant_is_404_json(live: LiveServer) -> None:
    r = get(live, "cozyartzmedia.com", "/api/does-not-exist")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert r.json()["error"]["request_id"] == r.headers["x-request-id"]
    r = httpx.post(live.url + "/api/health", headers={"Host": "cozyartzmedia.com"})
    assert r.status_code == 405


def test_path_traversal_is_refused(live: LiveServer) -> None:
    r = get(live, "cozyartzmedia.com", "/api/%2e%2e/%2e%2e/etc/passwd")
    assert r.status_code in (400, 404)
    assert "root:" not in r.text

"""End to end over real HTTP on the real workerd: the dispatcher routes by Host to each
tenant's own Worker (each in a workerd of its own, as scripts in a dispatch namespace)."""

from __future__ import annotations

import re
import socket
import time
from typing import Iterator

import httpx
import pytest

from localrt.devvars import read_dev_vars
from localrt.namespace import ScriptSpec
from shared.context import context_headers, derive_tenant_key
from shared.models import TenantContext, TenantType
from shared.tiers import Tier
from tests.support import Platform

HOSTS = {
    "cozyartzmedia.com": ("cozyartz", "primary", "enterprise"),
    "partner1.cozyartzmedia.com": ("partner1", "partner-subdomain", "growth"),
    "partner-seo.com": ("partner-seo", "custom-domain", "starter"),
}


def get(live: Platform, host: str, path: str = "/api/health", **kw: object) -> httpx.Response:
    return live.get(host, path, **kw)


@pytest.fixture
def live(platform: Platform) -> Platform:
    return platform


@pytest.mark.parametrize("host", list(HOSTS))
def test_each_host_is_answered_by_its_own_worker(live: Platform, platform: Platform, host: str) -> None:
    r = get(live, host)
    assert r.status_code == 200
    body = r.json()
    tenant_id, tenant_type, tier = HOSTS[host]
    assert (body["tenant_id"], body["tenant_type"], body["tier"], body["host"]) == (tenant_id, tenant_type, tier, host)
    assert body["status"] == "ok" and body["version"]
    assert body["request_id"] == r.headers["x-request-id"]
    script = {
        "cozyartz": "cmgsite-primary-tenant",
        "partner1": "cmgsite-partner-tenant",
        "partner-seo": "cmgsite-custom-tenant",
    }[tenant_id]
    assert platform.invocations()[-1]["script"] == script


def test_host_with_case_port_and_trailing_dot_normalises(live: Platform) -> None:
    r = get(live, "PARTNER1.cozyartzmedia.com.:8787")
    assert r.status_code == 200 and r.json()["tenant_id"] == "partner1"
    assert r.json()["host"] == "partner1.cozyartzmedia.com"


def test_unknown_host_is_404_and_says_nothing_about_tenants(live: Platform) -> None:
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


def raw_request(live: Platform, head: str) -> tuple[int, bytes]:
    """Send bytes no well-behaved client would (httpx refuses to)."""
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as s:
        s.sendall(head.encode("latin-1") + b"\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


@pytest.mark.parametrize(
    "host",
    [
        "",
        "bad host",
        "a..b",
        "-x.com",
        "x" * 300,
        "[::1]",
        "user@x.com",
        "x.com:99999",
        "x.com:port",
        "\u00e9\u00e9..com",
        "a/b.com",
        "%41.com",
    ],
)
def test_malformed_host_is_400(live: Platform, host: str) -> None:
    status, data = raw_request(live, f"GET /api/health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n")
    assert b"tenant_id" not in data and b"partner" not in data.lower()  # no tenant ever answers
    if b"bad_host" in data:  # the dispatcher refused it: with a request id, as every response
        assert status == 400 and b"x-request-id:" in data.lower()
    else:
        # Refused before any Worker ran: workerd's HTTP parser (400), or, for a Host no URL can
        # carry, Miniflare's local entry (500; Cloudflare's edge refuses those with 400).
        assert status in (400, 500)


def test_missing_host_is_400(live: Platform) -> None:
    status, data = raw_request(live, "GET /api/health HTTP/1.0\r\nConnection: close\r\n")
    assert status == 400 and b"tenant_id" not in data


def test_idna_host_is_punycoded(platform: Platform, live: Platform) -> None:
    platform.sql(
        "INSERT INTO tenant_domains (domain, tenant_id, domain_type) VALUES ('xn--bcher-kva.example', 'partner-seo', 'custom')"
    )
    try:
        # Clients send the A-label (workerd refuses raw UTF-8 in Host); case and dot still vary.
        status, data = raw_request(
            live, "GET /api/health HTTP/1.1\r\nHost: XN--BCHER-KVA.example.\r\nConnection: close\r\n"
        )
        assert status == 200 and b'"tenant_id": "partner-seo"' in data and b"xn--bcher-kva.example" in data
    finally:
        platform.sql("DELETE FROM tenant_domains WHERE domain = 'xn--bcher-kva.example'")
        platform.purge("xn--bcher-kva.example")


@pytest.fixture
def statuses(platform: Platform) -> Iterator[None]:
    yield
    for tenant_id, host in (("partner1", "partner1.cozyartzmedia.com"), ("partner-seo", "partner-seo.com")):
        platform.set_status(tenant_id, "active", [host])


def test_suspended_tenant_is_403_and_inactive_410(platform: Platform, live: Platform, statuses: None) -> None:
    platform.set_status("partner1", "suspended", ["partner1.cozyartzmedia.com"])
    platform.set_status("partner-seo", "inactive", ["partner-seo.com"])
    r = get(live, "partner1.cozyartzmedia.com")
    assert r.status_code == 403 and r.json()["error"]["code"] == "tenant_suspended"
    page = get(live, "partner1.cozyartzmedia.com", "/dashboard")
    assert page.status_code == 403 and "Partner One" in page.text and "text/html" in page.headers["content-type"]
    assert get(live, "partner-seo.com").status_code == 410
    assert get(live, "cozyartzmedia.com").status_code == 200


def test_script_missing_from_namespace_is_502_with_request_id(platform: Platform, live: Platform) -> None:
    with platform.script_replaced("cmgsite-custom-tenant", None):
        r = get(live, "partner-seo.com")
        assert r.status_code == 502 and r.json()["error"]["code"] == "tenant_worker_missing"
        assert r.json()["error"]["request_id"] == r.headers["x-request-id"]
        page = get(live, "partner-seo.com", "/")
        assert page.status_code == 502 and r.headers["x-request-id"] not in page.text
        assert page.headers["x-request-id"] in page.text
    assert get(live, "partner-seo.com").status_code == 200  # redeployed: back without a platform restart


def test_client_sent_tenant_headers_never_steer_or_arrive(platform: Platform, live: Platform) -> None:
    spec = ScriptSpec("cmgsite-partner-tenant", vars={"TENANT_ID": "partner1"}, bundle="echo")
    spoof = {
        "X-Tenant-Id": "cozyartz",
        "X-Tenant-Tier": "enterprise",
        "X-Tenant-Type": "primary",
        "x-tenant-signature": "v1=" + "0" * 64,
        "X-Tenant-Timestamp": "1",
        "X-Request-Id": "attacker-chosen-id",
        "Cloudflare-Workers-Version-Overrides": 'cmgsite-partner-tenant="v0"',
        "Cloudflare-Workers-Version-Key": "x",
        "X-Tenant-Evil": "1",
        "MF-Original-URL": "http://partner-seo.com/api/health",
    }
    with platform.script_replaced("cmgsite-partner-tenant", spec, {}):
        r = get(live, "partner1.cozyartzmedia.com", headers=spoof)
        assert r.status_code == 200
        got = r.json()["headers"]
        assert r.json()["url"] == "http://partner1.cozyartzmedia.com/api/health"
    assert got["x-tenant-id"] == "partner1" and got["x-tenant-tier"] == "growth"
    assert "x-tenant-evil" not in got and "cloudflare-workers-version-overrides" not in got
    assert "cloudflare-workers-version-key" not in got
    assert got["x-request-id"] != "attacker-chosen-id" and r.headers["x-request-id"] == got["x-request-id"]


def test_namespace_reaches_a_script_on_its_own_socket_and_a_newer_one_through_its_front(
    platform: Platform, live: Platform
) -> None:
    """A script serving when the dispatcher started is called on its Worker's proxy-style socket;
    one deployed since, through its process's front Worker until the dispatcher restarts. Either
    way the tenant sees the visitor's URL; on its own socket also the visitor's Host, as on
    Cloudflare (through the front, the loopback address the local hop connected to)."""
    spec = ScriptSpec("cmgsite-partner-tenant", vars={"TENANT_ID": "partner1"}, bundle="echo")
    script = "cmgsite-partner-tenant"
    with platform.script_replaced(script, spec, {}):
        status = platform.host.status()
        assert status["scripts"][script]["direct"] != status["dispatcher_direct"].get(script)
        r = get(live, "partner1.cozyartzmedia.com", "/api/health?a=1&b=%2F")
        assert r.status_code == 200, r.text
        assert r.json()["url"] == "http://partner1.cozyartzmedia.com/api/health?a=1&b=%2F"
        assert r.json()["headers"]["host"].startswith("127.0.0.1:")  # through the front

        platform.host.restart_dispatcher()
        status = platform.host.status()
        assert status["dispatcher_direct"][script] == status["scripts"][script]["direct"]
        r = get(live, "partner1.cozyartzmedia.com", "/api/health?a=1&b=%2F", headers={"X-Probe": "1"})
        assert r.status_code == 200, r.text
        seen = r.json()
        assert seen["url"] == "http://partner1.cozyartzmedia.com/api/health?a=1&b=%2F"
        assert seen["headers"]["host"] == "partner1.cozyartzmedia.com"  # on its own socket
        assert seen["headers"]["x-tenant-id"] == "partner1" and seen["headers"]["x-probe"] == "1"
        assert "mf-original-url" not in seen["headers"]
    # Redeployed once more (the real tenant Worker): served, through its front, no restart needed.
    r = get(live, "partner1.cozyartzmedia.com")
    assert r.status_code == 200 and r.json()["tenant_id"] == "partner1"
    # and on its own socket again once the dispatcher restarts (as the later tests expect it)
    platform.host.restart_dispatcher()
    status = platform.host.status()
    assert status["dispatcher_direct"][script] == status["scripts"][script]["direct"]
    r = get(live, "partner1.cozyartzmedia.com")
    assert r.status_code == 200 and r.json()["tenant_id"] == "partner1"


def test_spoofed_tenant_id_does_not_change_which_tenant_answers(live: Platform) -> None:
    r = get(live, "partner-seo.com", headers={"X-Tenant-Id": "cozyartz", "X-Tenant-Type": "primary"})
    assert r.status_code == 200 and r.json()["tenant_id"] == "partner-seo" and r.json()["tier"] == "starter"


def _call_tenant_directly(
    platform: Platform, script: str, headers: dict[str, str], way: str = "front"
) -> tuple[int, dict]:
    """What an attacker who reached a tenant Worker without the dispatcher could send: straight
    to one of the tenant's own workerd sockets, Miniflare's front one ("front") or the Worker's
    proxy-style one the namespace uses ("direct", an absolute URL in the request line)."""
    found = platform.host.status()["scripts"][script]
    url = "http://partner1.cozyartzmedia.com/api/health"
    if way == "direct":
        with httpx.Client(proxy=f"http://127.0.0.1:{found['direct']}") as client:
            r = client.get(url, headers=headers)
    else:
        r = httpx.get(
            f"http://127.0.0.1:{found['port']}/api/health", headers={"Host": "partner1.cozyartzmedia.com", **headers}
        )
    return r.status_code, r.json()


def _ctx(tenant_id: str = "partner1", issued_at: int | None = None) -> TenantContext:
    return TenantContext(
        tenant_id,
        TenantType.PARTNER_SUBDOMAIN,
        Tier.GROWTH,
        "partner1.cozyartzmedia.com",
        "a1b2c3d4e5f6a7b8",
        int(time.time()) if issued_at is None else issued_at,
    )


@pytest.mark.parametrize("way", ["front", "direct"])
def test_tenant_worker_refuses_forged_stale_and_foreign_context(platform: Platform, way: str) -> None:
    master = read_dev_vars(platform.paths.dispatcher_secrets)["CONTEXT_SIGNING_SECRET"]
    good_key = derive_tenant_key(master, "partner1")
    status, body = _call_tenant_directly(platform, "cmgsite-partner-tenant", context_headers(_ctx(), good_key), way)
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
        status, body = _call_tenant_directly(platform, "cmgsite-partner-tenant", headers, way)
        assert status == 403, name
        assert body["error"]["code"] == "forbidden", name


def test_unknown_path_on_tenant_is_404_json(live: Platform) -> None:
    r = get(live, "cozyartzmedia.com", "/api/does-not-exist")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert r.json()["error"]["request_id"] == r.headers["x-request-id"]
    r = httpx.post(live.url + "/api/health", headers={"Host": "cozyartzmedia.com"}, timeout=30)
    assert r.status_code == 405


def test_path_traversal_is_refused(live: Platform) -> None:
    r = get(live, "cozyartzmedia.com", "/api/%2e%2e/%2e%2e/etc/passwd")
    assert r.status_code in (400, 404)
    assert "root:" not in r.text


def test_one_dispatcher_and_one_app_per_isolate_over_1000_requests(platform: Platform) -> None:
    """The SDK wraps env anew per request; per-isolate state must still be built once."""

    def builds(kind: str) -> int:
        return len(re.findall(r'"event": "isolate_state_built", "kind": "%s"' % kind, platform.log_text()))

    for host in ("partner1.cozyartzmedia.com", "partner-seo.com"):
        assert get(platform, host).status_code == 200
    before = (builds("dispatcher"), builds("tenant_app"))
    assert before[0] >= 1 and before[1] >= 2  # the builds are logged: the count below can move

    with httpx.Client(base_url=platform.url, timeout=30) as client:
        for i in range(1000):
            host = ("partner1.cozyartzmedia.com", "partner-seo.com")[i % 2]
            assert client.get("/api/health", headers={"Host": host}).status_code == 200
    assert (builds("dispatcher"), builds("tenant_app")) == before

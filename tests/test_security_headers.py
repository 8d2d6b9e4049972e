"""Security headers on every answer, end to end on workerd: every route of the tenant Worker's
table (tenant_worker.app.route_table(), signed out and signed in as an admin), the tenant
Worker's own refusals, and every answer the dispatcher gives by itself (bad host, unknown
host, suspended, inactive, a missing Worker, a Worker over a limit or crashing).

Every answer: Strict-Transport-Security, X-Content-Type-Options: nosniff, Referrer-Policy.
Pages (text/html): a Content-Security-Policy with no script at all, `frame-ancestors 'none'`,
never 'unsafe-inline', and each <style> block of the page allowed by its own hash (so the
page still renders: a CSP that blocked its styles would pass a header check and break it)."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import socket
from typing import Any

import httpx
import pytest

from shared.security_headers import OTHER_CSP
from tests.cpython_imports import import_worker_module
from tests.support import Platform
from tests.usage_support import UsageTenant, usage_tenant

ROUTES = import_worker_module("tenant_worker.app").route_table()
PARAMS = {
    "domain": "files-test.example",
    "provider": "github",
    "id": "00000000-0000-4000-8000-00000000ffff",
    "name": "seo-tool",
}


def concrete(pattern: str) -> str:
    return re.sub(r"<([a-z_]+)>", lambda m: PARAMS[m.group(1)], pattern)


def assert_secure(r: httpx.Response, what: str) -> None:
    h = r.headers
    assert h.get("strict-transport-security", "").startswith("max-age=31536000"), what
    assert h.get("x-content-type-options") == "nosniff", what
    assert h.get("referrer-policy") == "strict-origin-when-cross-origin", what
    csp = h.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in csp, what
    if h.get("content-type", "").startswith("text/html"):
        assert "script-src 'none'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp, what
        assert "<script" not in r.text.lower(), what
        style_src = re.search(r"style-src ([^;]*)", csp)
        allowed = set(style_src.group(1).split()) if style_src else set()
        for block in re.findall(r"<style>(.*?)</style>", r.text, re.S):
            digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
            assert f"'sha256-{digest}'" in allowed, (what, "a <style> block the CSP does not allow")
    else:
        assert csp == OTHER_CSP, what


def request(platform: Platform, t: UsageTenant, method: str, path: str, auth: dict[str, str]) -> httpx.Response:
    headers = {"Host": t.host, **auth}
    body: bytes | None = None
    route = next((r for r in ROUTES if r.method == method and concrete(r.pattern) == path), None)
    if method not in ("GET", "HEAD"):
        if route is not None and route.body == "raw":
            headers["Content-Type"], body = "application/octet-stream", b"x"
        else:
            headers["Content-Type"], body = "application/json", b"{}"
    query = "?name=headers-test.bin" if path.startswith("/api/files") and path != "/api/files/reconcile" else ""
    return httpx.request(
        method, platform.url + path + query, headers=headers, content=body, timeout=60, follow_redirects=False
    )


def test_every_route_answers_with_the_security_headers(platform: Platform, pg_cluster: Any) -> None:
    assert len(ROUTES) >= 20
    with usage_tenant(platform, pg_cluster, "growth") as t:
        seen_html = 0
        for role in (None, "admin"):
            for route in ROUTES:
                if route.pattern == "/auth/logout" and role is not None:
                    continue  # would end this admin session before the other routes ran
                path = concrete(route.pattern)
                auth = {} if role is None else t.session(role)
                methods = [route.method] + (["HEAD"] if route.method == "GET" else [])
                for method in methods:
                    r = request(platform, t, method, path, auth)
                    assert r.status_code < 500 or r.status_code == 503, (method, path, r.status_code, r.text[:200])
                    assert_secure(r, f"{method} {path} as {role}: {r.status_code}")
                    seen_html += r.headers.get("content-type", "").startswith("text/html")
                    if (
                        role is not None
                        and method != "HEAD"
                        and r.headers.get("content-type", "").startswith(("application/json", "text/html"))
                    ):
                        assert r.headers["cache-control"] == "private, no-store", (method, path)
        assert seen_html >= 4  # the home page, sign-in pages and error pages were among them
        # Paths and methods no route serves: the same headers on the refusals.
        for method, path in (
            ("GET", "/no/such/page"),
            ("GET", "/api/no/such"),
            ("PUT", "/api/health"),
            ("PROPFIND", "/"),
            ("GET", "/api/files/%2e%2e/x"),
        ):
            r = httpx.request(method, platform.url + path, headers={"Host": t.host}, timeout=60)
            assert 400 <= r.status_code < 500, (method, path, r.status_code)
            assert_secure(r, f"{method} {path}")


def test_the_tenant_workers_own_refusal_carries_them_too(platform: Platform, pg_cluster: Any) -> None:
    with usage_tenant(platform, pg_cluster) as t:
        port = platform.host.status()["scripts"][t.script]["port"]  # straight to the Worker, past the dispatcher
        r = httpx.get(f"http://127.0.0.1:{port}/api/health", headers={"Host": t.host}, timeout=60)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert_secure(r, "unverified context")


@pytest.mark.parametrize("path", ["/api/health", "/"])
def test_the_dispatchers_own_answers_carry_them(platform: Platform, pg_cluster: Any, path: str) -> None:
    def get(host: str) -> httpx.Response:
        return httpx.get(platform.url + path, headers={"Host": host}, timeout=60)

    bad = get("a..b")  # refused by the dispatcher's Host check (not by Miniflare's URL parser)
    assert bad.status_code == 400 and (bad.json()["error"]["code"] == "bad_host" if path.startswith("/api") else True)
    assert_secure(bad, "bad host")
    unknown = get(f"nobody-{secrets.token_hex(4)}.example")
    assert unknown.status_code == 404
    assert_secure(unknown, "unknown host")
    with usage_tenant(platform, pg_cluster) as t:
        ok = get(t.host)
        assert ok.status_code == 200
        assert_secure(ok, "forwarded")
        for status, code in (("suspended", 403), ("inactive", 410)):
            platform.set_status(t.tenant_id, status, [t.host])
            try:
                r = get(t.host)
                assert r.status_code == code
                assert_secure(r, status)
            finally:
                platform.set_status(t.tenant_id, "active", [t.host])
        for fault, code in (("cpu", 503), ("subrequests", 429), ("crash", 502)):
            with platform.fault(t.script, fault):
                r = get(t.host)
                assert r.status_code == code, fault
                assert_secure(r, fault)
        with platform.script_replaced(t.script, None):
            r = get(t.host)
            assert r.status_code == 502
            assert_secure(r, "worker missing")


def test_a_malformed_request_line_still_gets_them_from_the_dispatcher(platform: Platform) -> None:
    with socket.create_connection(("127.0.0.1", platform.port), timeout=30) as s:
        s.sendall(b"GET /api/health HTTP/1.1\r\nHost: ..\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
    assert head.startswith("http/1.1 400") and b"bad_host" in data
    for name in ("strict-transport-security:", "x-content-type-options: nosniff", "referrer-policy:"):
        assert name in head

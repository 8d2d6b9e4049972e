"""Tenant-aware caching, end to end on workerd.

What is cached today, and keyed how (README "Caching"): the dispatcher's route cache by the
normalised Host (in the isolate and in KV `host:<host>`), the tenant's branding per isolate by
tenant id, the tenant's Supabase tokens by tenant and user, AUTH_KV entries under
`<tenant_id>:`. Nothing is put in the Cache API, and every answer of a tenant Worker is
`Cache-Control: private, no-store`, so no shared cache (a browser's, a proxy's, Cloudflare's)
may keep one tenant's answer to serve it at another.

Attacks: two tenants asked the same paths and queries in turn, and requests that try to make
one tenant's answer (or route) be stored under the other's: client X-Tenant-* and forwarding
headers, an absolute-form request target naming the other host, host spellings."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx

from tests.support import Platform
from tests.usage_support import UsageTenant, usage_tenant


def ask(
    platform: Platform, t: UsageTenant, path: str, *, role: str | None = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    auth = {} if role is None else t.session(role)
    return httpx.get(platform.url + path, headers={"Host": t.host, **auth, **(headers or {})}, timeout=60)


def belongs_to(r: httpx.Response, t: UsageTenant, other: UsageTenant) -> bool:
    """The answer is t's: it names t (by id or brand) and never the other tenant."""
    text = r.text
    own = t.tenant_id in text or t.host in text or f"Usage test {t.tenant_id[3:]}" in text
    foreign = other.tenant_id in text or other.host in text or f"Usage test {other.tenant_id[3:]}" in text
    return own and not foreign


PATHS = [
    ("/?lang=en&utm=1", None),
    ("/api/health?x=1", None),
    ("/no/such/page?x=1", None),
    ("/api/tenant?x=1", "admin"),
    ("/api/me?x=1", "client"),
    ("/api/files?limit=5", "client"),
    ("/api/usage?x=1", "client"),
    ("/?lang=en&utm=1", "client"),
]


def test_two_tenants_asked_the_same_paths_and_queries_each_get_their_own(platform: Platform, pg_cluster: Any) -> None:
    with usage_tenant(platform, pg_cluster) as a, usage_tenant(platform, pg_cluster) as b:
        for t in (a, b):  # a file each, named after its tenant: a listing shows whose it is
            r = t.post(
                f"/api/files?name={t.tenant_id}.txt", content=b"x", headers={"Content-Type": "application/octet-stream"}
            )
            assert r.status_code == 201, r.text
        for path, role in PATHS:
            for first, second in ((a, b), (b, a), (a, b)):
                r = ask(platform, first, path, role=role)
                assert r.status_code in (200, 404), (path, r.status_code, r.text[:200])
                assert r.headers["cache-control"] == "private, no-store", (path, role)
                if path.startswith("/api/files"):
                    assert [f["name"] for f in r.json()["files"]] == [f"{first.tenant_id}.txt"], r.text
                    continue
                if path.startswith("/api/usage"):
                    assert r.json()["tenant_id"] == first.tenant_id
                    continue
                if path.startswith("/api/me"):
                    assert r.json()["tenant_id"] == first.tenant_id
                    continue
                assert belongs_to(r, first, second), (path, role, r.text[:300])


def test_client_headers_cannot_store_one_tenants_answer_or_route_under_another(
    platform: Platform, pg_cluster: Any
) -> None:
    with usage_tenant(platform, pg_cluster) as a, usage_tenant(platform, pg_cluster) as b:
        poison = {
            "X-Tenant-Id": b.tenant_id,
            "X-Tenant-Host": b.host,
            "X-Tenant-Context": json.dumps({"tenant_id": b.tenant_id}),
            "X-Forwarded-Host": b.host,
            "X-Host": b.host,
            "X-Original-URL": "/api/health",
            "X-Rewrite-URL": "/api/health",
            "Forwarded": f"host={b.host}",
            "X-Request-Id": "poisoned-request-id",
        }
        for path in ("/api/health?x=1", "/?x=1"):
            r = ask(platform, a, path, headers=poison)
            assert r.status_code == 200 and belongs_to(r, a, b), (path, r.text[:300])
            assert r.headers["cache-control"] == "private, no-store"
            assert r.headers["x-request-id"] != "poisoned-request-id"
            # and the other tenant, asked the same next, answers as itself
            assert belongs_to(ask(platform, b, path), b, a)
        # An absolute-form request target naming the other host: routed by Host, answered by a.
        with socket.create_connection(("127.0.0.1", platform.port), timeout=30) as s:
            s.sendall(
                f"GET http://{b.host}/api/health?x=1 HTTP/1.1\r\nHost: {a.host}\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        body = data.split(b"\r\n\r\n", 1)[1]
        assert b.tenant_id.encode() not in body
        if data.startswith(b"HTTP/1.1 200"):
            assert json.loads(body)["tenant_id"] == a.tenant_id
        # The route cache holds each host's own tenant, whatever was asked with which headers.
        for t in (a, b):
            assert ask(platform, t, "/api/health").json()["tenant_id"] == t.tenant_id  # routed: now in KV
            cached = platform.kv_get(t.host)
            assert cached is not None and json.loads(cached)["tenant_id"] == t.tenant_id
        # Spellings of a's host reach a (the cache key is the normalised host), never b.
        for spelling in (a.host.upper(), a.host + ".", a.host + ":443", f"{a.host}.:80"):
            r = httpx.get(platform.url + "/api/health", headers={"Host": spelling}, timeout=60)
            assert r.status_code == 200 and r.json()["tenant_id"] == a.tenant_id, spelling


def test_session_answers_are_private_and_never_the_next_visitors(platform: Platform, pg_cluster: Any) -> None:
    with usage_tenant(platform, pg_cluster) as t, usage_tenant(platform, pg_cluster) as other:
        signed_in = ask(platform, t, "/", role="admin")
        assert "Signed in as" in signed_in.text and signed_in.headers["cache-control"] == "private, no-store"
        after = ask(platform, t, "/")  # the next visitor, signed out, on the same URL
        assert "Signed in as" not in after.text and "/auth/login/github" in after.text
        me = ask(platform, t, "/api/me", role="admin")
        assert me.status_code == 200 and me.headers["cache-control"] == "private, no-store"
        assert ask(platform, t, "/api/me").status_code == 401
        # The same session presented at the other tenant: refused, not a cached answer of t's.
        r = httpx.get(platform.url + "/api/me", headers={"Host": other.host, **t.session("admin")}, timeout=60)
        assert r.status_code == 401 and t.tenant_id not in r.text

"""Tenant files end to end on workerd: dispatcher -> tenant Worker -> Miniflare's real R2 (one
bucket shared by every tenant script, as on Cloudflare) and the real UsageMeter.

Attacks first: names that try to leave the tenant's prefix for a neighbour's object, client
headers that claim another tenant, uploads a cross-site page could send, oversized uploads,
the quota's edge, racing uploads and deletes, and a crash between the reservation and the
write (repaired by reconcile). The pure rules: tests/test_files_units.py."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import time
from typing import Any
from urllib.parse import quote

import httpx

from shared.tiers import GIB, MIB
from tests.support import Platform, pid_listening_on, raw_request
from tests.usage_support import UsageTenant, usage_tenant

UPLOAD = {"Content-Type": "application/octet-stream"}


def upload(
    t: UsageTenant, name: str, data: bytes, *, role: str = "client", headers: dict[str, str] | None = None
) -> httpx.Response:
    return t.post(
        f"/api/files?name={quote(name, safe='')}",
        content=data,
        auth=t.session(role),
        headers={**UPLOAD, **(headers or {})},
    )


def download(t: UsageTenant, name: str, role: str = "client") -> httpx.Response:
    return t.get(f"/api/files/download?name={quote(name, safe='')}", role)


def delete(t: UsageTenant, name: str, role: str = "admin") -> httpx.Response:
    return httpx.delete(
        f"{t.platform.url}/api/files?name={quote(name, safe='')}",
        headers={"Host": t.host, **t.session(role)},
        timeout=60,
    )


def listing(t: UsageTenant, query: str = "", role: str = "client") -> dict[str, Any]:
    r = t.get("/api/files" + query, role)
    assert r.status_code == 200, r.text
    return dict(r.json())


def names(t: UsageTenant) -> list[str]:
    return [f["name"] for f in listing(t)["files"]]


def stored(t: UsageTenant) -> int:
    return int(t.usage()["storage"]["used"])


def reconcile(t: UsageTenant, role: str = "admin") -> httpx.Response:
    return t.post("/api/files/reconcile", auth=t.session(role))


def upload_head(t: UsageTenant, name: str, length: int, role: str = "client", extra: str = "") -> str:
    cookie = t.session(role)["cookie"]
    return (
        f"POST /api/files?name={quote(name, safe='')} HTTP/1.1\r\nHost: {t.host}\r\nCookie: {cookie}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\nConnection: close\r\n{extra}"
    )


# ---- the API -------------------------------------------------------------------------------
def test_upload_list_download_delete_and_the_storage_level(platform: Platform, pg_cluster: Any) -> None:
    with usage_tenant(platform, pg_cluster, "growth") as t:
        pdf = b"%PDF-1.7 " + secrets.token_bytes(2000)
        r = t.post("/api/files?name=docs%2Fq1.pdf", content=pdf, headers={"Content-Type": "application/pdf"})
        assert r.status_code == 201, r.text
        assert r.json()["file"]["name"] == "docs/q1.pdf" and r.json()["file"]["size"] == len(pdf)
        assert r.json()["usage"]["used"] == len(pdf)
        assert upload(t, "notes.txt", b"hello").status_code == 201
        assert stored(t) == len(pdf) + 5

        first = listing(t, "?limit=1")
        assert [f["name"] for f in first["files"]] == ["docs/q1.pdf"] and first["next_cursor"]
        second = listing(t, "?limit=1&cursor=" + first["next_cursor"])
        assert [f["name"] for f in second["files"]] == ["notes.txt"] and second["next_cursor"] is None
        assert [f["name"] for f in listing(t, "?prefix=docs%2F")["files"]] == ["docs/q1.pdf"]

        d = download(t, "docs/q1.pdf")
        assert d.status_code == 200 and d.content == pdf
        assert d.headers["content-type"] == "application/pdf"
        assert d.headers["content-disposition"] == "attachment; filename=\"q1.pdf\"; filename*=UTF-8''q1.pdf"
        assert d.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in d.headers["content-security-policy"]
        assert d.headers["cache-control"] == "private, no-store"

        assert delete(t, "notes.txt", "client").status_code == 403  # deletes are for admins
        r = delete(t, "notes.txt")
        assert r.status_code == 200 and r.json()["usage"]["used"] == len(pdf)
        assert delete(t, "notes.txt").status_code == 404
        assert download(t, "notes.txt").status_code == 404
        assert names(t) == ["docs/q1.pdf"] and stored(t) == len(pdf)

        anonymous = {"Host": t.host}
        assert httpx.get(f"{platform.url}/api/files", headers=anonymous).status_code == 401
        assert (
            httpx.post(f"{platform.url}/api/files?name=x", headers={**anonymous, **UPLOAD}, content=b"x").status_code
            == 401
        )
        with pg_cluster.connect() as conn:
            audit = conn.execute(
                "select actor, action, target, details->>'size' from public.audit_log"
                " where tenant_id = %s and action like 'file.%%' order by id",
                (t.tenant_id,),
            ).fetchall()
        assert audit == [
            (t.users["client"], "file.uploaded", "docs/q1.pdf", str(len(pdf))),
            (t.users["client"], "file.uploaded", "notes.txt", "5"),
            (t.users["admin"], "file.deleted", "notes.txt", "5"),
        ]


def test_html_and_svg_files_download_as_attachments_that_run_nothing(platform: Platform, pg_cluster: Any) -> None:
    with usage_tenant(platform, pg_cluster) as t:
        page = b"<html><script>alert(document.cookie)</script></html>"
        assert t.post("/api/files?name=x.html", content=page, headers={"Content-Type": "text/html"}).status_code == 201
        assert (
            t.post(
                "/api/files?name=y.svg", content=b"<svg onload=alert(1)/>", headers={"Content-Type": "image/svg+xml"}
            ).status_code
            == 201
        )
        for name in ("x.html", "y.svg"):
            d = download(t, name)
            assert d.status_code == 200 and d.headers["content-disposition"].startswith("attachment;")
            assert d.headers["x-content-type-options"] == "nosniff"
            assert d.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'; sandbox"


# ---- attacks: another tenant's objects ----------------------------------------------------------
def traversal_names(victim: str) -> list[str]:
    """Names that would reach `victim`'s secret.txt if the key were built naively."""
    target = f"{victim}/files/secret.txt"
    return [
        f"../../{target}",
        f"../{target}",
        f"../../../tenants/{target}",
        f"/tenants/{target}",
        f"//tenants/{target}",
        f"docs/../../../{target}",
        f"./../../{target}",
        f"..\\..\\{victim}\\files\\secret.txt",
        f"..\\../{target}",
        f"..\x00/../{target}",
        f"../../{target}\x00.txt",
        f"\x00{target}",
        f"..\u2215..\u2215{victim}\u2215files\u2215secret.txt",
        f"..\uff0f..\uff0f{target}",
        f"\uff0e\uff0e/\uff0e\uff0e/{target}",
        f"\u2024\u2024/\u2024\u2024/{target}",
        f"..\u2044..\u2044{target}",
        f"\u202e../../{target}",
        f"..\u200b/../{target}",
        f"../..\n/{target}",
        f"../\r../{target}",
        "x" * 600 + f"/../../{target}",
        f"{'a/' * 20}../{target}",
        "..",
        ".",
        "",
        "/",
        "secret.txt/",
        f"..\u0338/{target}",
        f"../../{target}".replace("/", "\\"),
    ]


def test_no_name_reaches_a_neighbours_file(platform: Platform, pg_cluster: Any) -> None:
    with usage_tenant(platform, pg_cluster) as victim, usage_tenant(platform, pg_cluster) as attacker:
        secret = b"victim's secret " + secrets.token_bytes(32)
        assert upload(victim, "secret.txt", secret).status_code == 201
        victim_level = stored(victim)
        for name in traversal_names(victim.tenant_id):
            for r in (
                download(attacker, name, "admin"),
                delete(attacker, name),
                upload(attacker, name, b"overwrite", role="admin"),
            ):
                assert r.status_code == 400, (name, r.status_code, r.text)
                assert r.json()["error"]["code"] in {"invalid_file_name", "bad_path"}, (name, r.text)
                assert secret not in r.content
        # The same relative name at the attacker's host is the attacker's own (absent) file.
        assert download(attacker, "secret.txt", "admin").status_code == 404
        assert delete(attacker, "secret.txt").status_code == 404
        # Names that only look like a path elsewhere are plain names inside the attacker's prefix.
        for literal in (
            f"%2e%2e/%2e%2e/{victim.tenant_id}/files/secret.txt",
            f"tenants/{victim.tenant_id}/files/secret.txt",
            "..%2f..%2fsecret.txt",
        ):
            assert download(attacker, literal, "admin").status_code == 404
            assert upload(attacker, literal, b"mine", role="admin").status_code == 201
        # A path-level escape is refused before any handler runs.
        r = httpx.get(
            f"{platform.url}/api/files/download/../../files/download?name=secret.txt",
            headers={"Host": attacker.host, **attacker.session()},
        )
        assert r.status_code in (400, 404) and secret not in r.content
        # Headers claiming the victim's tenant are stripped by the dispatcher: the file is the attacker's.
        claims = {
            "X-Tenant-Id": victim.tenant_id,
            "X-Tenant-Context": json.dumps({"tenant_id": victim.tenant_id}),
            "X-Tenant-Signature": "0" * 64,
            "X-Tenant-Host": victim.host,
            "X-Tenant-Tier": "enterprise",
            "X-Tenant-Timestamp": str(int(time.time())),
            "X-Forwarded-Host": victim.host,
        }
        assert upload(attacker, "claimed.txt", b"attacker's", role="admin", headers=claims).status_code == 201
        r = httpx.get(
            f"{platform.url}/api/files/download?name=secret.txt",
            headers={"Host": attacker.host, **attacker.session("admin"), **claims},
        )
        assert r.status_code == 404 and secret not in r.content
        # The victim's file and level are untouched, and nothing of the attacker's shows there.
        assert download(victim, "secret.txt").content == secret
        assert names(victim) == ["secret.txt"] and stored(victim) == victim_level
        assert "claimed.txt" in names(attacker) and "secret.txt" not in names(attacker)
        # A session of one tenant is refused at the other, for files as for everything else.
        r = httpx.get(
            f"{platform.url}/api/files/download?name=secret.txt",
            headers={"Host": victim.host, **attacker.session("admin")},
        )
        assert r.status_code == 401 and secret not in r.content


def test_a_forged_listing_cursor_cannot_page_into_a_neighbours_prefix(platform: Platform, pg_cluster: Any) -> None:
    with usage_tenant(platform, pg_cluster) as victim, usage_tenant(platform, pg_cluster) as attacker:
        assert upload(victim, "a.txt", b"victim").status_code == 201
        import base64

        for forged in (f"../{victim.tenant_id}/files/", f"../../{victim.tenant_id}/files/a", "/"):
            cursor = base64.urlsafe_b64encode(forged.encode()).decode().rstrip("=")
            r = attacker.get(f"/api/files?cursor={cursor}")
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_cursor"
        for prefix in ("..%2F", "%2Ftenants%2F", "..%5C"):
            r = attacker.get(f"/api/files?prefix={prefix}")
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_file_name"
        assert listing(attacker)["files"] == []


# ---- attacks: uploads another site could send -------------------------------------------------
def test_uploads_a_cross_site_page_could_send_are_refused(platform: Platform, pg_cluster: Any) -> None:
    with usage_tenant(platform, pg_cluster) as t:
        own = {"Origin": f"http://{t.host}:{platform.port}", "Sec-Fetch-Site": "same-origin"}
        for headers in (
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Origin": f"https://{t.host}.evil.example"},
        ):
            r = upload(t, "x.bin", b"x", headers=headers)
            assert r.status_code == 403 and r.json()["error"]["code"] == "cross_site_request", headers
        # What a form or a no-cors fetch can send without a preflight: refused unless the custom header is there.
        for ctype in (
            "text/plain",
            "text/plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=xyz",
        ):
            r = upload(t, "x.txt", b"x", headers={**own, "Content-Type": ctype})
            assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type", ctype
        r = t.post("/api/files?name=x.txt", content=b"x", headers=own)  # no Content-Type at all
        assert r.status_code == 415
        assert (
            upload(t, "x.txt", b"x", headers={**own, "Content-Type": "text/plain", "X-File-Upload": "1"}).status_code
            == 201
        )
        assert upload(t, "y.pdf", b"%PDF", headers={**own, "Content-Type": "application/pdf"}).status_code == 201
        assert names(t) == ["x.txt", "y.pdf"] and stored(t) == 5


def test_uploads_need_a_length_and_a_media_type(platform: Platform, pg_cluster: Any) -> None:
    with usage_tenant(platform, pg_cluster) as t:

        def chunks() -> Any:
            yield b"part one, "
            yield b"part two"

        r = t.post("/api/files?name=chunked.bin", content=chunks(), headers=UPLOAD)  # no Content-Length
        assert r.status_code == 411 and r.json()["error"]["code"] == "length_required"
        r = upload(t, "x.bin", b"x", headers={"Content-Type": "not a type"})
        assert r.status_code == 415
        r = t.post("/api/files", content=b"x", headers=UPLOAD)  # no name
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_file_name"
        assert names(t) == [] and stored(t) == 0


# ---- attacks: size and quota ----------------------------------------------------------------------
def test_an_oversized_upload_is_refused_from_its_headers_and_counts_nothing(
    platform: Platform, pg_cluster: Any
) -> None:
    with usage_tenant(platform, pg_cluster, "starter") as t:
        cap = 25 * MIB
        status, body = raw_request(platform, upload_head(t, "big.bin", cap + 1))
        assert status == 413 and body["error"]["code"] == "file_too_large" and body["error"]["limit"] == cap
        # Claiming a bigger plan in the tenant context headers changes nothing (the dispatcher drops them).
        claim = "X-Tenant-Tier: enterprise\r\nX-Tenant-Id: cozyartz\r\nX-Tenant-Signature: " + "0" * 64 + "\r\n"
        status, body = raw_request(platform, upload_head(t, "big.bin", cap + 1, extra=claim))
        assert status == 413 and body["error"]["limit"] == cap
        assert names(t) == [] and stored(t) == 0
        assert upload(t, "fits.bin", b"\0" * cap).status_code == 201
        assert stored(t) == cap


def test_the_quota_edge_exactly_what_is_left_passes_one_byte_more_is_429(platform: Platform, pg_cluster: Any) -> None:
    with usage_tenant(platform, pg_cluster, "starter") as t:
        assert upload(t, "a.bin", b"a" * 1000).status_code == 201
        left = GIB - 1000
        status, body = raw_request(platform, upload_head(t, "b.bin", left + 1))
        assert status == 429, body
        err = body["error"]
        assert err["code"] == "usage_limit_exceeded" and err["kind"] == "storage"
        assert (err["limit"], err["used"], err["resets_at"]) == (GIB, 1000, None)
        # Exactly what is left passes the quota (and is then too big for the plan's file size: 413,
        # its reservation given back).
        status, body = raw_request(platform, upload_head(t, "b.bin", left))
        assert status == 413 and body["error"]["code"] == "file_too_large"
        assert stored(t) == 1000 and names(t) == ["a.bin"]


# ---- attacks: races ----------------------------------------------------------------------------------
def test_racing_uploads_and_deletes_of_one_name_count_one_file(platform: Platform, pg_cluster: Any) -> None:
    with usage_tenant(platform, pg_cluster) as t:

        async def race(method: str, n: int, role: str) -> list[int]:
            async with httpx.AsyncClient(base_url=platform.url, timeout=120) as client:
                headers = {"Host": t.host, **t.session(role), **UPLOAD}
                calls = [
                    client.request(
                        method,
                        "/api/files?name=same.bin",
                        headers=headers,
                        content=b"x" * (100 + i) if method == "POST" else None,
                    )
                    for i in range(n)
                ]
                return [r.status_code for r in await asyncio.gather(*calls)]

        codes = asyncio.run(race("POST", 8, "client"))
        assert sorted(codes) == [201] + [409] * 7, codes
        size = listing(t)["files"][0]["size"]
        assert stored(t) == size
        assert upload(t, "other.bin", b"o" * 10).status_code == 201
        codes = asyncio.run(race("DELETE", 8, "admin"))
        assert sorted(codes) == [200] + [404] * 7, codes
        assert names(t) == ["other.bin"] and stored(t) == 10  # refunded once


# ---- a crash between the reservation and the write --------------------------------------------------
def test_a_crash_mid_upload_keeps_the_reservation_until_reconcile(platform: Platform, pg_cluster: Any) -> None:
    with usage_tenant(platform, pg_cluster) as t:
        assert upload(t, "kept.txt", b"k" * 100).status_code == 201
        declared = 5000
        s = socket.create_connection(("127.0.0.1", platform.port), timeout=60)
        try:
            s.sendall(upload_head(t, "lost.bin", declared).encode() + b"\r\n" + b"x" * 10)  # and no more
            deadline = time.monotonic() + 60
            while stored(t) != 100 + declared:  # the Worker reserved the declared length, then waits for the body
                assert time.monotonic() < deadline, "the upload never reserved its length"
                time.sleep(0.1)
            # The tenant's Worker crashes mid-upload (its workerd is killed): no code of it runs again.
            # (A redeploy would not do: the old version is drained and finishes the request.)
            pid = pid_listening_on(platform.host.status()["scripts"][t.script]["port"])
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            platform.set_secret(t.script, "DEPLOYED_AT", secrets.token_hex(4))  # and comes back
        finally:
            s.close()
        assert stored(t) == 100 + declared  # the reservation outlived the request
        assert names(t) == ["kept.txt"]
        assert reconcile(t, "client").status_code == 403
        r = reconcile(t)
        assert r.status_code == 200, r.text
        assert r.json() == {
            "bucket_bytes": 100,
            "files": 1,
            "level_before": 100 + declared,
            "level_after": 100,
            "limit": GIB,
            "over_limit": False,
        }
        assert stored(t) == 100
        assert reconcile(t).json()["level_after"] == 100  # idempotent
        with pg_cluster.connect() as conn:
            row = conn.execute(
                "select actor, details->>'level_after' from public.audit_log where tenant_id = %s"
                " and action = 'file.storage_reconciled' order by id limit 1",
                (t.tenant_id,),
            ).fetchone()
        assert row == (t.users["admin"], "100")


def test_a_body_that_breaks_off_gives_its_reservation_back(platform: Platform, pg_cluster: Any) -> None:
    with usage_tenant(platform, pg_cluster) as t:
        s = socket.create_connection(("127.0.0.1", platform.port), timeout=60)
        try:
            s.sendall(upload_head(t, "cut.bin", 4000).encode() + b"\r\n" + b"x" * 10)
            deadline = time.monotonic() + 60
            while stored(t) != 4000:
                assert time.monotonic() < deadline, "the upload never reserved its length"
                time.sleep(0.1)
        finally:
            s.close()  # the client goes away: R2's put fails, the Worker releases the bytes
        deadline = time.monotonic() + 60
        while stored(t) != 0:
            assert time.monotonic() < deadline, "the reservation was not given back"
            time.sleep(0.1)
        assert names(t) == []

"""Pure units for tenant files (CPython): file names and keys, the upload rule, the security
headers, and the metering logic of api_files with an in-memory bucket and meter (the same
code runs on workerd against Miniflare's R2 in tests/test_files_http.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import unicodedata
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import pytest

from shared.file_keys import (
    CONFUSABLE_SEPARATORS,
    MAX_NAME_BYTES,
    FileNameError,
    download_filename,
    files_prefix,
    name_of,
    normalize_name,
    normalize_prefix,
    object_key,
)
from shared.models import TenantContext, TenantType
from shared.security_headers import (
    OTHER_CSP,
    page_csp,
    security_headers,
    with_security_headers,
)
from shared.tiers import GIB, MIB, Tier, UsageKind, plan_for
from shared.usage import UsageDecision, decision, snapshot
from tenant_worker.inbound_http import ApiError, Call
from tenant_worker.principal import Principal, Role
from tenant_worker.r2_files import BucketError, StoredObject
from tenant_worker.request_rules import needs_preflight, upload_refusal
from tests.cpython_imports import import_worker_module
from tests.worker_units import offline_services

api_files = import_worker_module("tenant_worker.api_files")

# ---- names --------------------------------------------------------------------------------
ACCEPTED = [
    "report.pdf",
    "docs/2026/q1 report.pdf",
    "résumé.txt",
    "数据.csv",
    "a.b.c",
    ".hidden",
    "x" * 255,
    "l·l.txt",
    "100%.txt",
    "%2e%2e",
    "ｆｕｌｌｗｉｄｔｈ.txt",
]
REFUSED = [
    "",
    "..",
    ".",
    "...",
    "../x",
    "a/../b",
    "a/./b",
    "/etc/passwd",
    "/x",
    "a//b",
    "a/",
    "a\\b",
    "..\\x",
    "a\x00b",
    "a\nb",
    "a\rb",
    "a\tb",
    "a\x7fb",
    "a\x1bb",
    "a\u202eb",
    "a\u202db",
    "a\u2066b",
    "a\u2067b",
    "a\u2068b",
    "a\u2069b",
    "a\u200eb",
    "a\u200fb",
    "a\u061cb",
    "a\u200bb",
    "a\u200db",
    "a\ufeffb",
    "a\u2028b",
    "a\u2029b",
    "a\u00a0b",
    "a\u3000b",
    "a\u2215b",
    "a\uff0fb",
    "a\u2044b",
    "a\u29f8b",
    "a\uff3cb",
    "a\u2216b",
    "\u2024\u2024/x",
    "\uff0e\uff0e/x",
    "a\u0338b",
    "\ue000x",
    "\ud800",
    " x",
    "x ",
    "a/ b",
    "x" * 256,
    "a/" * 16 + "b",
]


@pytest.mark.parametrize("name", ACCEPTED)
def test_ordinary_names_are_kept(name: str) -> None:
    assert normalize_name(name) == unicodedata.normalize("NFC", name)


@pytest.mark.parametrize("name", REFUSED)
def test_names_that_could_read_as_another_path_are_refused(name: str) -> None:
    with pytest.raises(FileNameError):
        normalize_name(name)


def test_names_are_nfc_normalised_so_one_file_has_one_key() -> None:
    composed, decomposed = "caf\u00e9.txt", "cafe\u0301.txt"
    assert normalize_name(decomposed) == normalize_name(composed) == composed
    assert object_key("acme", normalize_name(decomposed)) == object_key("acme", composed)


@pytest.mark.parametrize("ch", sorted(CONFUSABLE_SEPARATORS))
def test_every_listed_look_alike_is_refused(ch: str) -> None:
    with pytest.raises(FileNameError):
        normalize_name(f"a{ch}b")


def test_length_limits_count_utf8_bytes() -> None:
    normalize_name("/".join(["é" * 100] * 2))  # 200 bytes a segment, 401 in all
    with pytest.raises(FileNameError):
        normalize_name("é" * 128)  # 256 bytes in one segment
    with pytest.raises(FileNameError):
        normalize_name("/".join(["x" * 200] * 3))  # over MAX_NAME_BYTES
    assert len("/".join(["x" * 200] * 3).encode()) > MAX_NAME_BYTES


def test_keys_live_under_the_tenants_own_prefix_only() -> None:
    key = object_key("acme", "a/b.txt")
    assert key == "tenants/acme/files/a/b.txt" and key.startswith(files_prefix("acme"))
    assert name_of("acme", key) == "a/b.txt"
    assert name_of("acme", "tenants/acme-2/files/x") is None and name_of("acme", "tenants/other/files/x") is None
    with pytest.raises(FileNameError):
        object_key("acme", "../other/files/x")
    for bad_tenant in ("", "../x", "a/b", "A", "x" * 64):
        with pytest.raises(ValueError):
            object_key(bad_tenant, "x")


def test_listing_prefixes() -> None:
    assert normalize_prefix(None) == normalize_prefix("") == ""
    assert normalize_prefix("docs/") == "docs/" and normalize_prefix("docs/re") == "docs/re"
    for bad in ("/", "../", "a//", "..", "/docs"):
        with pytest.raises(FileNameError):
            normalize_prefix(bad)


def test_download_filename_quotes_safely() -> None:
    assert download_filename("a/b/report.pdf") == "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
    cd = download_filename('x/r\u00e9sum\u00e9 "1";.pdf')
    assert cd.startswith('attachment; filename="r_sum_ _1__.pdf"; ')
    assert cd.endswith("filename*=UTF-8''r%C3%A9sum%C3%A9%20%221%22%3B.pdf")


# ---- request parsing ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "header, stored",
    [
        (None, "application/octet-stream"),
        ("", "application/octet-stream"),
        ("application/PDF", "application/pdf"),
        ("text/plain; charset=UTF-8", "text/plain; charset=utf-8"),
        ("image/svg+xml; foo=bar", "image/svg+xml"),
    ],
)
def test_content_types_are_checked_and_stored(header: str | None, stored: str) -> None:
    assert api_files.content_type_of(header) == stored


@pytest.mark.parametrize("header", ["pdf", "text/", "/plain", "a/b/c", "text/pl ain", "t\u00e9xt/plain"])
def test_malformed_content_types_are_refused(header: str) -> None:
    with pytest.raises(ApiError) as err:
        api_files.content_type_of(header)
    assert err.value.status == 415


def test_content_length_is_required_and_plain() -> None:
    assert api_files.declared_length({"content-length": "42"}) == 42
    for headers, status in (
        ({}, 411),
        ({"transfer-encoding": "chunked"}, 411),
        ({"content-length": "-1"}, 400),
        ({"content-length": "1e3"}, 400),
        ({"content-length": "٣"}, 400),
        ({"content-length": "9" * 16}, 400),
    ):
        with pytest.raises(ApiError) as err:
            api_files.declared_length(headers)
        assert err.value.status == status


def test_cursors_round_trip_and_foreign_ones_are_refused() -> None:
    assert api_files.decode_cursor(api_files.encode_cursor("docs/é.txt")) == "docs/é.txt"
    assert api_files.decode_cursor(None) is None
    forged = base64.urlsafe_b64encode(b"../other/files/x").decode()
    for bad in (forged, "!!!", "x" * 2000):
        with pytest.raises(ApiError) as err:
            api_files.decode_cursor(bad)
        assert err.value.code == "invalid_cursor"


# ---- the upload rule and the headers ------------------------------------------------------------
@pytest.mark.parametrize(
    "content_type, preflight",
    [
        (None, False),
        ("text/plain", False),
        ("TEXT/PLAIN; charset=utf-8", False),
        ("multipart/form-data; boundary=x", False),
        ("application/x-www-form-urlencoded", False),
        ("application/pdf", True),
        ("application/octet-stream", True),
        ("image/png", True),
    ],
)
def test_which_uploads_a_cross_site_page_could_send_without_a_preflight(
    content_type: str | None, preflight: bool
) -> None:
    assert needs_preflight(content_type) is preflight
    headers = {} if content_type is None else {"content-type": content_type}
    assert (upload_refusal(_call(headers=headers)) is None) is preflight
    assert upload_refusal(_call(headers={**headers, "x-file-upload": "1"})) is None


def test_security_headers() -> None:
    css = "body{color:red}"
    page = security_headers("text/html; charset=utf-8")["content-security-policy"]
    for h in (security_headers("text/html"), security_headers("application/json"), security_headers(None)):
        assert h["strict-transport-security"].startswith("max-age=") and h["x-content-type-options"] == "nosniff"
        assert h["referrer-policy"] == "strict-origin-when-cross-origin"
    assert "script-src 'none'" in page and "frame-ancestors 'none'" in page and "unsafe-inline" not in page
    assert security_headers("application/json")["content-security-policy"] == OTHER_CSP
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in page_csp(css) and "unsafe" not in page_csp(css)
    kept = with_security_headers({"Content-Type": "text/html", "Content-Security-Policy": page_csp(css)})
    assert kept["content-security-policy"] == page_csp(css) and kept["x-frame-options"] == "DENY"


# ---- metering, with an in-memory bucket and meter -----------------------------------------------
class FakeBucket:
    """R2's semantics that matter here: conditional puts are atomic; etags change on every write."""

    def __init__(self) -> None:
        self.objects: dict[str, StoredObject] = {}
        self.fail_put = False
        self._n = 0

    async def head(self, key: str) -> StoredObject | None:
        await asyncio.sleep(0)
        return self.objects.get(key)

    async def put(
        self,
        key: str,
        body: Any,
        *,
        content_type: str,
        metadata: dict[str, str],
        if_absent: bool = False,
        if_etag: str | None = None,
    ) -> StoredObject | None:
        await asyncio.sleep(0)
        if self.fail_put:
            raise BucketError("stream broke off")
        current = self.objects.get(key)
        if (if_absent and current is not None) or (
            if_etag is not None and (current is None or current.etag != if_etag)
        ):
            return None
        self._n += 1
        obj = StoredObject(key, len(body), f"etag{self._n}", datetime.now(timezone.utc), content_type, dict(metadata))
        self.objects[key] = obj
        return obj

    async def get(self, key: str) -> Any:
        raise NotImplementedError

    async def delete(self, key: str) -> None:
        await asyncio.sleep(0)
        self.objects.pop(key, None)

    async def list(
        self, prefix: str, *, start_after: str | None = None, limit: int = 1000
    ) -> tuple[list[StoredObject], bool]:
        keys = sorted(k for k in self.objects if k.startswith(prefix) and (start_after is None or k > start_after))
        return [self.objects[k] for k in keys[:limit]], len(keys) > limit


class FakeMeter:
    def __init__(self, tier: Tier = Tier.STARTER, used: int = 0) -> None:
        self.tier, self.used = tier, used

    async def consume(self, kind: UsageKind, amount: int = 1) -> UsageDecision:
        await asyncio.sleep(0)
        limit = plan_for(self.tier).limit_for(kind)
        allowed = self.used + amount <= limit
        if allowed:
            self.used += amount
        return decision(kind, self.tier, self.used, time.time(), allowed=allowed)

    async def release(self, kind: UsageKind, amount: int = 1, period: str | None = None) -> UsageDecision:
        await asyncio.sleep(0)
        self.used = max(0, self.used - amount)
        return decision(kind, self.tier, self.used, time.time(), allowed=True)

    async def snapshot(self) -> Any:
        return snapshot("acme", self.tier, {UsageKind.STORAGE: self.used}, time.time())


def _call(tenant_id: str = "acme", tier: Tier = Tier.STARTER, headers: dict[str, str] | None = None) -> Call:
    async def no_body() -> bytes:
        return b""

    ctx = TenantContext(tenant_id, TenantType.CUSTOM_DOMAIN, tier, "acme.example", "r" * 16, int(time.time()))
    services = offline_services(tenant_id)  # no Supabase: audits are logged gaps
    return Call(ctx, "POST", "/api/files", {}, headers or {}, {}, None, services, no_body, body_kind="raw")


USER = Principal("00000000-0000-4000-8000-0000000000aa", "acme", Role.CLIENT)


def _store(bucket: FakeBucket, meter: FakeMeter, name: str, body: bytes, call: Call | None = None) -> Any:
    return api_files.store_file(call or _call(), bucket, meter, USER, name, body, len(body), "text/plain")


def test_an_upload_reserves_its_length_and_a_failed_write_gives_it_back() -> None:
    bucket, meter = FakeBucket(), FakeMeter()
    stored, reserved = asyncio.run(_store(bucket, meter, "a.txt", b"hello"))
    assert stored.size == 5 and reserved.used == 5 and meter.used == 5
    bucket.fail_put = True
    with pytest.raises(ApiError) as err:
        asyncio.run(_store(bucket, meter, "b.txt", b"x" * 100))
    assert err.value.status == 503 and meter.used == 5


def test_past_the_quota_is_429_and_nothing_is_written() -> None:
    bucket, meter = FakeBucket(), FakeMeter(used=GIB - 10)
    with pytest.raises(ApiError) as err:
        asyncio.run(_store(bucket, meter, "big.bin", b"x" * 11))
    assert err.value.status == 429 and err.value.extra["kind"] == "storage" and err.value.extra["used"] == GIB - 10
    assert "retry-after" not in err.value.headers and not bucket.objects and meter.used == GIB - 10
    asyncio.run(_store(bucket, meter, "fits.bin", b"x" * 10))  # exactly at the quota
    assert meter.used == GIB


def test_past_the_plans_file_size_is_413_and_the_reservation_is_returned() -> None:
    bucket, meter = FakeBucket(), FakeMeter()
    cap = plan_for(Tier.STARTER).max_file_bytes
    assert cap == 25 * MIB
    with pytest.raises(ApiError) as err:
        asyncio.run(api_files.store_file(_call(), bucket, meter, USER, "huge.bin", b"", cap + 1, "text/plain"))
    assert err.value.status == 413 and meter.used == 0 and not bucket.objects


def test_two_uploads_of_one_name_store_and_count_one_file() -> None:
    bucket, meter = FakeBucket(), FakeMeter()

    async def race() -> list[Any]:
        return await asyncio.gather(
            *(_store(bucket, meter, "same.txt", b"x" * (10 + i)) for i in range(5)), return_exceptions=True
        )

    results = asyncio.run(race())
    stored = [r for r in results if not isinstance(r, Exception)]
    assert len(stored) == 1 and all(isinstance(r, ApiError) and r.status == 409 for r in results if r not in stored)
    assert meter.used == bucket.objects[object_key("acme", "same.txt")].size


def test_two_deletes_of_one_file_refund_it_once() -> None:
    bucket, meter = FakeBucket(), FakeMeter()
    asyncio.run(_store(bucket, meter, "keep.txt", b"k" * 7))
    asyncio.run(_store(bucket, meter, "gone.txt", b"g" * 50))

    async def race() -> list[Any]:
        return await asyncio.gather(
            *(api_files.remove_file(_call(), bucket, meter, "gone.txt") for _ in range(5)), return_exceptions=True
        )

    results = asyncio.run(race())
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(r.status == 404 for r in results if isinstance(r, ApiError))
    assert meter.used == 7 and list(bucket.objects) == [object_key("acme", "keep.txt")]


def test_a_tombstone_left_by_a_crashed_delete_is_invisible_and_its_name_can_be_reused() -> None:
    bucket, meter = FakeBucket(), FakeMeter()
    key = object_key("acme", "t.txt")
    bucket.objects[key] = StoredObject(key, 0, "tomb", datetime.now(timezone.utc), None, {api_files.TOMBSTONE: "1"})
    with pytest.raises(ApiError) as err:
        asyncio.run(api_files.remove_file(_call(), bucket, meter, "t.txt"))
    assert err.value.status == 404
    stored, _ = asyncio.run(_store(bucket, meter, "t.txt", b"new"))
    assert stored.size == 3 and not api_files.is_tombstone(bucket.objects[key])


def test_reconcile_sets_the_level_to_the_bucket_and_keeps_reservations_made_meanwhile() -> None:
    bucket, meter = FakeBucket(), FakeMeter()
    asyncio.run(_store(bucket, meter, "a.txt", b"a" * 30))
    meter.used += 1000  # a crash between reserve and put left 1000 bytes counted
    other = replace(bucket.objects[object_key("acme", "a.txt")], key=object_key("zeta", "a.txt"), size=999)
    bucket.objects[other.key] = other  # a neighbour's object: never counted here
    result = asyncio.run(api_files.reconcile_level(_call(), bucket, meter))
    assert result == {
        "bucket_bytes": 30,
        "files": 1,
        "level_before": 1030,
        "level_after": 30,
        "limit": GIB,
        "over_limit": False,
    }
    assert meter.used == 30
    meter.used = 0  # a level reset below the bucket comes back up
    assert asyncio.run(api_files.reconcile_level(_call(), bucket, meter))["level_after"] == 30


def test_reconcile_stops_at_the_quota_when_the_bucket_holds_more() -> None:
    bucket, meter = FakeBucket(), FakeMeter(used=0)
    key = object_key("acme", "old.bin")
    bucket.objects[key] = StoredObject(key, 2 * GIB, "e", datetime.now(timezone.utc), None, {})
    result = asyncio.run(api_files.reconcile_level(_call(), bucket, meter))
    assert result["over_limit"] is True and result["level_after"] == GIB and result["bucket_bytes"] == 2 * GIB

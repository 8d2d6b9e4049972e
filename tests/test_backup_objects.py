"""Tenant files (R2 objects) in the backup, on CPython: the archive's R2 index is refused whole
when a key leaves the tenant's prefix or an object does not match it, the backup never archives
another tenant's key even when the listing returns it, and the Cloudflare implementation
(list with a cursor, get, put) against the fake Cloudflare API. The local implementation runs
end to end in tests/test_backup_restore.py."""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest

from controlplane.archive import dump, r2_member, read_archive
from controlplane.backup import _backup_objects, check_archive
from controlplane.edges import (
    R2_BUCKET,
    TOMBSTONE_METADATA,
    CloudflareR2Objects,
    ObjectData,
    ObjectInfo,
    object_key_error,
)
from controlplane.errors import BackendError, Refused
from controlplane.output import Reporter
from localrt.http_client import HttpxClient
from tests.cpython_imports import import_worker_module
from tests.fake_cloudflare import FakeCloudflare
from tests.test_backup_units import TENANT, members, write

PDF = b"%PDF-1.7 report"


def with_objects(
    objects: dict[str, tuple[bytes, str | None]],
    tenant: str = TENANT,
    edit: Callable[[list[dict[str, Any]], dict[str, bytes]], None] | None = None,
) -> dict[str, bytes]:
    """Archive members holding `objects` (key -> bytes, content type) with a consistent index;
    `edit` may change the index and the members before the manifest is computed."""
    items = members(tenant)
    index = []
    for key, (data, content_type) in objects.items():
        items[r2_member(key)] = data
        index.append(
            {
                "key": key,
                "member": r2_member(key),
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "content_type": content_type,
                "metadata": {},
            }
        )
    if edit is not None:
        edit(index, items)
    items["r2/index.json"] = dump({"status": "ok", "prefix": f"tenants/{tenant}/", "objects": index})
    return items


def test_the_tombstone_marker_is_the_files_apis() -> None:
    assert TOMBSTONE_METADATA == import_worker_module("tenant_worker.api_files").TOMBSTONE


def test_an_archive_with_the_tenants_objects_checks(tmp_path: Path) -> None:
    items = with_objects(
        {
            f"tenants/{TENANT}/files/docs/q1.pdf": (PDF, "application/pdf"),
            f"tenants/{TENANT}/files/café.txt": (b"menu", "text/plain; charset=utf-8"),
        }
    )
    plan = check_archive(read_archive(write(tmp_path / "a.tar.gz", items=items)), TENANT)
    assert sorted(o.key for o in plan.objects) == [
        f"tenants/{TENANT}/files/café.txt",
        f"tenants/{TENANT}/files/docs/q1.pdf",
    ]
    assert {o.content_type for o in plan.objects} == {"application/pdf", "text/plain; charset=utf-8"}


@pytest.mark.parametrize(
    "key",
    [
        "tenants/victim/files/a.txt",  # another tenant
        f"tenants/{TENANT}x/files/a.txt",  # a tenant id that starts the same
        f"tenants/{TENANT}/../victim/files/a.txt",
        f"tenants/{TENANT}/files//a.txt",
        f"tenants/{TENANT}/files/a\\..\\b",
        f"tenants/{TENANT}/files/a\x00b",
        f"tenants/{TENANT}/",
        "files/a.txt",
    ],
    ids=["other tenant", "prefix of an id", "dot-dot", "empty segment", "backslash", "nul", "the root", "no prefix"],
)
def test_an_r2_key_outside_the_tenants_prefix_refuses_the_whole_archive(tmp_path: Path, key: str) -> None:
    """The manifest is consistent (the checksums are right): the key itself is what is refused."""
    items = with_objects({f"tenants/{TENANT}/files/ok.txt": (b"ok", "text/plain"), key: (b"x", "text/plain")})
    archive = read_archive(write(tmp_path / "a.tar.gz", items=items))
    with pytest.raises(Refused, match="outside the tenant's prefix"):
        check_archive(archive, TENANT)


def _wrong_size(index: list[dict[str, Any]], items: dict[str, bytes]) -> None:
    index[0]["bytes"] += 1


def _wrong_bytes(index: list[dict[str, Any]], items: dict[str, bytes]) -> None:
    items[index[0]["member"]] = b"something else"


def _member_of_another_key(index: list[dict[str, Any]], items: dict[str, bytes]) -> None:
    index[0]["member"] = r2_member("tenants/victim/files/a.txt")
    items[index[0]["member"]] = items[r2_member(index[0]["key"])]


def _unindexed_object(index: list[dict[str, Any]], items: dict[str, bytes]) -> None:
    items[r2_member("tenants/victim/files/planted")] = b"planted"


def _twice(index: list[dict[str, Any]], items: dict[str, bytes]) -> None:
    index.append(dict(index[0]))


def _unknown_field(index: list[dict[str, Any]], items: dict[str, bytes]) -> None:
    index[0]["bucket"] = "another-bucket"


@pytest.mark.parametrize(
    "edit,message",
    [
        (_wrong_size, "does not match its index"),
        (_wrong_bytes, "does not match its index"),
        (_member_of_another_key, "names no archived object"),
        (_unindexed_object, "its index does not name"),
        (_twice, "names a key twice"),
        (_unknown_field, "index is malformed"),
    ],
    ids=["size", "bytes", "member of another key", "unindexed object", "key twice", "unknown field"],
)
def test_an_r2_index_that_does_not_match_its_objects_is_refused(
    tmp_path: Path, edit: Callable[[list[dict[str, Any]], dict[str, bytes]], None], message: str
) -> None:
    items = with_objects({f"tenants/{TENANT}/files/a.txt": (b"aaa", "text/plain")}, edit=edit)
    archive = read_archive(write(tmp_path / "a.tar.gz", items=items))
    with pytest.raises(Refused, match=message):
        check_archive(archive, TENANT)


# ---- the Cloudflare implementation, against the fake API ----------------------------------------
def _objects(
    fake: FakeCloudflare, http: HttpxClient, *, dry_run: bool = False, reporter: Reporter | None = None
) -> CloudflareR2Objects:
    return CloudflareR2Objects(
        http,
        token="t0ken",
        account_id="acct",
        base_url=fake.url,
        reporter=reporter or Reporter(quiet=True),
        dry_run=dry_run,
    )


def test_cloudflare_objects_list_get_and_put_only_the_tenants_keys() -> None:
    with FakeCloudflare(token="t0ken", account_id="acct", zone_id="zone") as fake:
        for i in range(1500):  # two pages
            fake.r2[(R2_BUCKET, f"tenants/{TENANT}/files/f{i:04}")] = b"x" * (i % 7)
        fake.r2[(R2_BUCKET, f"tenants/{TENANT}/files/q1.pdf")] = PDF
        fake.r2_types[(R2_BUCKET, f"tenants/{TENANT}/files/q1.pdf")] = "application/pdf"
        fake.r2[(R2_BUCKET, f"tenants/{TENANT}-2/files/keep")] = b"k"
        fake.r2[(R2_BUCKET, "tenants/victim/files/keep")] = b"k"

        async def run() -> tuple[Any, ...]:
            async with HttpxClient() as http:
                objects = _objects(fake, http)
                listed = await objects.list(TENANT)
                got = await objects.get(TENANT, f"tenants/{TENANT}/files/q1.pdf")
                missing = await objects.get(TENANT, f"tenants/{TENANT}/files/nope")
                await objects.put(TENANT, f"tenants/{TENANT}/files/new.txt", b"new", "text/plain; charset=utf-8", {})
                with pytest.raises(BackendError, match="refused"):
                    await objects.put(TENANT, "tenants/victim/files/keep", b"overwritten", "text/plain", {})
                with pytest.raises(BackendError, match="refused"):
                    await objects.get(TENANT, "tenants/victim/files/keep")
                return listed, got, missing

        listed, got, missing = asyncio.run(run())
        assert len(listed) == 1501 and all(o.key.startswith(f"tenants/{TENANT}/") for o in listed)
        assert next(o for o in listed if o.key.endswith("q1.pdf")).content_type == "application/pdf"
        assert got == ObjectData(data=PDF, content_type="application/pdf") and missing is None
        assert fake.r2[(R2_BUCKET, f"tenants/{TENANT}/files/new.txt")] == b"new"
        assert fake.r2_types[(R2_BUCKET, f"tenants/{TENANT}/files/new.txt")] == "text/plain; charset=utf-8"
        assert fake.r2[(R2_BUCKET, "tenants/victim/files/keep")] == b"k"
        assert not [r for r in fake.requests if "victim" in r[1]]  # refused before any request


def test_a_dry_run_put_is_printed_and_never_sent() -> None:
    with FakeCloudflare(token="t0ken", account_id="acct", zone_id="zone") as fake:
        out = io.StringIO()
        reporter = Reporter(out=out, err=io.StringIO())

        async def run() -> None:
            async with HttpxClient() as http:
                await _objects(fake, http, dry_run=True, reporter=reporter).put(
                    TENANT, f"tenants/{TENANT}/files/a.bin", b"\x00\xff" * 10, "application/octet-stream", {}
                )

        asyncio.run(run())
        assert fake.r2 == {} and not [r for r in fake.requests if r[0] == "PUT"]
        assert "(20 bytes, application/octet-stream)" in out.getvalue() and "\\x00" not in out.getvalue()


def test_backup_never_archives_another_tenants_key_even_when_the_listing_returns_it() -> None:
    with FakeCloudflare(token="t0ken", account_id="acct", zone_id="zone") as fake:
        fake.r2_ignore_prefix = True  # a listing that ignores its prefix
        fake.r2[(R2_BUCKET, f"tenants/{TENANT}/files/a.txt")] = b"mine"
        fake.r2_types[(R2_BUCKET, f"tenants/{TENANT}/files/a.txt")] = "text/plain"
        fake.r2[(R2_BUCKET, f"tenants/{TENANT}/files/gone.txt")] = b""  # a delete in progress
        fake.r2[(R2_BUCKET, "tenants/victim/files/secret.txt")] = b"the neighbour's"
        fake.r2[(R2_BUCKET, f"tenants/{TENANT}x/files/b.txt")] = b"a lookalike's"
        archived: dict[str, bytes] = {}

        async def run() -> dict[str, Any]:
            async with HttpxClient() as http:
                objects = _objects(fake, http)
                real_list = objects.list

                async def listing(tenant_id: str) -> list[ObjectInfo]:
                    """The fake ignored the prefix (the class filtered); this listing does not filter."""
                    found = [
                        o.model_copy(update={"metadata": {TOMBSTONE_METADATA: "1"}})
                        if o.key.endswith("gone.txt")
                        else o
                        for o in await real_list(tenant_id)
                    ]
                    mine = [f"tenants/{TENANT}/files/a.txt", f"tenants/{TENANT}/files/gone.txt"]
                    assert [o.key for o in found] == mine
                    return found + [
                        ObjectInfo(key="tenants/victim/files/secret.txt", size=15),
                        ObjectInfo(key=f"tenants/{TENANT}x/files/b.txt", size=13),
                    ]

                objects.list = listing  # type: ignore[method-assign]
                cp = SimpleNamespace(objects=objects, reporter=Reporter(quiet=True, err=io.StringIO()))
                return await _backup_objects(cp, TENANT, archived)  # type: ignore[arg-type]

        section = asyncio.run(run())
        assert [o["key"] for o in section["objects"]] == [f"tenants/{TENANT}/files/a.txt"]
        assert section["objects"][0]["content_type"] == "text/plain" and section["bytes"] == 4
        assert list(archived.values()) == [b"mine"]
        assert not [r for r in fake.requests if r[0] == "GET" and ("victim" in r[1] or f"{TENANT}x" in r[1])]


def test_the_key_rules_match_the_hosts() -> None:
    """The same rules are in localrt/node/host.mjs (confinedKey); the e2e test attacks those."""
    assert object_key_error("a", "tenants/a/files/x") is None
    for key in ("tenants/b/files/x", "tenants/ab/x", "tenants/a/../b", "tenants/a//x", "tenants/a/x\\y", "tenants/a/"):
        assert object_key_error("a", key) is not None, key

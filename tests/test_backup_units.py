"""The backup archive and the operator's control tokens, on CPython (no platform needed):
every way of changing an archive after it was written is refused before anything is read
from it, and a control token opens one tenant's Worker for one operation, briefly."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any, Callable

import pytest

from controlplane.archive import MANIFEST, dump, read_archive, write_archive
from controlplane.audit_chain import GENESIS, row_hash
from controlplane.backup import check_archive, schema_version
from controlplane.errors import Refused
from shared.context import derive_tenant_key
from shared.control_token import ControlTokenError, issue, verify

TENANT = "acme"


def chain_rows(tenant: str, n: int = 2) -> list[dict[str, Any]]:
    rows, prev = [], GENESIS
    for seq in range(1, n + 1):
        row = {
            "id": seq,
            "tenant_id": tenant,
            "seq": seq,
            "at_text": f"2026-11-0{seq}T10:00:00.000000Z",
            "actor": "system:tenant-cli",
            "action": "tenant.added",
            "target": tenant,
            "request_id": "cli-1",
            "outcome": "success",
            "details_text": '{"n": %d}' % seq,
            "prev_hash": prev,
        }
        row["row_hash"] = row_hash(
            **{
                k: row[k]
                for k in (
                    "tenant_id",
                    "seq",
                    "at_text",
                    "actor",
                    "action",
                    "target",
                    "request_id",
                    "outcome",
                    "details_text",
                )
            },
            prev_hash=prev,
        )
        prev = row["row_hash"]
        rows.append(row)
    return rows


def members(tenant: str = TENANT) -> dict[str, bytes]:
    return {
        "supabase/tenants.json": dump(
            [
                {
                    "tenant_id": tenant,
                    "name": "Acme",
                    "domain": f"{tenant}.example.com",
                    "type": "custom-domain",
                    "subscription_tier": "starter",
                    "status": "active",
                    "script_name": f"cmgsite-{tenant}",
                    "whitelabel_config": {},
                }
            ]
        ),
        "supabase/profiles.json": dump([{"id": "00000000-0000-4000-8000-00000000000a", "tenant_id": tenant}]),
        "supabase/audit_log.json": dump(chain_rows(tenant)),
        "durable_objects/usage_meter.json": dump({"status": "unavailable", "reason": "test"}),
        "r2/index.json": dump({"status": "not_configured", "objects": []}),
    }


def write(path: Path, tenant: str = TENANT, items: dict[str, bytes] | None = None) -> Path:
    write_archive(
        path, tenant_id=tenant, schema_version=schema_version(), members=items or members(tenant), sections={}
    )
    return path


def rewrite(src: Path, dst: Path, change: Callable[[dict[str, bytes]], None]) -> Path:
    """Unpack, let `change` edit the members (manifest included), pack again."""
    with tarfile.open(src) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}  # type: ignore[union-attr]
    change(files)
    with tarfile.open(dst, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dst


def test_a_written_archive_reads_back_and_checks(tmp_path: Path) -> None:
    path = write(tmp_path / "a.tar.gz")
    assert path.stat().st_mode & 0o777 == 0o600
    archive = read_archive(path)
    assert archive.manifest.tenant_id == TENANT and archive.manifest.schema_version == schema_version()
    assert archive.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    plan = check_archive(archive, TENANT)
    assert plan.tenant.tenant_id == TENANT and len(plan.chain) == 2


def _edit_row(files: dict[str, bytes]) -> None:
    rows = json.loads(files["supabase/profiles.json"])
    rows[0]["tenant_role"] = "admin"
    files["supabase/profiles.json"] = dump(rows)


def _extra_member(files: dict[str, bytes]) -> None:
    files["supabase/secrets.json"] = b"[]"


def _drop_member(files: dict[str, bytes]) -> None:
    del files["supabase/profiles.json"]


def _traversal(files: dict[str, bytes]) -> None:
    files["../../etc/cron.d/x"] = b"* * * * * root true"


def _no_manifest(files: dict[str, bytes]) -> None:
    del files[MANIFEST]


@pytest.mark.parametrize(
    "change",
    [_edit_row, _extra_member, _drop_member, _traversal, _no_manifest],
    ids=["edited row", "extra member", "missing member", "path traversal", "no manifest"],
)
def test_a_tampered_archive_is_refused(tmp_path: Path, change: Callable[[dict[str, bytes]], None]) -> None:
    tampered = rewrite(write(tmp_path / "a.tar.gz"), tmp_path / "t.tar.gz", change)
    with pytest.raises(Refused, match="refused"):
        read_archive(tampered)


def test_a_symlink_member_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("worker.json")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(Refused, match="not a regular file"):
        read_archive(path)


def test_not_an_archive_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(Refused, match="not a readable"):
        read_archive(tmp_path / "x")


def test_tenant_a_archive_is_refused_under_tenant_b(tmp_path: Path) -> None:
    archive = read_archive(write(tmp_path / "a.tar.gz"))
    with pytest.raises(Refused, match="holds tenant 'acme', not 'victim'"):
        check_archive(archive, "victim")


def test_an_archive_relabelled_for_another_tenant_is_refused(tmp_path: Path) -> None:
    """The manifest says B (and its checksum is recomputed), the rows are still A's."""

    def relabel(files: dict[str, bytes]) -> None:
        manifest = json.loads(files[MANIFEST])
        manifest["tenant_id"] = "victim"
        files[MANIFEST] = dump(manifest)

    archive = read_archive(rewrite(write(tmp_path / "a.tar.gz"), tmp_path / "b.tar.gz", relabel))
    with pytest.raises(Refused, match="rows of another tenant"):
        check_archive(archive, "victim")


def test_rows_of_another_tenant_inside_a_consistent_archive_are_refused(tmp_path: Path) -> None:
    items = members()
    items["supabase/profiles.json"] = dump([{"id": "00000000-0000-4000-8000-00000000000b", "tenant_id": "victim"}])
    archive = read_archive(write(tmp_path / "a.tar.gz", items=items))
    with pytest.raises(Refused, match="rows of another tenant"):
        check_archive(archive, None)


def test_a_forged_audit_chain_inside_a_consistent_archive_is_refused(tmp_path: Path) -> None:
    items = members()
    rows = chain_rows(TENANT, 3)
    rows[1]["target"] = "rewritten"  # the checksums are recomputed, the chain is not
    items["supabase/audit_log.json"] = dump(rows)
    archive = read_archive(write(tmp_path / "a.tar.gz", items=items))
    with pytest.raises(Refused, match="audit chain does not verify at seq 2"):
        check_archive(archive, TENANT)


@pytest.mark.parametrize("version", ["9999_future", "29991231235959_future"])
def test_an_archive_from_a_newer_schema_is_refused(tmp_path: Path, version: str) -> None:
    write_archive(tmp_path / "n.tar.gz", tenant_id=TENANT, schema_version=version, members=members(), sections={})
    with pytest.raises(Refused, match="newer than this code"):
        check_archive(read_archive(tmp_path / "n.tar.gz"), TENANT)
    # An archive written before the Supabase CLI layout names its schema NNNN_name: older, so it restores.
    write_archive(
        tmp_path / "o.tar.gz", tenant_id=TENANT, schema_version="0009_operations", members=members(), sections={}
    )
    assert check_archive(read_archive(tmp_path / "o.tar.gz"), TENANT).tenant.tenant_id == TENANT


# ---- control tokens ------------------------------------------------------------------------------
MASTER = "m" * 48


def test_a_control_token_opens_one_tenant_for_one_operation_briefly() -> None:
    key_a, key_b = derive_tenant_key(MASTER, "acme"), derive_tenant_key(MASTER, "beta")
    token = issue(key_a, "acme", "meter.read", now=1000)
    verify(token, key=key_a, tenant_id="acme", op="meter.read", now=1001)
    refusals = [
        dict(key=key_b, tenant_id="beta", op="meter.read", now=1001),  # another tenant's Worker
        dict(key=key_a, tenant_id="beta", op="meter.read", now=1001),  # relabelled tenant
        dict(key=key_a, tenant_id="acme", op="meter.restore", now=1001),  # another operation
        dict(key=key_a, tenant_id="acme", op="meter.read", now=1061),  # expired
    ]
    for kw in refusals:
        with pytest.raises(ControlTokenError):
            verify(token, **kw)  # type: ignore[arg-type]
    forged = token[:-4] + ("0000" if not token.endswith("0000") else "1111")
    for bad in (forged, None, "", "Bearer x", token.replace("meter.read", "meter.restore")):
        with pytest.raises(ControlTokenError):
            verify(
                bad,
                key=key_a,
                tenant_id="acme",
                op="meter.restore" if bad and "restore" in bad else "meter.read",
                now=1001,
            )
    with pytest.raises(ValueError):
        issue(key_a, "acme", "meter.read", now=1000, ttl_seconds=3600)

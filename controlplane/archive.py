"""The per-tenant backup archive: a gzip'd tar with a checksummed manifest (no I/O but the file).

    manifest.json                    format, tenant id, schema version, sha256 + size of every member
    supabase/<table>.json            the tenant's rows of every table with a tenant_id column
                                     (audit_log: the chain with the exact text that was hashed)
    durable_objects/usage_meter.json the UsageMeter's snapshot, or why it could not be read
    r2/index.json                    the tenant's objects under tenants/<id>/: key, member, sha256, size,
                                     content type, custom metadata (checked in controlplane.backup)
    r2/objects/<sha256 of the key>   each object's bytes (named by hash: no key reaches a path)
    worker.json, d1.json             the Worker's name and vars (never secrets), the routing rows

Reading is strict: only regular files with the names above, each at most MAX_MEMBER_BYTES,
no duplicates, every member listed in the manifest and every listed member present with its
sha256 and size. Anything else refuses the whole archive before anything is written.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controlplane.errors import Refused
from shared.models import TENANT_ID_PATTERN

FORMAT = "cmgsite-tenant-backup/1"
MANIFEST = "manifest.json"
MAX_MEMBER_BYTES = 256 * 1024 * 1024
MAX_TOTAL_BYTES = 2 * 1024 * 1024 * 1024
MAX_MEMBERS = 200_000
_MEMBER = re.compile(
    r"^(supabase/[a-z_][a-z0-9_]{0,62}\.json|durable_objects/[a-z_]{1,40}\.json|r2/index\.json"
    r"|r2/objects/[0-9a-f]{64}|worker\.json|d1\.json)$"
)
_SCHEMA = re.compile(r"^([0-9]{4}|[0-9]{14})_[a-z0-9_]{1,60}$")


class MemberDigest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0, le=MAX_MEMBER_BYTES)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str
    tenant_id: str = Field(pattern=TENANT_ID_PATTERN)
    schema_version: str = Field(pattern=_SCHEMA.pattern)
    created_at: str
    members: dict[str, MemberDigest]
    sections: dict[str, Any] = Field(default_factory=dict)


class Archive(BaseModel):
    """An archive that passed every check: its manifest, members and the file's own sha256."""

    model_config = ConfigDict(frozen=True)

    manifest: Manifest
    members: dict[str, bytes]
    sha256: str

    def json_member(self, name: str) -> Any:
        return _strict_json(self.members[name], name)


def _digest(data: bytes) -> MemberDigest:
    return MemberDigest(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))


def dump(value: Any) -> bytes:
    return json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")


def r2_member(key: str) -> str:
    return "r2/objects/" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def write_archive(
    path: Path, *, tenant_id: str, schema_version: str, members: dict[str, bytes], sections: dict[str, Any]
) -> str:
    """Write the archive (mode 0600: it holds personal data); returns the file's sha256."""
    for name in members:
        if not _MEMBER.match(name) or name == MANIFEST:
            raise ValueError(f"not an archive member name: {name!r}")
    manifest = Manifest(
        format=FORMAT,
        tenant_id=tenant_id,
        schema_version=schema_version,
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        members={name: _digest(data) for name, data in sorted(members.items())},
        sections=sections,
    )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [(MANIFEST, dump(manifest.model_dump(mode="json"))), *sorted(members.items())]:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, 0
            tar.addfile(info, io.BytesIO(data))
    blob = buf.getvalue()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
    return hashlib.sha256(blob).hexdigest()


def _refuse(path: Path | str, why: str) -> Refused:
    return Refused(f"archive {path} refused: {why}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key")
    return out


def _strict_json(data: bytes, name: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, UnicodeDecodeError):
        raise Refused(f"archive member {name} is not valid JSON") from None


def read_archive(path: Path) -> Archive:
    """Open and check an archive; Refused (nothing written anywhere) if any check fails."""
    try:
        blob = Path(path).read_bytes()
    except OSError as exc:
        raise _refuse(path, f"cannot read it ({exc.strerror})") from None
    members: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tar:
            for info in tar:
                if len(members) >= MAX_MEMBERS:
                    raise _refuse(path, "too many members")
                if not info.isreg():
                    raise _refuse(path, f"member {info.name!r} is not a regular file")
                if info.name != MANIFEST and not _MEMBER.match(info.name):
                    raise _refuse(path, f"unexpected member {info.name!r}")
                if info.name in members:
                    raise _refuse(path, f"member {info.name!r} appears twice")
                if info.size > MAX_MEMBER_BYTES or total + info.size > MAX_TOTAL_BYTES:
                    raise _refuse(path, f"member {info.name!r} is too large")
                f = tar.extractfile(info)
                data = f.read() if f is not None else b""
                if len(data) != info.size:
                    raise _refuse(path, f"member {info.name!r} is truncated")
                total += len(data)
                members[info.name] = data
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:  # Refused passes through
        raise _refuse(path, f"not a readable tar.gz ({type(exc).__name__})") from None
    if MANIFEST not in members:
        raise _refuse(path, "no manifest.json")
    try:
        manifest = Manifest.model_validate(_strict_json(members.pop(MANIFEST), MANIFEST))
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})
        raise _refuse(path, f"the manifest is malformed ({', '.join(fields)[:300]})") from None
    if manifest.format != FORMAT:
        raise _refuse(path, f"format {manifest.format!r} is not {FORMAT!r}")
    listed, present = set(manifest.members), set(members)
    if listed - present:
        raise _refuse(path, f"members listed but missing: {', '.join(sorted(listed - present))[:300]}")
    if present - listed:
        raise _refuse(path, f"members not in the manifest: {', '.join(sorted(present - listed))[:300]}")
    for name, expected in manifest.members.items():
        if _digest(members[name]) != expected:
            raise _refuse(path, f"checksum mismatch on {name}: the archive was changed after it was written")
    return Archive(manifest=manifest, members=members, sha256=hashlib.sha256(blob).hexdigest())

"""Tenant files in R2: upload, list, download, delete, and the storage level's repair.

    POST   /api/files?name=<name>            the raw body is the file (Content-Length required)   signed in
    GET    /api/files[?prefix=&cursor=&limit=]  this tenant's files, a page at a time              signed in
    GET    /api/files/download?name=<name>   the file, as an attachment                            signed in
    DELETE /api/files?name=<name>                                                                    admin
    POST   /api/files/reconcile              set the storage level to what the bucket holds          admin

Isolation. One bucket holds every tenant's objects; a file lives at
`tenants/<tenant_id>/files/<name>` with the tenant id from the dispatcher's verified context
(shared.file_keys). The name is the user's, refused with 400 `invalid_file_name` when it could
read as another path (traversal, absolute, backslash, control and bidi characters, look-alike
separators, over-long), never repaired. No request field names a tenant or a key.

Metering (the `storage` level in the tenant's UsageMeter, in bytes):
- upload: the declared Content-Length is reserved before anything is written; past the tier's
  quota, 429 `usage_limit_exceeded`. A reservation whose write does not happen (R2 error, a
  body that breaks off, the name taken) is released: one `tenant_worker.metering.reserve`
  block, one meter call to reserve and at most one to give back.
- names are never overwritten: the write is conditional (`If-None-Match: *`), so two uploads of
  one name store one file and count one file (409 `file_exists` for the other).
- delete: the object is first swapped, conditionally on its etag, for an empty tombstone
  (custom metadata `cmgsite-deleted`); only the request whose swap succeeds gives the bytes
  back, then removes the tombstone. Two deletes of one file cannot both refund it.
  Tombstones are invisible (list, download) and an upload may take their name.
- a crash between the reservation and the write, or between the swap and the refund, leaves
  the level above the bucket (never below it). `POST /api/files/reconcile` (admin) sets it to
  the bucket's real total: it reads the level, then lists the bucket, then applies the
  difference as one consume or release, so uploads reserved meanwhile keep their count. It is
  exact when no upload or delete runs at the same moment; one that does can leave the level
  off by that file until the next reconcile. A bucket above the quota (after a downgrade)
  leaves the level at the quota.

Uploads write an audit row (`file.uploaded`), so do deletes (`file.deleted`) and reconciles.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.file_keys import (
    FileNameError,
    download_filename,
    files_prefix,
    name_of,
    normalize_name,
    normalize_prefix,
    object_key,
)
from shared.security_headers import OTHER_CSP
from shared.tiers import UsageKind, plan_for
from shared.usage import UsageDecision
from tenant_worker.inbound_http import (
    ApiError,
    Call,
    Reply,
    RequestBody,
    Route,
    StreamBody,
    json_reply,
)
from tenant_worker.metering import Meter, give_back, meter_of, meter_unavailable, reserve, usage_view
from tenant_worker.principal import Principal, Role, require
from tenant_worker.r2_files import Bucket, BucketError, BucketMissing, StoredObject
from tenant_worker.request_body import read_body
from tenant_worker.supabase_access import record_audit

log = logging.getLogger("cmgsite.tenant.files")

TOMBSTONE = "cmgsite-deleted"  # custom metadata of a file being deleted: invisible, 0 bytes
DEFAULT_CONTENT_TYPE = "application/octet-stream"
DEFAULT_PAGE = 100
MAX_PAGE = 1000
_TOKEN = r"[a-z0-9!#$&^_.+-]{1,63}"
_MEDIA_TYPE = re.compile(rf"^{_TOKEN}/{_TOKEN}$")
_CHARSET = re.compile(r"^[a-z0-9_.:-]{1,40}$")


class FileView(BaseModel):
    """One file as the API shows it."""

    model_config = ConfigDict(frozen=True)

    name: str
    size: int = Field(ge=0)
    content_type: str
    uploaded_at: str
    etag: str


class ReconcileRequest(RequestBody):
    """POST /api/files/reconcile takes no fields (an empty body or `{}`)."""


def view(name: str, obj: StoredObject) -> dict[str, Any]:
    return FileView(
        name=name,
        size=obj.size,
        content_type=obj.content_type or DEFAULT_CONTENT_TYPE,
        uploaded_at=obj.uploaded.isoformat().replace("+00:00", "Z"),
        etag=obj.etag,
    ).model_dump()


def is_tombstone(obj: StoredObject) -> bool:
    return TOMBSTONE in obj.metadata


# ---- request parsing (pure) ----------------------------------------------------------------
def file_name(raw: str | None) -> str:
    try:
        return normalize_name(raw)
    except FileNameError as exc:
        raise ApiError(400, "invalid_file_name", str(exc)) from None


def content_type_of(header: str | None) -> str:
    """The stored Content-Type: the upload's own, checked (type/subtype, a charset kept), or
    application/octet-stream when none is sent; 415 for a malformed one."""
    if header is None or not header.strip():
        return DEFAULT_CONTENT_TYPE
    media, *params = (p.strip().lower() for p in header.split(";"))
    if not _MEDIA_TYPE.match(media):
        raise ApiError(415, "unsupported_media_type", "The Content-Type is not a media type (type/subtype).")
    for param in params:
        name, _, value = param.partition("=")
        value = value.strip().strip('"')
        if name.strip() == "charset" and _CHARSET.match(value):
            return f"{media}; charset={value}"
    return media


def declared_length(headers: dict[str, str]) -> int:
    """The upload's Content-Length: required (411), a plain decimal number (400)."""
    if "transfer-encoding" in headers and "content-length" not in headers:
        raise ApiError(411, "length_required", "Send the file with a Content-Length (no chunked uploads).")
    raw = headers.get("content-length")
    if raw is None:
        raise ApiError(411, "length_required", "Send the file with a Content-Length.")
    raw = raw.strip()
    if not raw.isdigit() or not raw.isascii() or len(raw) > 15:
        raise ApiError(400, "invalid_content_length", "Content-Length must be a whole number of bytes.")
    return int(raw)


def encode_cursor(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(raw: str | None) -> str | None:
    """The name a listing continues after; 400 for a cursor this API did not hand out."""
    if raw is None or raw == "":
        return None
    try:
        if len(raw) > 1000:
            raise ValueError("too long")
        name = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("utf-8")
        return normalize_name(name)
    except (ValueError, binascii.Error, UnicodeDecodeError, FileNameError):
        raise ApiError(400, "invalid_cursor", "The cursor is not one this listing handed out.") from None


def page_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise ApiError(400, "invalid_limit", f"limit must be a whole number from 1 to {MAX_PAGE}.")
    return int(raw)


# ---- edges ---------------------------------------------------------------------------------
def bucket_for(call: Call) -> Bucket:
    from tenant_worker.r2_files import R2Bucket

    try:
        return R2Bucket.of(call.env)
    except BucketMissing:
        raise ApiError(503, "storage_unavailable", "File storage is not configured for this site.") from None


def storage_failure(call: Call, exc: Exception, op: str) -> ApiError:
    log.error(
        json.dumps({"event": "storage_failed", "op": op, "request_id": call.request_id, "reason": str(exc)[:200]})
    )
    return ApiError(
        503, "storage_unavailable", "File storage is unavailable. Please try again.", headers={"retry-after": "5"}
    )


# ---- the operations (bucket and meter passed in: unit-testable with fakes) -------------------
async def store_file(
    call: Call,
    bucket: Bucket,
    meter: Meter,
    principal: Principal,
    name: str,
    body: StreamBody | bytes,
    length: int,
    content_type: str,
) -> tuple[StoredObject, UsageDecision | None]:
    """Write a new file: 409 if the name is taken; reserve `length` bytes first (429 past the
    quota, then 413 past the plan's file size); the reservation gives them back if the write
    does not happen (tenant_worker.metering.reserve)."""
    tenant = call.tenant
    key = object_key(tenant.tenant_id, name)
    try:
        current = await bucket.head(key)
    except BucketError as exc:
        raise storage_failure(call, exc, "head") from None
    if current is not None and not is_tombstone(current):
        raise ApiError(409, "file_exists", "A file with this name exists. Delete it first to replace it.")
    async with reserve(call, meter, UsageKind.STORAGE, length, actor=principal.user_id) as r:
        cap = plan_for(tenant.tier).max_file_bytes
        if length > cap:
            raise ApiError(
                413,
                "file_too_large",
                f"Files on this plan are at most {cap} bytes.",
                extra={"limit": cap, "size": length},
            )
        metadata = {"uploaded-by": principal.user_id}
        try:
            # Conditional: the name must still be free (or still hold the same tombstone), so a
            # concurrent upload of the same name cannot be overwritten, nor counted twice.
            stored = await bucket.put(
                key,
                body,
                content_type=content_type,
                metadata=metadata,
                if_absent=current is None,
                if_etag=None if current is None else current.etag,
            )
        except BucketError as exc:
            raise storage_failure(call, exc, "put") from None
        if stored is None:
            raise ApiError(409, "file_exists", "A file with this name exists. Delete it first to replace it.")
        if stored.size != length:  # R2 stores what the stream delivered, which is the Content-Length
            log.error(
                json.dumps(
                    {
                        "event": "upload_size_mismatch",
                        "declared": length,
                        "stored": stored.size,
                        "request_id": call.request_id,
                    }
                )
            )
        r.commit(stored.size)  # the bytes stored stay counted; any declared but not stored go back
    return stored, r.decision


async def remove_file(call: Call, bucket: Bucket, meter: Meter, name: str) -> tuple[StoredObject, UsageDecision | None]:
    """Swap the object for a tombstone (only one request can), refund its bytes, remove the tombstone."""
    key = object_key(call.tenant.tenant_id, name)
    try:
        current = await bucket.head(key)
        if current is None or is_tombstone(current):
            raise ApiError(404, "not_found", "No file of this site has that name.")
        swapped = await bucket.put(
            key,
            b"",
            content_type=DEFAULT_CONTENT_TYPE,
            metadata={TOMBSTONE: "1", "size": str(current.size)},
            if_etag=current.etag,
        )
    except BucketError as exc:
        raise storage_failure(call, exc, "delete") from None
    if swapped is None:  # another request changed or deleted it first: that one refunds
        raise ApiError(404, "not_found", "No file of this site has that name.")
    after = await give_back(call, meter, UsageKind.STORAGE, current.size)
    try:
        await bucket.delete(key)
    except BucketError as exc:  # an invisible, empty tombstone stays; an upload may take the name
        log.warning(json.dumps({"event": "tombstone_left", "request_id": call.request_id, "reason": str(exc)[:200]}))
    return current, after


async def bucket_total(call: Call, bucket: Bucket) -> tuple[int, int]:
    """(bytes, files) the tenant holds in the bucket, tombstones excluded."""
    prefix = files_prefix(call.tenant.tenant_id)
    total = count = 0
    after: str | None = None
    while True:
        objects, truncated = await bucket.list(prefix, start_after=after, limit=MAX_PAGE)
        for obj in objects:
            if not is_tombstone(obj):
                total += obj.size
                count += 1
        if not truncated or not objects:
            return total, count
        after = objects[-1].key


async def reconcile_level(call: Call, bucket: Bucket, meter: Meter) -> dict[str, Any]:
    """Make the storage level equal the bucket's total (see the module docstring for the order)."""
    try:
        before = (await meter.snapshot()).item(UsageKind.STORAGE)
    except Exception as exc:
        raise meter_unavailable(call, UsageKind.STORAGE, exc) from None
    try:
        total, files = await bucket_total(call, bucket)
    except BucketError as exc:
        raise storage_failure(call, exc, "list") from None
    delta = total - before.used
    level = before.used
    capped = False
    try:
        if delta > 0:
            d = await meter.consume(UsageKind.STORAGE, delta)
            if not d.allowed:  # more than the quota holds: count up to it (uploads stay refused)
                capped = True
                room = d.limit - d.used
                if room > 0:
                    d = await meter.consume(UsageKind.STORAGE, room)
            level = d.used
        elif delta < 0:
            level = (await meter.release(UsageKind.STORAGE, -delta)).used
    except Exception as exc:
        raise meter_unavailable(call, UsageKind.STORAGE, exc) from None
    return {
        "bucket_bytes": total,
        "files": files,
        "level_before": before.used,
        "level_after": level,
        "limit": before.limit,
        "over_limit": capped,
    }


# ---- handlers ------------------------------------------------------------------------------
async def upload(call: Call) -> Reply:
    principal = require(call)
    name = file_name(call.arg("name"))
    content_type = content_type_of(call.headers.get("content-type"))
    length = declared_length(call.headers)
    body: StreamBody | bytes = call.raw_body if call.raw_body is not None else b""
    stored, reserved = await store_file(
        call, bucket_for(call), meter_of(call), principal, name, body, length, content_type
    )
    await record_audit(
        call,
        actor=principal.user_id,
        action="file.uploaded",
        target=name,
        details={"size": stored.size, "content_type": content_type},
    )
    out: dict[str, Any] = {"file": view(name, stored)}
    if reserved is not None:
        out["usage"] = usage_view(reserved)
    return json_reply(out, 201)


async def list_files(call: Call) -> Reply:
    require(call)
    try:
        prefix = normalize_prefix(call.arg("prefix"))
    except FileNameError as exc:
        raise ApiError(400, "invalid_file_name", str(exc)) from None
    after = decode_cursor(call.arg("cursor"))
    limit = page_size(call.arg("limit"))
    tenant_id = call.tenant.tenant_id
    root = files_prefix(tenant_id)
    try:
        objects, truncated = await bucket_for(call).list(
            root + prefix, limit=limit, start_after=None if after is None else root + after
        )
    except BucketError as exc:
        raise storage_failure(call, exc, "list") from None
    files = []
    for obj in objects:
        name = name_of(tenant_id, obj.key)
        if name is not None and not is_tombstone(obj):
            files.append(view(name, obj))
    last = name_of(tenant_id, objects[-1].key) if truncated and objects else None
    return json_reply({"files": files, "next_cursor": encode_cursor(last) if last else None})


async def download(call: Call) -> Reply:
    require(call)
    name = file_name(call.arg("name"))
    try:
        found = await bucket_for(call).get(object_key(call.tenant.tenant_id, name))
    except BucketError as exc:
        raise storage_failure(call, exc, "get") from None
    if found is None or is_tombstone(found[0]):
        raise ApiError(404, "not_found", "No file of this site has that name.")
    obj, stream = found
    return Reply(
        200,
        stream,
        {
            "content-type": obj.content_type or DEFAULT_CONTENT_TYPE,
            "content-length": str(obj.size),
            "content-disposition": download_filename(name),
            "x-content-type-options": "nosniff",
            # Whatever its type (an uploaded HTML or SVG file too): a sandbox that runs nothing.
            "content-security-policy": OTHER_CSP,
            "etag": f'"{obj.etag}"',
        },
    )


async def delete(call: Call) -> Reply:
    principal = require(call, Role.ADMIN)
    name = file_name(call.arg("name"))
    removed, after = await remove_file(call, bucket_for(call), meter_of(call), name)
    await record_audit(
        call, actor=principal.user_id, action="file.deleted", target=name, details={"size": removed.size}
    )
    out: dict[str, Any] = {"deleted": name, "size": removed.size}
    if after is not None:
        out["usage"] = usage_view(after)
    return json_reply(out)


async def reconcile(call: Call) -> Reply:
    principal = require(call, Role.ADMIN)
    await read_body(call, ReconcileRequest, optional=True)  # no fields: no body or {}
    result = await reconcile_level(call, bucket_for(call), meter_of(call))
    await record_audit(call, actor=principal.user_id, action="file.storage_reconciled", target=None, details=result)
    return json_reply(result)


ROUTES = [
    Route("GET", "/api/files", list_files, "files_list"),
    Route("POST", "/api/files", upload, "files_upload", body="raw"),
    Route("DELETE", "/api/files", delete, "files_delete"),
    Route("GET", "/api/files/download", download, "files_download"),
    Route("POST", "/api/files/reconcile", reconcile, "files_reconcile"),
]

"""`backup` and `restore`: one tenant, every table, its UsageMeter and its R2 objects (tenant files).

backup writes one archive (controlplane.archive): the tenant's rows of every table with a
tenant_id column (found from PostgREST's schema, so tables other issues add are included; the
audit trail as its hash chain), its UsageMeter's snapshot read through the running platform
(controlplane.meter), its R2 objects under `tenants/<id>/` (controlplane.edges.TenantObjects:
locally through the running platform's host, on Cloudflare over the R2 object API), and its
Worker's name and vars (never a secret). It leaves a `tenant.backed_up` audit row.

restore brings the tenant back into an empty platform or the same one, and is safe to re-run:
  1. the archive is checked whole: checksums, format, schema version, every row of every
     table belongs to the archive's tenant, the audit chain verifies (controlplane.audit_chain),
     the R2 index names only keys under `tenants/<id>/`, each matching its archived bytes,
     and the archive's tenant is the one named on the command line, if one is;
  2. the platform is checked: no other tenant holds its id (another type or primary domain), a
     profile id, or a domain equal to, under or above one of its domains (shared.domains), and
     a primary tenant is not restored next to another primary;
  3. rows are written with the service role by natural keys (upserts: a re-run rewrites the
     same values; rows the tenant made since the backup stay). Usage goes through
     record_usage(), so no counter goes down; the audit chain through audit_restore(), which
     appends only what is missing and only rows that hash to their archived values (restored
     rows keep their hashes and the chain verifies after); the domain rules of
     20261126232039_domain_rules.sql apply as for any service-role write (quota, overlap);
  4. R2 objects are put back (before the tenant is routed); the Worker is deployed when
     missing (a new SESSION_SECRET: sessions do not survive) and the tenant is routed as the
     archive left it (converge); the meter's storage level is seeded through the tenant's
     Worker with the bucket's total for the tenant (a level the meter already holds is kept,
     with a warning when it differs);
  5. one `tenant.restored` audit row per archive (its sha256 is the row's target).
Nothing of another tenant is read into an archive or written by a restore: every read is
filtered by the tenant id, and every write is checked against the holder of its key first.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controlplane.archive import Archive, dump, r2_member, read_archive, write_archive
from controlplane.audit_chain import AuditChainRow, verify_chain
from controlplane.edges import MAX_OBJECT_BYTES, TOMBSTONE_METADATA, object_key_error, object_prefix, tenant_vars
from controlplane.errors import BackendError, ConfigError, Refused
from controlplane.lifecycle import ControlPlane
from controlplane.model import PRIMARY_ZONE, TenantRecord, parse_tenant_id
from shared.domains import overlapping
from shared.file_keys import files_prefix
from shared.models import TenantStatus, TenantType

# How each known table is written back: its conflict key, and columns the database makes.
TABLE_KEYS: dict[str, tuple[str, frozenset[str]]] = {
    "tenants": ("tenant_id", frozenset()),
    "profiles": ("id", frozenset()),
    "tenant_domains": ("domain", frozenset({"id"})),
}
SPECIAL_TABLES = {"audit_log", "tenant_usage"}  # written through their functions
USAGE_COLUMNS = ("tenant_id", "usage_type", "period", "usage_count", "usage_limit")


MIGRATIONS = Path(__file__).resolve().parent.parent / "supabase" / "migrations"


def schema_version() -> str:
    """The newest migration this code knows (the schema the archive's rows have): its file name
    without .sql, `<14-digit timestamp>_<name>` (the Supabase CLI's layout)."""
    return sorted(p.stem for p in MIGRATIONS.glob("[0-9]*_*.sql"))[-1]


def _schema_number(version: str) -> int:
    """Orders schema versions: the migration's timestamp; an archive written before the move to the
    Supabase CLI layout names its schema `NNNN_name`, mapped to the same file's timestamp."""
    from localrt.postgres import LEGACY_NAMES

    if len(version) > 5 and version[:4].isdigit() and version[4] == "_":
        known = LEGACY_NAMES.get(f"{version}.sql")
        if known is None:  # an old-style number this code never had: not one it can read
            return 10**15
        version = known
    head = version[:14]
    if not head.isdigit():
        raise Refused(f"the archive names an unknown schema version {version[:40]!r}")
    return int(head)


# ---- backup ------------------------------------------------------------------------------------
async def backup_tenant(cp: ControlPlane, tenant_id: str, output: Path) -> dict[str, Any]:
    tenant = await cp.require(parse_tenant_id(tenant_id))
    tid = tenant.tenant_id
    members: dict[str, bytes] = {}
    counts: dict[str, int] = {}
    for table in await cp.registry.tenant_tables():
        if table == "audit_log":
            chain = await cp.registry.audit_chain(tid)
            rows: list[dict[str, Any]] = [r.model_dump() for r in chain]
        else:
            rows = await cp.registry.rows_of(table, tid)
        strays = [r for r in rows if r.get("tenant_id") != tid]
        if strays:  # a filter that did not hold: never let another tenant's row into the archive
            raise BackendError(f"supabase returned rows of another tenant for {table}; nothing was written")
        members[f"supabase/{table}.json"] = dump(rows)
        counts[table] = len(rows)
    report = verify_chain(tid, [AuditChainRow.model_validate(r) for r in _load_rows(members, "audit_log")])
    if not report.ok:
        cp.reporter.warn(
            f"{tid}'s audit chain is broken at seq {report.first_broken.seq if report.first_broken else '?'}:"
            " the archive keeps it as it is, and a restore of it will be refused"
        )

    meter_section: dict[str, Any]
    if cp.meter is None:
        meter_section = {"status": "unavailable", "reason": "no meter access configured"}
    else:
        read = await cp.meter.read(tenant)
        meter_section = (
            {"status": "ok", "snapshot": read.snapshot}
            if read.available and read.snapshot is not None
            else {"status": "unavailable", "reason": read.reason}
        )
        if meter_section["status"] != "ok":
            cp.reporter.warn(
                f"{tid}'s UsageMeter was not read ({read.reason}); its flushed history (tenant_usage) is in the archive"
            )
    members["durable_objects/usage_meter.json"] = dump(meter_section)

    r2_section: dict[str, Any]
    if cp.objects is None:
        r2_section = {
            "status": "not_configured",
            "objects": [],
            "reason": "this platform binds no R2 bucket for tenant files",
        }
    else:
        r2_section = await _backup_objects(cp, tid, members)
    members["r2/index.json"] = dump(r2_section)
    members["worker.json"] = dump(
        {
            "script_name": tenant.script_name,
            "vars": tenant_vars(tenant),
            "deployed": await cp.scripts.exists(tenant.script_name),
            "secrets": "not backed up",
        }
    )
    members["d1.json"] = dump(
        {"tenants": [r for r in [await cp.replica.tenant(tid)] if r], "tenant_domains": await cp.replica.domains(tid)}
    )

    sections = {
        "supabase": counts,
        "audit_chain": report.model_dump(mode="json"),
        "durable_objects": {"usage_meter": meter_section["status"]},
        "r2": {"status": r2_section["status"], "objects": len(r2_section["objects"])},
    }
    if cp.dry_run:  # the rows were read; the archive is only planned
        cp.reporter.plan("local file", f"write {output} (0600): " + ", ".join(f"{t} {n}" for t, n in counts.items()))
        return {
            "tenant_id": tid,
            "archive": str(output),
            "rows": counts,
            "audit_chain_ok": report.ok,
            "usage_meter": meter_section["status"],
            "r2": r2_section["status"],
        }
    cp.reporter.step(f"archive: write {output}")
    digest = write_archive(output, tenant_id=tid, schema_version=schema_version(), members=members, sections=sections)
    await cp.registry.audit(
        tid,
        "tenant.backed_up",
        tid,
        {
            "archive_sha256": digest,
            "rows": counts,
            "usage_meter": meter_section["status"],
            "r2_objects": len(r2_section["objects"]),
        },
    )
    return {
        "tenant_id": tid,
        "archive": str(output),
        "sha256": digest,
        "rows": counts,
        "audit_chain_ok": report.ok,
        "usage_meter": meter_section["status"],
        "r2": r2_section["status"],
    }


async def _backup_objects(cp: ControlPlane, tid: str, members: dict[str, bytes]) -> dict[str, Any]:
    """The tenant's objects into `r2/objects/`, indexed in `r2/index.json`. Only keys under
    `tenants/<id>/` (whatever the listing returned), no tombstones (a delete in progress)."""
    assert cp.objects is not None
    prefix = object_prefix(tid)
    cp.reporter.step(f"{cp.objects.label}: read the objects under {prefix}", read=True)
    index = []
    for info in await cp.objects.list(tid):
        why = object_key_error(tid, info.key)
        if why is not None:  # another tenant's key (a listing that ignored its prefix), or a key restore refuses
            cp.reporter.warn(f"an R2 object the listing returned is not backed up: its key is {why}")
            continue
        if info.tombstone:
            continue
        got = await cp.objects.get(tid, info.key)
        if got is None:  # deleted since the listing
            continue
        if len(got.data) > MAX_OBJECT_BYTES:
            raise BackendError(
                f"R2 object {info.key} is larger than an archive member may be ({MAX_OBJECT_BYTES} bytes)"
            )
        member = r2_member(info.key)
        members[member] = got.data
        metadata = {k: v for k, v in (got.metadata or info.metadata).items() if k != TOMBSTONE_METADATA}
        index.append(
            {
                "key": info.key,
                "member": member,
                "bytes": len(got.data),
                "sha256": hashlib.sha256(got.data).hexdigest(),
                "content_type": got.content_type or info.content_type,
                "metadata": metadata,
            }
        )
    return {"status": "ok", "prefix": prefix, "objects": index, "bytes": sum(o["bytes"] for o in index)}


def _load_rows(members: dict[str, bytes], table: str) -> list[dict[str, Any]]:
    name = f"supabase/{table}.json"
    return list(json.loads(members[name])) if name in members else []


# ---- restore -----------------------------------------------------------------------------------
class ArchivedObject(BaseModel):
    """One entry of `r2/index.json`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    member: str
    bytes: int = Field(ge=0, le=MAX_OBJECT_BYTES)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    content_type: str | None = Field(default=None, max_length=256)
    metadata: dict[str, str] = Field(default_factory=dict)


class RestorePlan(BaseModel):
    """An archive that passed every check, in the shapes the writes need."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    archive: Archive
    tenant: TenantRecord
    tables: dict[str, list[dict[str, Any]]]
    chain: list[AuditChainRow]
    meter: dict[str, Any]
    r2: dict[str, Any]
    objects: list[ArchivedObject] = []


def _check_objects(archive: Archive, tid: str, entries: Any) -> list[ArchivedObject]:
    """The R2 index: every key under the tenant's prefix (refused whole otherwise, before any
    write), each object's member named by its key's hash, present and matching its sha256 and
    size, no key twice, and no object member the index does not name."""
    if not isinstance(entries, list):
        raise Refused("the archive's R2 index is malformed")
    try:
        objects = [ArchivedObject.model_validate(e) for e in entries]
    except ValidationError as exc:
        raise Refused(f"the archive's R2 index is malformed: {exc.errors()[0].get('msg', '')[:200]}") from None
    for obj in objects:
        why = object_key_error(tid, obj.key)
        if why is not None:
            raise Refused(
                f"the archive's R2 index names an object outside the tenant's prefix ({obj.key!r}: {why}): "
                "refused whole"
            )
        if obj.member != r2_member(obj.key) or obj.member not in archive.members:
            raise Refused(f"the archive's R2 index names no archived object for {obj.key!r}")
        data = archive.members[obj.member]
        if hashlib.sha256(data).hexdigest() != obj.sha256 or len(data) != obj.bytes:
            raise Refused(f"R2 object {obj.key} does not match its index")
    if len({o.key for o in objects}) != len(objects):
        raise Refused("the archive's R2 index names a key twice")
    stray = sorted(n for n in archive.members if n.startswith("r2/objects/") and n not in {o.member for o in objects})
    if stray:
        raise Refused(f"the archive holds R2 objects its index does not name ({stray[0]})")
    return objects


def check_archive(archive: Archive, expected_tenant: str | None) -> RestorePlan:
    """Everything about the archive itself: whose it is, that its rows are all that tenant's,
    that its audit chain holds, that this code knows its schema. Refused otherwise."""
    tid = archive.manifest.tenant_id
    if expected_tenant is not None and parse_tenant_id(expected_tenant) != tid:
        raise Refused(
            f"the archive holds tenant {tid!r}, not {expected_tenant!r}: an archive restores only "
            "under its own tenant's id"
        )
    known = schema_version()
    if _schema_number(archive.manifest.schema_version) > _schema_number(known):
        raise Refused(
            f"the archive's schema {archive.manifest.schema_version} is newer than this code's ({known}): "
            "update the control plane first"
        )
    tables: dict[str, list[dict[str, Any]]] = {}
    for name in archive.members:
        if not name.startswith("supabase/"):
            continue
        rows = archive.json_member(name)
        table = name[len("supabase/") : -len(".json")]
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise Refused(f"archive member {name} is not a list of rows")
        if any(r.get("tenant_id") != tid for r in rows):
            raise Refused(f"archive member {name} holds rows of another tenant than {tid!r}: refused whole")
        tables[table] = rows
    if len(tables.get("tenants", [])) != 1:
        raise Refused("the archive holds no tenants row for its tenant")
    try:
        tenant = TenantRecord.model_validate(tables["tenants"][0])
        chain = [AuditChainRow.model_validate(r) for r in tables.get("audit_log", [])]
    except ValidationError as exc:
        raise Refused(f"the archive's rows are malformed: {exc.errors()[0].get('msg', '')[:200]}") from None
    report = verify_chain(tid, chain)
    if report.first_broken is not None:
        raise Refused(
            f"the archive's audit chain does not verify at seq {report.first_broken.seq}: {report.first_broken.message}"
        )
    meter = (
        archive.json_member("durable_objects/usage_meter.json")
        if "durable_objects/usage_meter.json" in archive.members
        else {}
    )
    r2 = archive.json_member("r2/index.json") if "r2/index.json" in archive.members else {"objects": []}
    if not isinstance(meter, dict) or not isinstance(r2, dict):
        raise Refused("the archive's meter or R2 section is malformed")
    objects = _check_objects(archive, tid, r2.get("objects", []))
    return RestorePlan(archive=archive, tenant=tenant, tables=tables, chain=chain, meter=meter, r2=r2, objects=objects)


async def _check_platform(cp: ControlPlane, plan: RestorePlan) -> None:
    """Nothing the restore writes may belong to another tenant: checked before any write."""
    tenant, tid = plan.tenant, plan.tenant.tenant_id
    existing = await cp.registry.tenant(tid)
    if existing is not None and (existing.type, existing.domain) != (tenant.type, tenant.domain):
        raise Refused(
            f"tenant id {tid!r} is taken here by a {existing.type.value} tenant at {existing.domain}: "
            "the archive's tenant is not that one"
        )
    if tenant.type is TenantType.PRIMARY:
        primary = await cp.registry.primary_tenant()
        if primary is not None and primary.tenant_id != tid:
            raise Refused(f"this platform's primary tenant is {primary.tenant_id!r}; there can be only one")
    names = sorted({tenant.domain} | {str(d["domain"]) for d in plan.tables.get("tenant_domains", [])})
    held = await cp.registry.held_names()
    for name in names:
        holder = await cp.registry.domain_holder(name)
        if holder is not None and holder != tid:
            raise Refused(f"domain {name} is held here by tenant {holder!r}: nothing was restored")
        clash = overlapping(name, tid, held, zone=PRIMARY_ZONE)
        if clash is not None:
            raise Refused(f"domain {name} overlaps {clash[1]}, held here by tenant {clash[0]!r}: nothing was restored")
    for table, (key, _) in TABLE_KEYS.items():
        if table == "tenants":
            continue
        for row in plan.tables.get(table, []):
            for other in await cp.registry.select_rows(table, {key: row[key]}, columns=f"{key},tenant_id"):
                if other.get("tenant_id") != tid:
                    raise Refused(f"{table} {key} {row[key]} belongs to another tenant here: nothing was restored")
    extra = sorted(set(plan.tables) - set(TABLE_KEYS) - SPECIAL_TABLES)
    if extra:
        keys = await cp.registry.primary_keys()
        for table in extra:
            pk = keys.get(table)
            if not pk:
                raise Refused(
                    f"the archive holds table {table}, which this platform does not have (or has no "
                    "primary key for): nothing was restored"
                )
            for row in plan.tables[table]:
                if any(c not in row for c in pk):
                    raise Refused(f"{table}: an archived row lacks its key {pk}")
                for other in await cp.registry.select_rows(table, {c: row[c] for c in pk}, columns="tenant_id"):
                    if other.get("tenant_id") != tid:
                        raise Refused(f"a {table} row with the key of an archived row belongs to another tenant here")
    objects = plan.objects
    if objects and cp.objects is None:
        raise Refused(
            f"the archive holds {len(objects)} R2 object(s) and this platform binds no bucket for tenant "
            "files: nothing was restored"
        )


def _usage_rows(plan: RestorePlan) -> list[dict[str, Any]]:
    rows = [{c: r.get(c) for c in USAGE_COLUMNS} for r in plan.tables.get("tenant_usage", [])]
    snapshot = plan.meter.get("snapshot") if plan.meter.get("status") == "ok" else None
    for item in (snapshot or {}).get("items", []):
        # The meter's live counters (unflushed ones too) become the history they would have been.
        if (
            isinstance(item, dict)
            and item.get("kind") == "ai_calls"
            and isinstance(item.get("used"), int)
            and isinstance(item.get("period"), str)
            and item["used"] > 0
        ):
            rows.append(
                {
                    "tenant_id": plan.tenant.tenant_id,
                    "usage_type": "ai_calls",
                    "period": item["period"],
                    "usage_count": item["used"],
                    "usage_limit": item.get("limit"),
                }
            )
    return rows


def _storage_used(snapshot: dict[str, Any] | None) -> int | None:
    for item in (snapshot or {}).get("items", []):
        if isinstance(item, dict) and item.get("kind") == "storage" and isinstance(item.get("used"), int):
            return int(item["used"])
    return None


async def _storage_level(cp: ControlPlane, plan: RestorePlan) -> tuple[dict[str, int], int | None]:
    """The levels to seed, and the bucket's total when it decides the storage level. An archive
    with an R2 section: the tenant's files as the bucket now holds them (the restored ones and any
    made since the backup; tombstones excluded), as POST /api/files/reconcile counts them. An
    archive from a platform without a bucket: the archived meter's level."""
    if plan.r2.get("status") != "ok" or cp.objects is None:
        return _meter_levels(plan), None
    if cp.dry_run:
        total = sum(o.bytes for o in plan.objects if o.key.startswith(files_prefix(plan.tenant.tenant_id)))
    else:
        files = files_prefix(plan.tenant.tenant_id)
        total = sum(
            o.size for o in await cp.objects.list(plan.tenant.tenant_id) if o.key.startswith(files) and not o.tombstone
        )
    return ({"storage": total} if total > 0 else {}), total


def _meter_levels(plan: RestorePlan) -> dict[str, int]:
    snapshot = plan.meter.get("snapshot") if plan.meter.get("status") == "ok" else None
    levels: dict[str, int] = {}
    for item in (snapshot or {}).get("items", []):
        if (
            isinstance(item, dict)
            and item.get("kind") == "storage"
            and isinstance(item.get("used"), int)
            and item["used"] > 0
        ):
            levels["storage"] = item["used"]
    return levels


async def _changed_rows(
    cp: ControlPlane, table: str, tenant_id: str, rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The archived rows the tenant does not hold as they are (a re-run writes nothing; the
    time of the last change is the database's, so it is not compared)."""
    key = TABLE_KEYS[table][0]
    current = {r.get(key): r for r in await cp.registry.rows_of(table, tenant_id)}
    return [
        r for r in rows if any(current.get(r[key], {}).get(c, object()) != v for c, v in r.items() if c != "updated_at")
    ]


async def restore_tenant(cp: ControlPlane, path: Path, expected_tenant: str | None = None) -> dict[str, Any]:
    plan = check_archive(read_archive(path), expected_tenant)
    tenant, tid = plan.tenant, plan.tenant.tenant_id
    await _check_platform(cp, plan)
    written: dict[str, int] = {}

    cp.reporter.step(f"supabase: restore {tid} ({tenant.type.value}, {tenant.status.value})")
    domains = sorted(
        plan.tables.get("tenant_domains", []), key=lambda d: (d.get("domain") != tenant.domain, str(d.get("domain")))
    )
    for table, rows in (
        ("tenants", plan.tables["tenants"]),
        ("tenant_domains", domains),
        ("profiles", plan.tables.get("profiles", [])),
    ):
        key, generated = TABLE_KEYS[table]
        rows = await _changed_rows(cp, table, tid, [{k: v for k, v in r.items() if k not in generated} for r in rows])
        await cp.registry.upsert_rows(table, rows, key)
        written[table] = len(rows)
    usage = _usage_rows(plan)
    await cp.registry.record_usage(usage)
    written["tenant_usage"] = len(usage)
    if plan.chain:
        result = await cp.registry.restore_audit(tid, [r.model_dump() for r in plan.chain])
        written["audit_log"] = int(result.get("inserted", 0))
    extra = sorted(set(plan.tables) - set(TABLE_KEYS) - SPECIAL_TABLES)
    if extra:
        keys = await cp.registry.primary_keys()
        for table in extra:
            await cp.registry.upsert_rows(table, plan.tables[table], ",".join(keys[table]))
            written[table] = len(plan.tables[table])

    # The tenant's files, before its hosts are routed (a re-run writes the same bytes again).
    if plan.objects:
        assert cp.objects is not None  # checked in _check_platform
        cp.reporter.step(f"{cp.objects.label}: restore {len(plan.objects)} object(s) under {object_prefix(tid)}")
    for obj in plan.objects:
        assert cp.objects is not None
        await cp.objects.put(tid, obj.key, plan.archive.members[obj.member], obj.content_type, obj.metadata)

    # The Worker and the routing, as the archive left the tenant (under --dry-run nothing was
    # written, so the plan goes on with the archived record).
    current = await cp.registry.tenant(tid) or tenant
    if current.status is not TenantStatus.INACTIVE:
        for domain in await cp.registry.domains(tid):
            await cp._ensure_hostname(domain, current)
        if not await cp.worker_ready(current):
            cp.ensure_namespace()
            await cp._deploy(current, {"SESSION_SECRET": secrets.token_urlsafe(48)})
            cp._changed()  # locally: wait until the Worker runs, before its host is routed
    await cp.converge(tid)

    levels, stored = await _storage_level(cp, plan)
    meter_note = "nothing to restore"
    if levels and current.status is not TenantStatus.ACTIVE:
        meter_note = f"levels not seeded (the tenant is {current.status.value}): {levels}"
        cp.reporter.warn(f"{tid}'s UsageMeter levels {levels} were not seeded: the tenant is {current.status.value}")
    elif levels:
        if cp.meter is None:
            raise ConfigError("the archive holds UsageMeter levels and no meter access is configured")
        done = await cp.meter.restore(current, levels)
        if not done.available:
            raise BackendError(f"the UsageMeter's levels were not restored ({done.reason}); re-run restore")
        meter_note = f"levels seeded: {levels}"
        level = _storage_used(done.snapshot)
        if stored is not None and level is not None and level != levels["storage"]:
            # The meter already held a level (a restore into the same platform): seeding keeps it.
            meter_note = f"storage level kept at {level} (the bucket holds {levels['storage']} bytes)"
            cp.reporter.warn(
                f"{tid}'s storage level is {level} bytes and its files total {levels['storage']}: "
                "a tenant admin's POST /api/files/reconcile sets the level to the bucket's total"
            )

    target = f"sha256:{plan.archive.sha256}"
    if not await cp.registry.has_audit(tid, "tenant.restored", target):
        await cp.registry.audit(
            tid,
            "tenant.restored",
            target,
            {
                "schema_version": plan.archive.manifest.schema_version,
                "created_at": plan.archive.manifest.created_at,
                "rows": written,
                "r2_objects": len(plan.objects),
            },
        )
    return {
        "tenant_id": tid,
        "status": current.status.value,
        "written": written,
        "usage_meter": meter_note,
        "r2_objects": len(plan.objects),
        "r2_bytes": sum(o.bytes for o in plan.objects),
        "archive_sha256": plan.archive.sha256,
        "note": cp.bound_note(),
    }

"""Operator commands on the running workerd platform and the real Supabase: the audit trail of
lifecycle commands, `audit verify`, and per-tenant `backup` / `restore`.

The round trip backs a tenant up (rows of every table, its hash-chained audit trail, its
UsageMeter read through its own Worker, its files in R2), erases it everywhere, restores it
and compares everything (files: bytes, content type, the storage level; a neighbour's file of
the same name untouched and absent from the archive). The attacks: tenant A's archive restored
under B's id, a relabelled archive, a tampered one, a domain of the archive now held by another
tenant, a forged audit chain, a forged R2 index naming a neighbour's key, the host's R2 control
asked for another tenant's keys, and the meter's control endpoint called without the operator's
token for that tenant. Every
tenant these tests create starts with `bk-` and is erased afterwards.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import tarfile
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

import httpx
import pytest

from controlplane.archive import MANIFEST, dump, r2_member
from controlplane.audit_chain import verify_chain
from localrt.devvars import read_dev_vars
from localrt.workerd import control_from_status
from shared.context import derive_tenant_key
from shared.control_token import issue
from shared.session import issue_session
from tenant_worker.sessions import SESSION_COOKIE
from tests.support import Platform
from tests.test_audit_http import chain
from tests.test_files_erasure import bucket_keys
from tests.test_tenant_cli import Cli
from tests.usage_support import UsageTenant, usage_tenant

PREFIX = "bk-"


@pytest.fixture
def cli(platform: Platform, supabase_stack: Any, pg_cluster: Any) -> Iterator[Cli]:
    # The four values every tenant Worker gets (the local run writes them to .local/secrets/supabase.dev.vars).
    runner = Cli(
        platform,
        {
            "SUPABASE_URL": supabase_stack.url,
            "SUPABASE_ANON_KEY": supabase_stack.anon_key,
            "SUPABASE_JWT_SECRET": supabase_stack.jwt_secret,
            "SUPABASE_SERVICE_ROLE_KEY": supabase_stack.service_role_key,
        },
    )
    try:
        yield runner
    finally:
        with pg_cluster.connect() as conn:
            left = [
                r[0]
                for r in conn.execute("select tenant_id from public.tenants where tenant_id like %s", (PREFIX + "%",))
            ]
        for tenant_id in left:
            runner("delete", tenant_id, "--yes", "--quiet")
        with pg_cluster.connect() as conn:
            conn.execute("delete from public.tenants where tenant_id like %s", (PREFIX + "%",))
        for name in platform.registry.names():
            if name.startswith("cmgsite-" + PREFIX):
                platform.registry.remove(name)
                platform.registry.secrets_path(name).unlink(missing_ok=True)
        platform.host.sync()


def ok(cli: Cli, *argv: str) -> Any:
    code, out, err = cli(*argv, "--json")
    assert code == 0, err
    return json.loads(out) if out.strip() else None


def add(cli: Cli, tenant_id: str, domain: str, tier: str = "growth") -> None:
    ok(
        cli,
        "add",
        tenant_id,
        "--name",
        f"Tenant {tenant_id}",
        "--type",
        "custom-domain",
        "--domain",
        domain,
        "--tier",
        tier,
    )


def session(platform: Platform, tenant_id: str, user_id: str, role: str) -> dict[str, str]:
    secret = platform.registry.secrets_of(f"cmgsite-{tenant_id}")["SESSION_SECRET"]
    token = issue_session(secret, tenant_id=tenant_id, user_id=user_id, role=role, now=time.time())  # type: ignore[arg-type]
    return {"cookie": f"{SESSION_COOKIE}={token}"}


def state(pg: Any, tenant_id: str) -> dict[str, Any]:
    """Everything Supabase holds for a tenant, minus what the database renumbers (identity ids)."""
    with pg.connect() as conn:

        def rows(query: str) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in conn.execute(query, (tenant_id,)).fetchall()]

        return {
            "tenants": rows("select t.* from public.tenants t where tenant_id = %s"),
            "profiles": rows("select p.* from public.profiles p where tenant_id = %s order by id"),
            "tenant_domains": rows(
                "select domain, domain_type, ssl_status, dns_configured, verification_status,"
                " verification_token, verified_at, created_at from public.tenant_domains"
                " where tenant_id = %s order by domain"
            ),
            "tenant_usage": rows(
                "select usage_type, period, usage_count, usage_limit from public.tenant_usage"
                " where tenant_id = %s order by usage_type, period"
            ),
        }


def archive_members(path: Path) -> dict[str, Any]:
    """The JSON members, parsed (the R2 objects' bytes: archive_objects)."""
    with tarfile.open(path) as tar:
        return {
            m.name: json.loads(tar.extractfile(m).read())
            for m in tar  # type: ignore[union-attr]
            if m.isreg() and m.name.endswith(".json")
        }


def archive_objects(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {
            m.name: tar.extractfile(m).read()
            for m in tar  # type: ignore[union-attr]
            if m.isreg() and m.name.startswith("r2/objects/")
        }


def reseal(files: dict[str, bytes]) -> None:
    """Recompute the manifest's checksums, as a forger would: what is refused then is the content."""
    manifest = json.loads(files[MANIFEST])
    manifest["members"] = {
        n: {"sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d)} for n, d in sorted(files.items()) if n != MANIFEST
    }
    files[MANIFEST] = dump(manifest)


def upload(
    platform: Platform, host: str, auth: dict[str, str], name: str, data: bytes, content_type: str
) -> httpx.Response:
    return httpx.post(
        f"{platform.url}/api/files?name={quote(name, safe='')}",
        content=data,
        timeout=60,
        headers={"Host": host, **auth, "Content-Type": content_type, "X-File-Upload": "1"},
    )


def download(platform: Platform, host: str, auth: dict[str, str], name: str) -> httpx.Response:
    return httpx.get(
        f"{platform.url}/api/files/download?name={quote(name, safe='')}", timeout=60, headers={"Host": host, **auth}
    )


def storage_used(platform: Platform, host: str, auth: dict[str, str]) -> int:
    r = httpx.get(platform.url + "/api/usage", headers={"Host": host, **auth}, timeout=60)
    assert r.status_code == 200, r.text
    return int(r.json()["usage"]["storage"]["used"])


def rewrite(src: Path, dst: Path, change: Any) -> Path:
    with tarfile.open(src) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}  # type: ignore[union-attr]
    change(files)
    with tarfile.open(dst, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dst


# ---- the audit trail of operator commands ---------------------------------------------------------
def test_every_lifecycle_command_leaves_a_chained_row(
    cli: Cli, platform: Platform, pg_cluster: Any, tmp_path: Path
) -> None:
    tid = "bk-life"
    add(cli, tid, "bk-life.example.net")
    for argv in (
        ["suspend", tid],
        ["resume", tid],
        ["set-tier", tid, "enterprise"],
        ["add-domain", tid, "www.bk-life.example.net"],
        ["remove-domain", tid, "www.bk-life.example.net"],
        ["deploy", tid],
    ):
        ok(cli, *argv)
    secrets_file = tmp_path / "bk-life.secrets.env"
    secrets_file.write_text("API_TOKEN=do-not-log-me\n")
    ok(cli, "secrets", tid, "--file", str(secrets_file))
    ok(cli, "export", tid, "--output", str(tmp_path / "e.json"))
    ok(cli, "remove", tid)
    rows = chain(pg_cluster, tid)
    assert [r.action for r in rows] == [
        "tenant.added",
        "tenant.suspended",
        "tenant.resumed",
        "tenant.tier_changed",
        "domain.added",
        "domain.removed",
        "tenant.deployed",
        "tenant.secrets_set",
        "tenant.exported",
        "tenant.removed",
    ]
    assert {r.actor for r in rows} == {"system:tenant-cli"} and {r.outcome for r in rows} == {"success"}
    assert len({r.request_id for r in rows}) == len(rows)  # one request id per command
    assert all((r.request_id or "").startswith("cli-") for r in rows)
    secrets_row = next(r for r in rows if r.action == "tenant.secrets_set")
    assert "API_TOKEN" in secrets_row.details_text and "do-not-log-me" not in secrets_row.details_text
    assert verify_chain(tid, rows).ok
    exported = json.loads((tmp_path / "e.json").read_text())
    assert [a["action"] for a in exported["supabase"]["audit_log"]][:3] == [
        "tenant.added",
        "tenant.suspended",
        "tenant.resumed",
    ]
    assert exported["audit_chain"]["first_broken"] is None and exported["audit_chain"]["head_seq"] == 8

    before = chain(pg_cluster, "cozyartz")
    ok(cli, "delete", tid, "--yes")
    assert chain(pg_cluster, tid) == []  # the chain went whole, with its tenant
    primary = chain(pg_cluster, "cozyartz")
    assert primary[: len(before)] == before and primary[-1].action == "tenant.erased"
    assert verify_chain("cozyartz", primary).ok


def test_audit_verify_names_the_first_broken_link(cli: Cli, pg_cluster: Any) -> None:
    tid = "bk-forged"
    add(cli, tid, "bk-forged.example.net")
    ok(cli, "set-tier", tid, "enterprise")
    ok(cli, "suspend", tid)
    report = ok(cli, "audit", "verify")
    assert report["intact"] and report["tenants_checked"] >= 4
    with pg_cluster.connect() as conn, conn.transaction():
        conn.execute("set local session_replication_role = replica")  # a superuser, behind the triggers' back
        conn.execute(
            'update public.audit_log set details = \'{"from": "growth", "to": "starter"}\''
            " where tenant_id = %s and action = 'tenant.tier_changed'",
            (tid,),
        )
    code, out, err = cli("audit", "verify")
    assert code == 3, err
    assert f"{tid}: BROKEN at seq 2 (row_hash_mismatch)" in out
    assert "partner1: intact" in out and "cozyartz: intact" in out
    code, out, _ = cli("audit", "verify", tid, "--json")
    assert code == 3 and json.loads(out)["broken"][0]["seq"] == 2


# ---- backup and restore ---------------------------------------------------------------------
FILES = {  # name -> (bytes, Content-Type)
    "docs/q1.pdf": (b"%PDF-1.7 " + secrets.token_bytes(70_000), "application/pdf"),
    "café/menü.txt": ("Crème brûlée\n".encode(), "text/plain; charset=utf-8"),
    "empty.bin": (b"", "application/octet-stream"),
}


def test_backup_erase_restore_round_trip(cli: Cli, platform: Platform, pg_cluster: Any, tmp_path: Path) -> None:
    with usage_tenant(platform, pg_cluster) as neighbour:
        round_trip(cli, platform, pg_cluster, tmp_path, neighbour)


def round_trip(cli: Cli, platform: Platform, pg_cluster: Any, tmp_path: Path, neighbour: UsageTenant) -> None:
    tid, host = "bk-round", "shop.bk-round.example"
    add(cli, tid, host)
    ok(cli, "add-domain", tid, "www.bk-round.example")
    admin, client = "00000000-0000-4000-8000-0000000000b1", "00000000-0000-4000-8000-0000000000b2"
    with pg_cluster.connect() as conn:
        conn.execute(
            "insert into public.profiles (id, tenant_id, tenant_role, email, display_name) values"
            " (%s, %s, 'admin', 'ann@bk-round.example', 'Ann'), (%s, %s, 'client', 'cy@bk-round.example', 'Cy')",
            (admin, tid, client, tid),
        )
        conn.execute(
            "insert into public.tenant_usage (tenant_id, usage_type, period, usage_count, usage_limit)"
            " values (%s, 'ai_calls', '2026-01', 42, 250)",
            (tid,),
        )
    auth = session(platform, tid, admin, "admin")
    claim = httpx.post(
        platform.url + "/api/domains",
        json={"domain": "claim.bk-round.example"},
        headers={"Host": host, **auth},
        timeout=60,
    )
    assert claim.status_code == 201, claim.text
    gen = httpx.post(
        platform.url + "/api/ai/generate", json={"prompt": "hi"}, headers={"Host": host, **auth}, timeout=60
    )
    assert gen.status_code == 200, gen.text
    for name, (data, content_type) in FILES.items():
        assert upload(platform, host, auth, name, data, content_type).status_code == 201
    total = sum(len(d) for d, _ in FILES.values())
    assert storage_used(platform, host, auth) == total
    theirs = b"the neighbour's own q1 " + secrets.token_bytes(500)  # the same name, at another tenant
    mixup = upload(platform, neighbour.host, neighbour.session(), "docs/q1.pdf", theirs, "application/pdf")
    assert mixup.status_code == 201, mixup.text
    original = state(pg_cluster, tid)
    archive = tmp_path / "bk-round.tar.gz"
    result = ok(cli, "backup", tid, "--output", str(archive))
    assert result["usage_meter"] == "ok" and result["audit_chain_ok"] and result["r2"] == "ok"
    assert archive.stat().st_mode & 0o777 == 0o600
    members = archive_members(archive)
    archived_chain = members["supabase/audit_log.json"]
    assert [r["action"] for r in archived_chain[-4:]] == ["domain.added"] + ["file.uploaded"] * 3
    assert members["manifest.json"]["tenant_id"] == tid
    # The files: under the tenant's prefix only, each with its bytes, checksum and content type.
    index = members["r2/index.json"]
    assert index["status"] == "ok" and index["bytes"] == total
    assert {o["key"]: o["content_type"] for o in index["objects"]} == {
        f"tenants/{tid}/files/{name}": content_type for name, (_, content_type) in FILES.items()
    }
    objects = archive_objects(archive)
    assert sorted(objects) == sorted(o["member"] for o in index["objects"])
    for entry in index["objects"]:
        data = FILES[entry["key"].removeprefix(f"tenants/{tid}/files/")][0]
        assert objects[entry["member"]] == data and entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert members["manifest.json"]["sections"]["r2"] == {"status": "ok", "objects": 3}
    with tarfile.open(archive) as tar:  # the neighbour's bytes are nowhere in the archive
        assert not any(theirs in tar.extractfile(m).read() for m in tar if m.isreg())  # type: ignore[union-attr]
    assert "SESSION_SECRET" not in archive.read_bytes().decode("latin-1")
    ai_used = next(
        i["used"] for i in members["durable_objects/usage_meter.json"]["snapshot"]["items"] if i["kind"] == "ai_calls"
    )
    assert ai_used == 1
    for name, rows in members.items():  # nothing of another tenant
        if name.startswith("supabase/"):
            assert all(r["tenant_id"] == tid for r in rows), name
    others = {t: state(pg_cluster, t) for t in ("partner1", "partner-seo")}

    ok(cli, "delete", tid, "--yes")
    assert state(pg_cluster, tid)["tenants"] == [] and chain(pg_cluster, tid) == []
    assert platform.get(host).status_code == 404
    assert not [k for k in bucket_keys(platform) if k.startswith(f"tenants/{tid}/")]  # the files went too

    restored = ok(cli, "restore", str(archive))
    assert restored["tenant_id"] == tid and restored["written"]["audit_log"] == len(archived_chain)
    assert restored["r2_objects"] == 3 and restored["r2_bytes"] == total
    assert restored["usage_meter"] == f"levels seeded: {{'storage': {total}}}"
    assert platform.get(host).json()["tenant_id"] == tid  # routed and served by a fresh Worker
    after = state(pg_cluster, tid)
    for table in ("tenants", "profiles", "tenant_domains"):
        assert after[table] == original[table], table
    usage = {(k, p): n for k, p, n, _ in after["tenant_usage"]}
    assert usage[("ai_calls", "2026-01")] == 42
    assert max(n for (k, p), n in usage.items() if k == "ai_calls" and p != "2026-01") == 1  # the meter's count
    rows = chain(pg_cluster, tid)
    assert [r.row_hash for r in rows[: len(archived_chain)]] == [r["row_hash"] for r in archived_chain]
    assert rows[len(archived_chain)].action == "tenant.restored" and len(rows) == len(archived_chain) + 1
    assert ok(cli, "audit", "verify", tid)["intact"]
    # The restored tenant counts on from its history: the next AI call is the second of the month.
    auth = session(platform, tid, admin, "admin")  # a new Worker, a new session key
    usage_now = httpx.get(platform.url + "/api/usage", headers={"Host": host, **auth}, timeout=60).json()["usage"]
    assert usage_now["ai_calls"]["used"] == 1
    assert usage_now["storage"]["used"] == total  # the storage level is the restored files' total
    assert {t: state(pg_cluster, t) for t in others} == others  # nobody else was touched

    def files_as_served() -> dict[str, tuple[bytes, str]]:
        listed = httpx.get(platform.url + "/api/files", headers={"Host": host, **auth}, timeout=60).json()["files"]
        out = {}
        for f in listed:
            d = download(platform, host, auth, f["name"])
            assert d.status_code == 200, d.text
            out[f["name"]] = (d.content, d.headers["content-type"])
        return out

    assert files_as_served() == FILES  # same names, bytes and content types
    assert download(platform, neighbour.host, neighbour.session(), "docs/q1.pdf").content == theirs
    assert int(neighbour.usage()["storage"]["used"]) == len(theirs)

    again = ok(cli, "restore", str(archive), "--tenant", tid)  # re-run: nothing changes
    assert again["written"]["audit_log"] == 0 and again["r2_objects"] == 3
    assert state(pg_cluster, tid) == after and len(chain(pg_cluster, tid)) == len(rows)
    assert files_as_served() == FILES and storage_used(platform, host, auth) == total
    assert download(platform, neighbour.host, neighbour.session(), "docs/q1.pdf").content == theirs


def test_an_archive_with_an_r2_key_outside_the_tenant_is_refused(
    cli: Cli, platform: Platform, pg_cluster: Any, tmp_path: Path
) -> None:
    """A forged archive (checksums recomputed) that would plant or overwrite a neighbour's file."""
    with usage_tenant(platform, pg_cluster) as neighbour:
        theirs = b"the neighbour's file"
        assert upload(platform, neighbour.host, neighbour.session(), "a.txt", theirs, "text/plain").status_code == 201
        add(cli, "bk-r2", "bk-r2.example.net")
        admin = "00000000-0000-4000-8000-0000000000c1"
        with pg_cluster.connect() as conn:
            conn.execute(
                "insert into public.profiles (id, tenant_id, tenant_role, email) values"
                " (%s, 'bk-r2', 'admin', 'a@bk-r2.example.net')",
                (admin,),
            )
        auth = session(platform, "bk-r2", admin, "admin")
        assert upload(platform, "bk-r2.example.net", auth, "a.txt", b"mine", "text/plain").status_code == 201
        archive = tmp_path / "r2.tar.gz"
        ok(cli, "backup", "bk-r2", "--output", str(archive))
        before = state(pg_cluster, "bk-r2")

        for key in (
            f"tenants/{neighbour.tenant_id}/files/a.txt",
            f"tenants/{neighbour.tenant_id}/files/planted",
            "tenants/bk-r2/../" + neighbour.tenant_id + "/files/a.txt",
        ):

            def plant(files: dict[str, bytes], key: str = key) -> None:
                index = json.loads(files["r2/index.json"])
                data = b"overwritten by bk-r2"
                index["objects"].append(
                    {
                        "key": key,
                        "member": r2_member(key),
                        "bytes": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(),
                        "content_type": "text/plain",
                        "metadata": {},
                    }
                )
                files["r2/index.json"] = dump(index)
                files[r2_member(key)] = data
                reseal(files)

            code, _, err = cli("restore", str(rewrite(archive, tmp_path / "forged.tar.gz", plant)))
            assert code == 2 and "outside the tenant's prefix" in err, err
        assert download(platform, neighbour.host, neighbour.session(), "a.txt").content == theirs
        assert f"tenants/{neighbour.tenant_id}/files/planted" not in bucket_keys(platform)
        assert state(pg_cluster, "bk-r2") == before  # refused before any write


def test_the_hosts_r2_control_is_token_checked_and_confined_to_one_tenant(platform: Platform, pg_cluster: Any) -> None:
    with usage_tenant(platform, pg_cluster) as a, usage_tenant(platform, pg_cluster) as b:
        assert upload(platform, b.host, b.session(), "b.txt", b"b's", "text/plain").status_code == 201
        found = control_from_status(platform.paths.root)
        assert found is not None
        directory, token = found
        base, auth = f"http://{directory}", {"x-cmgsite-host-token": token}
        b_key = f"tenants/{b.tenant_id}/files/b.txt"

        def put_header(tenant: str, key: str) -> dict[str, str]:
            meta = {"tenant": tenant, "key": key, "contentType": "text/plain", "customMetadata": {}}
            return {"x-cmgsite-r2-object": quote(json.dumps(meta), safe="")}

        assert httpx.post(base + "/r2/get", json={"tenant": b.tenant_id, "key": b_key}).status_code == 403  # no token
        assert (
            httpx.post(
                base + "/r2/get",
                json={"tenant": b.tenant_id, "key": b_key},
                headers={"x-cmgsite-host-token": "0" * len(token)},
            ).status_code
            == 403
        )
        refused = [
            httpx.post(base + "/r2/get", json={"tenant": a.tenant_id, "key": b_key}, headers=auth),
            httpx.post(
                base + "/r2/get",
                headers=auth,
                json={"tenant": a.tenant_id, "key": f"tenants/{a.tenant_id}/../{b.tenant_id}/files/b.txt"},
            ),
            httpx.post(base + "/r2/list", json={"tenant": a.tenant_id, "prefix": "tenants/"}, headers=auth),
            httpx.post(base + "/r2/list", json={"tenant": "../x", "prefix": "tenants/../x/"}, headers=auth),
            httpx.post(base + "/r2/put", content=b"overwritten", headers={**auth, **put_header(a.tenant_id, b_key)}),
        ]
        assert [r.status_code for r in refused] == [400] * len(refused), [r.text for r in refused]
        listed = httpx.post(
            base + "/r2/list", json={"tenant": b.tenant_id, "prefix": f"tenants/{b.tenant_id}/"}, headers=auth
        ).json()
        assert [o["key"] for o in listed["objects"]] == [b_key] and listed["objects"][0]["contentType"] == "text/plain"
        assert download(platform, b.host, b.session(), "b.txt").content == b"b's"


def test_tenant_a_archive_is_refused_under_tenant_b_and_when_relabelled(
    cli: Cli, pg_cluster: Any, tmp_path: Path
) -> None:
    add(cli, "bk-a", "bk-a.example.net")
    add(cli, "bk-b", "bk-b.example.net")
    archive = tmp_path / "a.tar.gz"
    ok(cli, "backup", "bk-a", "--output", str(archive))
    b_before, b_chain = state(pg_cluster, "bk-b"), chain(pg_cluster, "bk-b")
    code, _, err = cli("restore", str(archive), "--tenant", "bk-b")
    assert code == 2 and "holds tenant 'bk-a', not 'bk-b'" in err

    def relabel(files: dict[str, bytes]) -> None:
        manifest = json.loads(files[MANIFEST])
        manifest["tenant_id"] = "bk-b"
        files[MANIFEST] = dump(manifest)

    relabelled = rewrite(archive, tmp_path / "relabelled.tar.gz", relabel)
    code, _, err = cli("restore", str(relabelled), "--tenant", "bk-b")
    assert code == 2 and "rows of another tenant" in err
    assert state(pg_cluster, "bk-b") == b_before and chain(pg_cluster, "bk-b") == b_chain


def test_a_tampered_archive_is_refused_and_nothing_is_written(cli: Cli, pg_cluster: Any, tmp_path: Path) -> None:
    add(cli, "bk-t", "bk-t.example.net")
    archive = tmp_path / "t.tar.gz"
    ok(cli, "backup", "bk-t", "--output", str(archive))
    ok(cli, "delete", "bk-t", "--yes")

    def promote(files: dict[str, bytes]) -> None:
        rows = json.loads(files["supabase/tenants.json"])
        rows[0]["subscription_tier"] = "enterprise"
        files["supabase/tenants.json"] = dump(rows)

    code, _, err = cli("restore", str(rewrite(archive, tmp_path / "x.tar.gz", promote)))
    assert code == 2 and "checksum mismatch on supabase/tenants.json" in err
    assert state(pg_cluster, "bk-t")["tenants"] == []
    code, out, err = cli("restore", str(archive), "--dry-run")  # the plan, printed; nothing written
    assert code == 0, err
    assert "[dry-run] supabase: would POST" in out and "rpc/audit_restore" in out
    assert state(pg_cluster, "bk-t")["tenants"] == [] and "cmgsite-bk-t" not in cli.platform.registry.names()
    assert ok(cli, "restore", str(archive))["tenant_id"] == "bk-t"  # the genuine one restores


def test_restore_refuses_a_domain_another_tenant_now_holds(cli: Cli, pg_cluster: Any, tmp_path: Path) -> None:
    add(cli, "bk-old", "bk-shared.example.net")
    archive = tmp_path / "old.tar.gz"
    ok(cli, "backup", "bk-old", "--output", str(archive))
    ok(cli, "delete", "bk-old", "--yes")
    add(cli, "bk-new", "www.bk-shared.example.net")  # under the archived name: an overlap
    new_before = state(pg_cluster, "bk-new")
    code, _, err = cli("restore", str(archive))
    assert code == 2 and "held here by tenant 'bk-new'" in err
    assert state(pg_cluster, "bk-old")["tenants"] == [] and state(pg_cluster, "bk-new") == new_before


# ---- the meter's control endpoint --------------------------------------------------------------
def test_the_meter_control_endpoint_answers_only_the_operators_token_for_that_tenant(
    platform: Platform, pg_cluster: Any
) -> None:
    master = read_dev_vars(platform.paths.dispatcher_secrets)["CONTEXT_SIGNING_SECRET"]
    with usage_tenant(platform, pg_cluster) as a, usage_tenant(platform, pg_cluster) as b:
        key_a, key_b = derive_tenant_key(master, a.tenant_id), derive_tenant_key(master, b.tenant_id)
        url = platform.url + "/api/control/usage-meter"

        def call(t: Any, token: str | None, method: str = "GET", body: Any = None) -> httpx.Response:
            headers = {"Host": t.host, **({"authorization": f"Bearer {token}"} if token else {})}
            return httpx.request(method, url, headers=headers, json=body, timeout=60)

        now = time.time()
        refused = [
            call(a, None),
            call(a, "v1.meter.read.9999999999." + "0" * 64),
            call(a, issue(key_b, b.tenant_id, "meter.read", now=now)),  # B's token at A's host
            call(a, issue(key_b, a.tenant_id, "meter.read", now=now)),  # A's id, B's key
            call(a, issue(key_a, a.tenant_id, "meter.restore", now=now)),  # another operation
            call(a, issue(key_a, a.tenant_id, "meter.read", now=now - 300)),  # expired
            call(a, issue(key_a, a.tenant_id, "meter.read", now=now), "POST", {"levels": {"storage": 5}}),
        ]
        for r in refused:
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
        read = call(a, issue(key_a, a.tenant_id, "meter.read", now=now))
        assert read.status_code == 200 and read.json()["meter"]["tenant_id"] == a.tenant_id
        restore = issue(key_a, a.tenant_id, "meter.restore", now=now)
        for bad in ({"levels": {"storage": True}}, {"levels": {"ai_calls": 5}}, {"levels": {"storage": -1}}, []):
            r = call(a, restore, "POST", bad)
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_body", r.text
        seeded = call(a, restore, "POST", {"levels": {"storage": 1000}})
        assert seeded.status_code == 200, seeded.text
        again = call(a, restore, "POST", {"levels": {"storage": 5}})  # a replay or a re-run changes nothing
        storage = next(i for i in again.json()["meter"]["items"] if i["kind"] == "storage")
        assert storage["used"] == 1000
        other = call(b, issue(key_b, b.tenant_id, "meter.read", now=now)).json()["meter"]
        assert next(i for i in other["items"] if i["kind"] == "storage")["used"] == 0


def test_postgrest_marks_primary_keys_for_tables_other_features_add(cli: Cli) -> None:
    """restore writes a table it does not know by its primary key, read from PostgREST's schema."""
    import asyncio

    from controlplane.output import Reporter
    from controlplane.wiring import Settings, build

    settings = Settings(state_dir=cli.platform.paths.root, wrangler_state=cli.platform.wrangler_state, env=cli.env)

    async def keys() -> dict[str, list[str]]:
        cp = build(settings, Reporter(quiet=True))
        try:
            return await cp.registry.primary_keys()
        finally:
            await cp.close()

    found = asyncio.run(keys())
    assert found["tenants"] == ["tenant_id"] and found["profiles"] == ["id"]

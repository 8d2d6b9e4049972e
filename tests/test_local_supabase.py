"""The local PostgreSQL manager and the stack CLI, as the run command and a developer use them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import psycopg
import pytest

from localrt.postgres import (
    COMPAT_FILE,
    LEGACY_NAMES,
    MIGRATION_NAME,
    MIGRATIONS_DIR,
    SEED_FILE,
    SUPABASE_DIR,
    PgCluster,
    PostgresSetupError,
    find_pg_bin,
    migration_files,
)
from localrt.supabase_stack import find_free_port

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def base_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="cmgsite-pgt-"))
    os.chmod(base, 0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_cluster_is_reused_and_migrations_are_tracked(base_dir: Path) -> None:
    cluster = PgCluster(data_dir=base_dir / "data", port=find_free_port(), fast=True)
    try:
        cluster.start()
        assert cluster.apply_migrations() == [COMPAT_FILE.name, *(p.name for p in migration_files())]
        cluster.seed()
        with cluster.connect() as conn:
            assert conn.execute("show listen_addresses").fetchone() == ("127.0.0.1",)
            conn.execute(
                "insert into public.audit_log (tenant_id, actor, action) values ('partner1', 't', 'kept.across')"
            )
        cluster.stop()
        assert not cluster.is_running()
        cluster.stop()  # stopping a stopped cluster is fine

        again = PgCluster(data_dir=base_dir / "data", port=find_free_port(), fast=True)
        again.start()  # reuses the data dir: no initdb, same passwords, same data
        assert again.apply_migrations() == []
        again.seed()
        with again.connect() as conn:
            assert conn.execute("select count(*) from public.audit_log where action = 'kept.across'").fetchone() == (1,)
            assert conn.execute("select count(*) from public.tenants").fetchone() == (3,)
        # The authenticator can log in (PostgREST's door) but is no superuser.
        with psycopg.connect(again.authenticator_dsn) as conn:
            assert conn.execute("select rolsuper from pg_roles where rolname = current_user").fetchone() == (False,)

        edited = base_dir / "migrations"
        shutil.copytree(MIGRATIONS_DIR, edited)
        (edited / "20261126154046_tenancy_schema.sql").write_text("-- rewritten history\n")
        with pytest.raises(PostgresSetupError, match="changed after it was applied"):
            again.apply_migrations(edited)
    finally:
        PgCluster(data_dir=base_dir / "data", port=0).stop()


def test_missing_binaries_point_to_bootstrap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PG_BIN", str(tmp_path / "nowhere"))
    with pytest.raises(PostgresSetupError, match="scripts/bootstrap.sh"):
        find_pg_bin()


def test_refuses_a_non_empty_directory_that_is_no_cluster(base_dir: Path) -> None:
    (base_dir / "data").mkdir()
    (base_dir / "data" / "notes.txt").write_text("mine")
    with pytest.raises(PostgresSetupError, match="not empty"):
        PgCluster(data_dir=base_dir / "data", port=find_free_port()).start()


def test_stack_cli_serves_and_stops_everything_on_sigterm(base_dir: Path) -> None:
    pg_port, port = find_free_port(), find_free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "localrt.supabase_stack",
            "--data-dir",
            str(base_dir / "data"),
            "--pg-port",
            str(pg_port),
            "--port",
            str(port),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["url"] == f"http://127.0.0.1:{port}"
        anon = httpx.get(f"{info['url']}/rest/v1/tenants", headers={"apikey": info["anon_key"]})
        assert anon.status_code == 401  # anon sees nothing
        svc = httpx.get(
            f"{info['url']}/rest/v1/tenants?select=tenant_id&order=tenant_id",
            headers={"apikey": info["service_role_key"]},
        )
        assert svc.json() == [{"tenant_id": "cozyartz"}, {"tenant_id": "partner-seo"}, {"tenant_id": "partner1"}]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert not PgCluster(data_dir=base_dir / "data", port=pg_port).is_running()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/rest/v1/", timeout=2)


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_stack_cli_goes_down_whole_when_postgrest_dies(base_dir: Path) -> None:
    pg_port = find_free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "localrt.supabase_stack",
            "--data-dir",
            str(base_dir / "data"),
            "--pg-port",
            str(pg_port),
            "--port",
            str(find_free_port()),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        json.loads(proc.stdout.readline())
        postgrest = [c for c in _children(proc.pid) if "postgrest" in Path(f"/proc/{c}/cmdline").read_text()]
        assert len(postgrest) == 1
        os.kill(postgrest[0], signal.SIGKILL)
        assert proc.wait(timeout=30) == 1
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    assert not PgCluster(data_dir=base_dir / "data", port=pg_port).is_running()


# ---- the Supabase CLI layout: `supabase db push` and the local stack apply the same files ------

# The order of the files before they moved to supabase/migrations (migrations/supabase/NNNN_*.sql).
OLD_ORDER = [
    "0001_tenancy_schema.sql",
    "0002_platform_domains.sql",
    "0003_profile_email.sql",
    "0004_usage_history.sql",
    "0005_api_request_guard.sql",
    "0006_domain_rules.sql",
    "0007_integration_credentials.sql",
    "0008_audit_chain.sql",
    "0009_operations.sql",
]


def test_the_repo_has_the_supabase_cli_layout() -> None:
    names = [p.name for p in migration_files()]
    assert names, "no migrations under supabase/migrations"
    assert [n for n in names if not MIGRATION_NAME.match(n)] == []
    assert sorted(p.name for p in MIGRATIONS_DIR.iterdir()) == names  # nothing else lives there
    # The moved files keep their order, and anything newer comes after them.
    assert names[: len(OLD_ORDER)] == [LEGACY_NAMES[old] for old in OLD_ORDER]
    assert set(LEGACY_NAMES) == {"0000_supabase_compat.sql", *OLD_ORDER}
    # The plain-PostgreSQL compatibility SQL is applied locally but never pushed.
    assert COMPAT_FILE.is_file() and SUPABASE_DIR not in COMPAT_FILE.parents
    assert not any("compat" in p.name for p in SUPABASE_DIR.rglob("*.sql"))
    assert SEED_FILE == SUPABASE_DIR / "seed.sql" and SEED_FILE.is_file()
    assert not (REPO / "migrations" / "supabase").exists()
    assert (REPO / "migrations" / "d1").is_dir()  # D1 stays where wrangler.*.toml point

    config = tomllib.loads((SUPABASE_DIR / "config.toml").read_text())
    assert isinstance(config["project_id"], str) and config["project_id"]
    assert config["api"]["schemas"] == ["public"]
    assert isinstance(config["api"]["port"], int) and isinstance(config["db"]["port"], int)
    assert config["db"]["major_version"] >= 15
    assert config["db"]["migrations"]["enabled"] is True
    assert config["db"]["seed"]["sql_paths"] == ["./seed.sql"]
    # The tenant JWTs are verified with the project's secret, never one written in the repo.
    assert config["auth"]["jwt_secret"] == "env(SUPABASE_JWT_SECRET)"


def _fresh_database(cluster: PgCluster, label: str) -> PgCluster:
    db = PgCluster(data_dir=cluster.data_dir, port=cluster.port, dbname=f"{label}_{uuid.uuid4().hex[:8]}")
    db.start()  # the running cluster: creates the database only
    return db


def _drop(db: PgCluster) -> None:
    with psycopg.connect(db.dsn.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'drop database if exists "{db.dbname}" with (force)')


def _ledger(db: PgCluster) -> dict[str, str]:
    with db.connect() as conn:
        return dict(conn.execute("select name, sha256 from localrt_meta.schema_migrations").fetchall())


def test_a_state_recorded_under_the_old_names_is_renamed_not_reapplied(pg_cluster: PgCluster, tmp_path: Path) -> None:
    # A database migrated before the move: the same files under their old names, compat included.
    old_dir = tmp_path / "migrations-supabase"
    old_dir.mkdir()
    new_to_old = {new: old for old, new in LEGACY_NAMES.items()}
    for path in [COMPAT_FILE, *migration_files()]:
        if path.name in new_to_old:
            shutil.copy(path, old_dir / new_to_old[path.name])
    db = _fresh_database(pg_cluster, "legacy")
    try:
        assert db.apply_migrations(old_dir, compat=None) == sorted(LEGACY_NAMES)
        before = _ledger(db)
        with db.connect() as conn:  # data that a re-run from scratch would not find in place
            conn.execute(
                "insert into public.tenants (tenant_id, name, domain, type, script_name) values"
                " ('kept', 'Kept', 'kept.example', 'custom-domain', 'cmgsite-custom-tenant')"
            )

        applied = db.apply_migrations()
        newer = [p.name for p in migration_files() if p.name not in new_to_old]
        assert applied == newer  # only what came after the move, nothing twice
        after = _ledger(db)
        assert not set(after) & set(LEGACY_NAMES)
        assert {LEGACY_NAMES[old]: sha for old, sha in before.items()} == {
            name: sha for name, sha in after.items() if name not in newer
        }
        assert db.apply_migrations() == []
        with db.connect() as conn:
            assert conn.execute("select count(*) from public.tenants where tenant_id = 'kept'").fetchone() == (1,)
    finally:
        _drop(db)


def _supabase_cli() -> Path | None:
    override = os.environ.get("SUPABASE_CLI")
    cli = Path(override) if override else REPO / "node_modules" / ".bin" / "supabase"
    return cli if cli.is_file() else None


def _schema(db: PgCluster) -> str:
    out = subprocess.run(
        [
            str(db.bin / "pg_dump"),
            "--schema-only",
            "--no-owner",
            "--exclude-schema=localrt_meta",
            "--exclude-schema=supabase_migrations",
            db.dsn,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return "\n".join(line for line in out.stdout.splitlines() if not line.startswith(("\\restrict", "\\unrestrict")))


def test_supabase_db_push_builds_the_schema_the_local_stack_builds(pg_cluster: PgCluster) -> None:
    cli = _supabase_cli()
    if cli is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node_modules/.bin/supabase missing: scripts/bootstrap.sh installs it (package.json)")
        pytest.skip("Supabase CLI not installed (npm `supabase`, package.json; or set SUPABASE_CLI)")
    local, pushed = _fresh_database(pg_cluster, "local"), _fresh_database(pg_cluster, "pushed")
    try:
        local.apply_migrations()
        local.seed()
        # A hosted project already has what the compat SQL gives a plain PostgreSQL.
        with pushed.connect() as conn:
            conn.execute(COMPAT_FILE.read_text().encode())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "PG"))}
        push = [str(cli), "db", "push", f"--remote={pushed.dsn}", "--include-seed"]
        dry = subprocess.run([*push, "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert dry.returncode == 0, dry.stderr + dry.stdout
        listed = [line.split()[-1] for line in (dry.stdout + dry.stderr).splitlines() if line.strip().startswith("•")]
        assert listed == [*(p.name for p in migration_files()), "supabase/seed.sql"]

        done = subprocess.run([*push, "--yes"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr + done.stdout
        assert _schema(pushed) == _schema(local)
        with pushed.connect() as conn:
            versions = [
                v for (v,) in conn.execute("select version from supabase_migrations.schema_migrations order by version")
            ]
            assert conn.execute("select count(*) from public.tenants").fetchone() == (3,)  # seed.sql
        assert versions == [p.name.split("_", 1)[0] for p in migration_files()]
    finally:
        _drop(local)
        _drop(pushed)

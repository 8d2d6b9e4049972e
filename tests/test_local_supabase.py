"""The local PostgreSQL manager and the stack CLI, as the run command and a developer use them."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import httpx
import psycopg
import pytest

from localrt.postgres import MIGRATIONS_DIR, PgCluster, PostgresSetupError, find_pg_bin, migration_files
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
        assert [n[:4] for n in cluster.apply_migrations()] == [p.name[:4] for p in migration_files()]
        cluster.seed()
        with cluster.connect() as conn:
            assert conn.execute("show listen_addresses").fetchone() == ("127.0.0.1",)
            conn.execute("insert into public.audit_log (tenant_id, actor, action) values ('partner1', 't', 'kept.across')")
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
        (edited / "0001_tenancy_schema.sql").write_text("-- rewritten history\n")
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
        [sys.executable, "-m", "localrt.supabase_stack", "--data-dir", str(base_dir / "data"),
         "--pg-port", str(pg_port), "--port", str(port)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["url"] == f"http://127.0.0.1:{port}"
        anon = httpx.get(f"{info['url']}/rest/v1/tenants", headers={"apikey": info["anon_key"]})
        assert anon.status_code == 401  # anon sees nothing
        svc = httpx.get(f"{info['url']}/rest/v1/tenants?select=tenant_id&order=tenant_id",
                        headers={"apikey": info["service_role_key"]})
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
        [sys.executable, "-m", "localrt.supabase_stack", "--data-dir", str(base_dir / "data"),
         "--pg-port", str(pg_port), "--port", str(find_free_port())],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
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

"""The CLI's --remote path: Cloudflare's API through the official SDK (a local fake speaking its wire
format, D1's query API included, run on a SQLite copy of the migrated D1), wrangler for deploys
and the namespace (a stand-in `npx` on PATH, run through $CMGSITE_WRANGLER, that records every
command) and a real Supabase (the local PostgREST stack)."""

from __future__ import annotations

import io
import json
import os
import select
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from controlplane.edges import R2_BUCKET
from controlplane.wrangler import WRANGLER
from localrt.d1 import copy_database
from scripts.tenants import main
from tests.fake_cloudflare import D1_DATABASE_ID, FakeCloudflare
from tests.fake_doh import FakeDoh

ROOT = Path(__file__).resolve().parent.parent
W = ["--no-install", "wrangler"]
PLAN = "[dry-run] wrangler: would " + " ".join(WRANGLER)  # what a real deploy would run
TENANT_DEPLOY = [*W, "deploy", "-c", "wrangler.tenant.toml", "--dispatch-namespace", "cmgsite-tenants"]
D1_QUERY = f"/client/v4/accounts/acc123/d1/database/{D1_DATABASE_ID}/query"


class RemoteCli:
    def __init__(self, env: dict[str, str], cf: FakeCloudflare, log: Path, d1: Path) -> None:
        self.env, self.cf, self.log, self.d1 = env, cf, log, d1

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main([*argv, "--remote"], env=self.env, stdin=io.StringIO(""), stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    def commands(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def d1_rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.d1) as conn:
            return conn.execute(sql, args).fetchall()

    def d1_requests(self, since: int = 0) -> list[dict[str, Any]]:
        """The bodies of the D1 query API requests the CLI sent."""
        return [b for m, p, b in self.cf.requests[since:] if m == "POST" and p == D1_QUERY]

    def only_reads_since(self, since: int) -> bool:
        """Every Cloudflare request since `since` was a GET or a D1 query made of SELECTs."""
        for method, path, body in self.cf.requests[since:]:
            if method == "GET":
                continue
            queries = (body or {}).get("batch") or [body or {}]
            if not (method == "POST" and path == D1_QUERY and all(q["sql"].startswith("SELECT") for q in queries)):
                return False
        return True


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/client/v4"


@pytest.fixture
def remote(tmp_path: Path, d1_template: Path, supabase_stack: Any, pg_cluster: Any) -> Iterator[RemoteCli]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npx = bin_dir / "npx"
    npx.write_text(f'#!/bin/sh\nexec {sys.executable} {ROOT / "tests" / "standin_npx.py"} "$@"\n')
    npx.chmod(npx.stat().st_mode | stat.S_IXUSR)
    d1 = tmp_path / "remote-d1.sqlite"
    copy_database(d1_template, d1)
    with FakeCloudflare(token="cf-token", account_id="acc123", zone_id="zone123", d1_file=d1) as cf:
        env = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "CMGSITE_WRANGLER": "npx --no-install wrangler",  # instead of node_modules' Node + wrangler
            "NPX_LOG": str(tmp_path / "npx.log"),
            "NPX_STATE": str(tmp_path),
            "FAKE_CF_URL": cf.url,
            "FAKE_CF_TOKEN": "cf-token",
            "FAKE_CF_ACCOUNT": "acc123",
            "CLOUDFLARE_API_TOKEN": "cf-token",
            "CLOUDFLARE_ACCOUNT_ID": "acc123",
            "CLOUDFLARE_ZONE_ID": "zone123",
            "CLOUDFLARE_API_BASE_URL": cf.url,
            "CLOUDFLARE_KV_NAMESPACE_ID": "kv123",
            "CLOUDFLARE_AUTH_KV_NAMESPACE_ID": "authkv",
            "CLOUDFLARE_D1_DATABASE_ID": D1_DATABASE_ID,
            "SUPABASE_URL": supabase_stack.url,
            "SUPABASE_SERVICE_ROLE_KEY": supabase_stack.service_role_key,
            "SUPABASE_ANON_KEY": supabase_stack.anon_key,
            "SUPABASE_JWT_SECRET": supabase_stack.jwt_secret,
            "CONTEXT_SIGNING_SECRET": "master-secret-for-tests-0123456789",
            "AUDIT_FINGERPRINT_KEY": "fingerprint-key-for-tests-0123456789",
            "CMGSITE_STATE_DIR": str(tmp_path / "state"),  # the CLI's own files (remote keyrings it keeps)
        }
        yield RemoteCli(env, cf, tmp_path / "npx.log", d1)
    with pg_cluster.connect() as conn:
        conn.execute("delete from public.tenants where tenant_id like 'cli-%'")


def test_custom_domain_gets_a_custom_hostname_and_status_is_refreshed(remote: RemoteCli, pg_cluster: Any) -> None:
    domain = "shop.cli-remote.example"
    remote.cf.kv[("kv123", f"host:{domain}")] = '{"missing": true}'  # a negative entry cached before the add
    code, out, err = remote(
        "add",
        "cli-shop",
        "--name",
        "Shop",
        "--type",
        "custom-domain",
        "--domain",
        domain,
        "--tier",
        "starter",
        "--json",
    )
    assert code == 0, err
    assert "~75 s" in json.loads(out)["note"]

    posts = [(p, b) for m, p, b in remote.cf.requests if m == "POST" and p != D1_QUERY]
    assert posts == [
        (
            "/client/v4/zones/zone123/custom_hostnames",
            {"hostname": domain, "ssl": {"method": "http", "type": "dv", "settings": {"min_tls_version": "1.2"}}},
        )
    ]
    assert ("kv123", f"host:{domain}") not in remote.cf.kv
    with pg_cluster.connect() as conn:
        assert conn.execute(
            "select ssl_status, dns_configured from public.tenant_domains where domain = %s", (domain,)
        ).fetchone() == ("pending", False)
    assert remote.d1_rows(
        "select tenant_id, domain_type, ssl_status, dns_configured from tenant_domains where domain = ?", domain
    ) == [("cli-shop", "custom", "pending", 0)]

    argvs = [c["argv"] for c in remote.commands()]
    assert [*W, "dispatch-namespace", "get", "cmgsite-tenants"] in argvs
    assert [*W, "dispatch-namespace", "create", "cmgsite-tenants"] in argvs
    deploys = [c for c in remote.commands() if c["argv"][: len(TENANT_DEPLOY)] == TENANT_DEPLOY]
    assert len(deploys) == 1
    argv = deploys[0]["argv"]
    assert argv[len(TENANT_DEPLOY) : -2] == ["--name", "cmgsite-cli-shop", "--var", "TENANT_ID:cli-shop"]
    assert argv[-2] == "--secrets-file"
    assert deploys[0]["secret_keys"] == [  # everything the Worker refuses to start without
        "SESSION_SECRET",
        "SUPABASE_ANON_KEY",
        "SUPABASE_JWT_SECRET",
        "SUPABASE_SERVICE_ROLE_KEY",
        "SUPABASE_URL",
        "TENANT_CONTEXT_KEY",
    ]
    assert deploys[0]["secrets_file_mode"] == "0o600" and not Path(argv[-1]).exists()  # removed after use
    assert "master-secret" not in remote.log.read_text()
    assert not [a for a in argvs if a[2:4] == ["d1", "execute"]]  # D1 goes through its query API now
    batches = [b["batch"] for b in remote.d1_requests() if "batch" in b]
    upsert = next(q for batch in batches for q in batch if q["sql"].startswith("INSERT INTO tenants"))
    assert upsert["params"][:5] == ["cli-shop", "Shop", "custom-domain", "active", "starter"]
    assert all("cli-shop" not in sql for sql, _ in remote.cf.d1_queries)  # values are bound, never quoted in

    remote.cf.activate(domain)
    # Plain `domains status` only reads: it shows Cloudflare's state and writes nowhere.
    requests_before, commands_before = len(remote.cf.requests), len(remote.commands())
    code, out, err = remote("domains", "status", "cli-shop", "--json")
    assert code == 0, err
    row = json.loads(out)[0]
    assert (row["ssl_status"], row["custom_hostname"], row["routed"]) == ("pending", "active/active", True)
    assert remote.only_reads_since(requests_before)
    assert remote.commands()[commands_before:] == []
    with pg_cluster.connect() as conn:
        assert conn.execute("select ssl_status from public.tenant_domains where domain = %s", (domain,)).fetchone() == (
            "pending",
        )
    code, out, err = remote("domains", "status", "cli-shop", "--refresh", "--json")
    assert code == 0, err
    row = json.loads(out)[0]
    assert (row["ssl_status"], row["dns_configured"], row["custom_hostname"]) == ("active", True, "active/active")
    with pg_cluster.connect() as conn:
        assert conn.execute(
            "select ssl_status, dns_configured from public.tenant_domains where domain = %s", (domain,)
        ).fetchone() == ("active", True)
    assert remote.d1_rows("select ssl_status, dns_configured from tenant_domains where domain = ?", domain) == [
        ("active", 1)
    ]

    code, _, err = remote("add-domain", "cli-shop", "second.cli-remote.example")
    assert code == 2 and "tier starter allows 1 domain" in err
    assert remote.cf.by_hostname("second.cli-remote.example") is None

    assert remote("remove", "cli-shop")[0] == 0
    assert remote.cf.by_hostname(domain) is None
    assert ("cmgsite-tenants", "cmgsite-cli-shop") not in remote.cf.scripts
    assert remote.d1_rows("select count(*) from tenant_domains where tenant_id = 'cli-shop'") == [(0,)]


def test_cloudflare_api_errors_surface_and_a_rerun_completes(remote: RemoteCli) -> None:
    remote.cf.fail("POST custom_hostnames", 500, times=3)  # the SDK's first try and its 2 retries
    args = (
        "add",
        "cli-retry",
        "--name",
        "Retry",
        "--type",
        "custom-domain",
        "--domain",
        "retry.cli-remote.example",
        "--tier",
        "starter",
    )
    code, _, err = remote(*args)
    assert code == 1 and "Cloudflare API error (HTTP 500): 1000: injected failure" in err
    assert "Traceback" not in err
    assert sum(m == "POST" and p.endswith("/custom_hostnames") for m, p, _ in remote.cf.requests) == 3
    assert remote.d1_rows("select count(*) from tenants where tenant_id = 'cli-retry'") == [(0,)]  # not routed yet
    assert remote(*args)[0] == 0
    assert remote.cf.by_hostname("retry.cli-remote.example") is not None
    assert remote.d1_rows("select count(*) from tenants where tenant_id = 'cli-retry'") == [(1,)]


def test_wrong_token_is_a_clear_error(remote: RemoteCli) -> None:
    remote.env["CLOUDFLARE_API_TOKEN"] = "wrong-token-0f3a9c"
    code, out, err = remote(
        "add",
        "cli-auth",
        "--name",
        "Auth",
        "--type",
        "custom-domain",
        "--domain",
        "auth.cli-remote.example",
        "--tier",
        "starter",
    )
    # Cloudflare's own answer to a token it does not know (9109), named as the API names it.
    assert code == 1 and "Cloudflare API error (HTTP 403): 9109: Invalid access token" in err, err
    assert "Traceback" not in err and "wrong-token-0f3a9c" not in out + err


def test_verify_on_a_fresh_account_finds_drift_and_repair_converges(remote: RemoteCli) -> None:
    code, out, _ = remote("verify", "--json")
    assert code == 3
    drift = {d["tenant_id"]: " ".join(d["problems"]) for d in json.loads(out)["drift"]}
    assert "missing from D1" in drift["partner1"] and "Worker cmgsite-partner-tenant is missing" in drift["partner1"]
    assert "custom domain partner-seo.com has no custom hostname" in drift["partner-seo"]
    code, out, err = remote("verify", "--repair", "--json")
    assert code == 0, err
    assert {"cozyartz", "partner1", "partner-seo"} <= set(json.loads(out)["repaired"])
    assert ("cmgsite-tenants", "cmgsite-partner-tenant") in remote.cf.scripts
    assert remote.cf.by_hostname("partner-seo.com") is not None
    assert remote.cf.by_hostname("cozyartzmedia.com") is None  # the primary zone needs none
    assert remote("verify")[0] == 0


def test_missing_credentials_exit_4_and_name_them(remote: RemoteCli) -> None:
    del remote.env["CLOUDFLARE_ZONE_ID"]
    code, _, err = remote("list")
    assert code == 4 and "CLOUDFLARE_ZONE_ID" in err


def test_add_without_the_supabase_keys_refuses_before_any_write(remote: RemoteCli, pg_cluster: Any) -> None:
    """A tenant Worker without the project's anon key and JWT secret would answer 503 on every
    route: `add --remote` names what is missing and changes nothing."""
    env = {k: v for k, v in remote.env.items() if k not in ("SUPABASE_ANON_KEY", "SUPABASE_JWT_SECRET")}
    before, requests = len(remote.commands()), len(remote.cf.requests)
    code, out, err = main_with(
        remote,
        env,
        "add",
        "cli-nokeys",
        "--name",
        "No Keys",
        "--type",
        "custom-domain",
        "--domain",
        "nokeys.cli-remote.example",
        "--tier",
        "starter",
    )
    assert code == 4 and "SUPABASE_ANON_KEY, SUPABASE_JWT_SECRET not known for cli-nokeys" in err, err
    assert "Traceback" not in err
    assert remote.commands()[before:] == []  # no wrangler: no namespace, no deploy
    assert not [p for m, p, _ in remote.cf.requests[requests:] if m != "GET" and p != D1_QUERY]  # no hostname, no KV
    assert remote.d1_rows("select count(*) from tenants where tenant_id = 'cli-nokeys'") == [(0,)]
    with pg_cluster.connect() as conn:
        assert conn.execute("select count(*) from public.tenants where tenant_id = 'cli-nokeys'").fetchone() == (0,)


def main_with(remote: RemoteCli, env: dict[str, str], *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([*argv, "--remote"], env=env, stdin=io.StringIO(""), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_dry_run_prints_exact_wrangler_commands_and_api_calls(remote: RemoteCli, pg_cluster: Any) -> None:
    code, out, err = remote("deploy", "--all", "--dispatcher", "--dry-run")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:2] == [
        f"{PLAN} dispatch-namespace create cmgsite-tenants",
        f"{PLAN} deploy -c wrangler.dispatcher.toml "
        "--secrets-file '<temporary JSON file with CONTEXT_SIGNING_SECRET, SUPABASE_SERVICE_ROLE_KEY, SUPABASE_URL>'",
    ]
    assert lines.count(f"{PLAN} dispatch-namespace create cmgsite-tenants") == 1
    assert (
        f"{PLAN} deploy -c wrangler.tenant.toml --dispatch-namespace "
        "cmgsite-tenants --name cmgsite-partner-tenant --var TENANT_ID:partner1 "
        "--secrets-file '<temporary JSON file with SUPABASE_ANON_KEY, SUPABASE_JWT_SECRET, "
        "SUPABASE_SERVICE_ROLE_KEY, SUPABASE_URL, TENANT_CONTEXT_KEY>'"
    ) in lines
    ran = [c["argv"] for c in remote.commands()]
    assert ran == [[*W, "dispatch-namespace", "get", "cmgsite-tenants"]]  # only the read ran

    code, out, err = remote("suspend", "partner1", "--dry-run")
    assert code == 0, err
    lines = out.splitlines()
    assert any(
        line.startswith("[dry-run] supabase: would PATCH ") and '{"status":"suspended"}' in line for line in lines
    )
    d1_writes = [
        json.loads(line.split(" ", 6)[6])
        for line in lines
        if line.startswith(f"[dry-run] cloudflare api: would POST {remote.cf.url}/accounts/acc123/d1/database/")
    ]
    upsert = next(q for w in d1_writes for q in w["batch"] if q["sql"].startswith("INSERT INTO tenants"))
    assert upsert["params"][:4] == ["partner1", "Partner One", "partner-subdomain", "suspended"]
    assert (
        "[dry-run] cloudflare api: would DELETE "
        f"{remote.cf.url}/accounts/acc123/storage/kv/namespaces/kv123/values/host:partner1.cozyartzmedia.com"
    ) in lines
    assert "cf-token" not in out and "Bearer" not in out
    assert remote.only_reads_since(0)  # nothing the dry runs printed reached Cloudflare
    assert remote.d1_rows("select count(*) from tenants") == [(0,)]
    with pg_cluster.connect() as conn:
        assert conn.execute("select status from public.tenants where tenant_id = 'partner1'").fetchone() == ("active",)


def test_deploy_multi_tenant_script_deploys_everything_in_order(remote: RemoteCli) -> None:
    env = {**remote.env, "PYTHON": sys.executable}
    proc = subprocess.run(
        [str(ROOT / "scripts" / "deploy-multi-tenant.sh"), "--dry-run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(f"{PLAN} d1 migrations apply cmgsite --remote")
    assert "--name cmgsite-partner-tenant" in proc.stdout
    assert all(c["argv"][2:4] == ["dispatch-namespace", "get"] for c in remote.commands())
    assert remote.only_reads_since(0)
    remote.log.unlink()

    proc = subprocess.run(
        [str(ROOT / "scripts" / "deploy-multi-tenant.sh")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    argvs = [c["argv"] for c in remote.commands()]
    writes = [a for a in argvs if a[2:4] != ["dispatch-namespace", "get"]]
    assert writes[0] == [*W, "d1", "migrations", "apply", "cmgsite", "--remote", "-c", "wrangler.dispatcher.toml"]
    assert writes[1] == [*W, "dispatch-namespace", "create", "cmgsite-tenants"]
    assert writes[2][:5] == [*W, "deploy", "-c", "wrangler.dispatcher.toml"] and writes[2][5] == "--secrets-file"
    dispatcher = next(c for c in remote.commands() if c["argv"] == writes[2])
    # The master key, and Supabase for the cron's health checks (dispatcher/health.py).
    assert dispatcher["secret_keys"] == ["CONTEXT_SIGNING_SECRET", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_URL"]
    tenants = {a[a.index("--name") + 1] for a in writes[3:] if a[: len(TENANT_DEPLOY)] == TENANT_DEPLOY}
    assert {"cmgsite-primary-tenant", "cmgsite-partner-tenant", "cmgsite-custom-tenant"} <= tenants
    assert remote.d1_rows(
        "select tenant_id from tenants where tenant_id in ('cozyartz', 'partner1', 'partner-seo') order by tenant_id"
    ) == [("cozyartz",), ("partner-seo",), ("partner1",)]
    assert "drift found and repaired: now consistent" in proc.stdout

    missing = {k: v for k, v in env.items() if k != "CONTEXT_SIGNING_SECRET"}
    proc = subprocess.run(
        [str(ROOT / "scripts" / "deploy-multi-tenant.sh")],
        cwd=ROOT,
        env=missing,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 4 and "CONTEXT_SIGNING_SECRET" in proc.stderr


def test_deploy_multi_tenant_dry_run_completes_offline_with_fake_credentials(remote: RemoteCli) -> None:
    """No network to Cloudflare and a made-up token: the plan is still printed whole, as if the
    account held nothing yet (one warning says so), and nothing is written anywhere."""
    env = {
        **remote.env,
        "PYTHON": sys.executable,
        "CLOUDFLARE_API_TOKEN": "not-a-real-token",
        "CLOUDFLARE_API_BASE_URL": closed_port_url(),
        "CLOUDFLARE_ACCOUNT_ID": "fake-account",
    }
    env.pop("CLOUDFLARE_D1_DATABASE_ID")  # the id in wrangler.dispatcher.toml
    proc = subprocess.run(
        [str(ROOT / "scripts" / "deploy-multi-tenant.sh"), "--dry-run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "warning: cannot read Cloudflare's API (ConnectError" in proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"{PLAN} d1 migrations apply cmgsite --remote -c wrangler.dispatcher.toml"
    for script in ("cmgsite-primary-tenant", "cmgsite-partner-tenant", "cmgsite-custom-tenant"):
        assert any(f"--name {script} " in line for line in lines)
    d1 = [
        line
        for line in lines
        if line.startswith("[dry-run] cloudflare api: would POST http://127.0.0.1:")
        and "/accounts/fake-account/d1/database/00000000-0000-0000-0000-000000000000/query " in line
    ]
    routed = {
        q["params"][0]
        for line in d1
        for q in json.loads(line.split(" ", 6)[6])["batch"]
        if q["sql"].startswith("INSERT INTO tenants")
    }
    assert {"cozyartz", "partner1", "partner-seo"} <= routed
    assert any(
        line.startswith("[dry-run] cloudflare api: would POST ")
        and line.endswith(
            '/custom_hostnames {"hostname":"partner-seo.com","ssl":{"method":"http","type":"dv",'
            '"settings":{"min_tls_version":"1.2"}}}'
        )
        for line in lines
    )
    assert "not-a-real-token" not in proc.stdout + proc.stderr
    plan = [line for line in lines if line.startswith("[dry-run] ")]
    assert plan and all(": would " in line for line in plan)  # never "deployed", never past tense
    assert lines[-1] == "dry run: nothing changed" and '"deployed"' not in proc.stdout + proc.stderr
    assert remote.cf.requests == []  # the fake (the "real" account here) was never reached
    assert all(c["argv"][2:4] == ["dispatch-namespace", "get"] for c in remote.commands())


def test_cloudflare_unreachable_is_exit_1_in_one_line(remote: RemoteCli) -> None:
    remote.env["CLOUDFLARE_API_BASE_URL"] = closed_port_url()
    code, _, err = remote("verify")
    assert code == 1 and "Traceback" not in err
    assert [line for line in err.splitlines() if "unreachable" in line] == [
        "error: Cloudflare API unreachable: ConnectError: All connection attempts failed"
    ]
    code, out, err = remote("verify", "--json")
    assert code == 1 and json.loads(out)["error"] == {
        "code": "BackendError",
        "message": "Cloudflare API unreachable: ConnectError: All connection attempts failed",
    }


def test_a_d1_error_fails_the_command_and_a_rerun_completes(remote: RemoteCli, pg_cluster: Any) -> None:
    assert (
        remote(
            "add",
            "cli-d1",
            "--name",
            "D1",
            "--type",
            "partner-subdomain",
            "--domain",
            "cli-d1.cozyartzmedia.com",
            "--tier",
            "starter",
        )[0]
        == 0
    )
    remote.cf.fail("POST d1", 400, code=7500, message="D1_ERROR: injected")
    code, _, err = remote("suspend", "cli-d1")
    assert code == 1 and "Cloudflare API error (HTTP 400): 7500: D1_ERROR: injected" in err and "Traceback" not in err
    with pg_cluster.connect() as conn:
        assert conn.execute("select status from public.tenants where tenant_id = 'cli-d1'").fetchone() == ("suspended",)
    assert remote.d1_rows("select status from tenants where tenant_id = 'cli-d1'") == [
        ("active",)
    ]  # the batch did not land
    assert remote("suspend", "cli-d1")[0] == 0
    assert remote.d1_rows("select status from tenants where tenant_id = 'cli-d1'") == [("suspended",)]


def test_remote_delete_erases_auth_kv_keys_script_and_rows(remote: RemoteCli, pg_cluster: Any) -> None:
    assert (
        remote(
            "add",
            "cli-erase",
            "--name",
            "Erase",
            "--type",
            "custom-domain",
            "--domain",
            "erase.cli-remote.example",
            "--tier",
            "starter",
        )[0]
        == 0
    )
    for i in range(3):
        remote.cf.kv[("authkv", f"cli-erase:session-epoch:user{i}")] = "1"
    remote.cf.kv[("authkv", "partner1:session-epoch:user0")] = "1"
    key = remote.env.pop("AUDIT_FINGERPRINT_KEY")
    code, _, err = remote("delete", "cli-erase", "--yes")  # the erasure record's key is the operator's
    assert code == 4 and "AUDIT_FINGERPRINT_KEY" in err
    assert remote.d1_rows("select count(*) from tenants where tenant_id = 'cli-erase'") == [(1,)]
    remote.env["AUDIT_FINGERPRINT_KEY"] = key
    for name in ("a.txt", "b/c.pdf"):
        remote.cf.r2[(R2_BUCKET, f"tenants/cli-erase/files/{name}")] = b"x"
    sent = len(remote.cf.requests)
    code, out, err = remote("delete", "cli-erase", "--dry-run", "--json")  # the real counts, nothing erased
    assert code == 0, err
    would = json.loads(out)["would_erase"]
    assert (
        would["runtime.auth_kv"],
        would["runtime.r2_objects"],
        would["tenants"],
        would["tenant_domains"],
        would["d1.tenants"],
        would["d1.tenant_domains"],
    ) == (3, 2, 1, 1, 1, 1)
    assert remote.only_reads_since(sent) and err.rstrip().endswith("dry run: nothing changed")
    code, out, err = remote("delete", "cli-erase", "--yes", "--json")
    assert code == 0, err
    assert json.loads(out)["erased"]["runtime.auth_kv"] == 3 and json.loads(out)["erased"]["runtime.r2_objects"] == 2
    assert not [k for (_, k) in remote.cf.r2 if k.startswith("tenants/cli-erase/")]
    assert [k for (ns, k) in remote.cf.kv if ns == "authkv"] == ["partner1:session-epoch:user0"]
    assert ("cmgsite-tenants", "cmgsite-cli-erase") not in remote.cf.scripts
    assert remote.cf.by_hostname("erase.cli-remote.example") is None
    assert remote.d1_rows("select count(*) from tenants where tenant_id = 'cli-erase'") == [(0,)]
    with pg_cluster.connect() as conn:
        assert conn.execute("select count(*) from public.tenants where tenant_id = 'cli-erase'").fetchone() == (0,)


def test_a_tenant_claim_is_routed_only_once_its_ownership_is_proven(remote: RemoteCli, pg_cluster: Any) -> None:
    """A custom domain a tenant admin adds (a pending Supabase row) gets neither a route nor a custom
    hostname from repair; proven (its TXT record), the operator's verify routes it."""
    assert (
        remote(
            "add",
            "cli-self",
            "--name",
            "Self",
            "--type",
            "custom-domain",
            "--domain",
            "self.cli-remote.example",
            "--tier",
            "growth",
        )[0]
        == 0
    )
    claim = "www.self.cli-remote.example"
    with pg_cluster.connect() as conn:  # as the API stores a claim: pending, with the database's token
        conn.execute(
            "insert into public.tenant_domains (tenant_id, domain, domain_type) values ('cli-self', %s, 'custom')",
            (claim,),
        )
        token = conn.execute(
            "select verification_token from public.tenant_domains where domain = %s", (claim,)
        ).fetchone()[0]
    code, out, _ = remote("verify", "--json")  # (a fresh account: the seeded tenants drift, cli-self does not)
    assert "cli-self" not in {d["tenant_id"] for d in json.loads(out)["drift"]}  # a pending claim is not drift
    assert remote("verify", "--repair")[0] == 0
    assert remote.cf.by_hostname(claim) is None
    assert remote.d1_rows("select tenant_id from tenant_domains where domain = ?", claim) == []
    code, out, _ = remote("domains", "status", "cli-self", "--refresh", "--json")
    row = next(r for r in json.loads(out) if r["domain"] == claim)
    assert code == 0 and (row["verification_status"], row["routed"]) == ("pending", False)
    assert remote.cf.by_hostname(claim) is None

    with FakeDoh() as doh:
        remote.env["DOH_RESOLVER_URL"] = doh.url
        code, _, err = remote("domains", "verify", "cli-self", claim)
        assert code == 2 and "_cmgsite-challenge." + claim in err
        doh.txt("_cmgsite-challenge." + claim, token)
        code, out, err = remote("domains", "verify", "cli-self", claim, "--json")
    assert code == 0, err
    assert json.loads(out)["verified"]["verification_status"] == "verified"
    assert remote.cf.by_hostname(claim) is not None
    assert remote.d1_rows("select tenant_id from tenant_domains where domain = ?", claim) == [("cli-self",)]
    assert remote("verify")[0] == 0


def test_a_namespace_that_cannot_be_read_is_an_error_not_missing(remote: RemoteCli) -> None:
    """`dispatch-namespace get` failing for another reason than "not found" (no network, a refused
    token) stops a real run, naming what failed, and creates nothing; a dry run warns and plans."""
    remote.env["NPX_FAIL"] = "dispatch-namespace get"
    code, out, err = remote("deploy", "partner1")
    assert code == 1 and "could not read the dispatch namespace cmgsite-tenants" in err
    assert "injected failure" in err and "missing: creating it" not in err
    assert "nothing was changed" in err and "incomplete" not in err and "Traceback" not in err
    assert [c["argv"][2:4] for c in remote.commands()] == [["dispatch-namespace", "get"]]  # no create, no deploy
    code, out, err = remote("deploy", "partner1", "--dry-run")
    assert code == 0, err
    assert "warning: could not read the dispatch namespace cmgsite-tenants" in err
    assert f"{PLAN} dispatch-namespace create cmgsite-tenants" in out.splitlines()
    assert out.splitlines()[-1] == "dry run: nothing changed"
    del remote.env["NPX_FAIL"]
    code, _, err = remote("deploy", "partner1")  # "not found" is an answer: created, then deployed
    assert code == 0, err
    assert "namespace: create cmgsite-tenants (not found)" in err


def test_deploy_all_goes_on_past_a_failing_tenant_and_exits_1(remote: RemoteCli) -> None:
    remote.env["NPX_FAIL"] = "--name cmgsite-partner-tenant"
    code, out, err = remote("deploy", "--all")
    assert code == 1 and "Traceback" not in err
    progress = [line for line in err.splitlines() if line.startswith("  - [")]
    total = len(progress)
    assert total >= 3 and [line.split("]")[0] for line in progress] == [
        f"  - [{i}/{total}" for i in range(1, total + 1)
    ]
    assert any(line.startswith("warning: [") and "partner1 failed" in line for line in err.splitlines())
    assert f"ok: deployed {total - 1} of {total} tenant Worker(s)" in err and "FAILED: partner1" in err
    deployed = {a[a.index("--name") + 1] for a in (c["argv"] for c in remote.commands()) if "--name" in a}
    assert {"cmgsite-primary-tenant", "cmgsite-custom-tenant"} <= deployed  # the ones after partner1 too
    assert ("cmgsite-tenants", "cmgsite-custom-tenant") in remote.cf.scripts
    code, out, _ = remote("deploy", "--all", "--json")
    assert code == 1 and [f["tenant_id"] for f in json.loads(out)["failed"]] == ["partner1"]
    del remote.env["NPX_FAIL"], remote.env["CONTEXT_SIGNING_SECRET"]  # the same for every tenant: stop at once
    code, _, err = remote("deploy", "--all")
    assert code == 4 and err.count("CONTEXT_SIGNING_SECRET") == 1 and "[2/" not in err


SLOW_WRANGLER = """#!/bin/sh
# wrangler for the interrupt tests: the namespace exists; a deploy says it started, then hangs
case "$*" in
  *"dispatch-namespace get"*) echo '{"namespace_name": "cmgsite-tenants"}' ;;
  *deploy*) touch "$SLOW_MARK"; exec sleep 600 ;;
esac
"""


@pytest.mark.parametrize("sig, code, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")])
def test_an_interrupt_ends_the_command_in_one_line_naming_the_step(
    remote: RemoteCli, pg_cluster: Any, tmp_path: Path, sig: signal.Signals, code: int, name: str
) -> None:
    slow = tmp_path / "slow-wrangler"
    slow.write_text(SLOW_WRANGLER)
    slow.chmod(0o755)
    mark = tmp_path / "deploy-started"
    env = {**remote.env, "CMGSITE_WRANGLER": str(slow), "SLOW_MARK": str(mark)}
    args = [
        "add",
        "cli-sig",
        "--name",
        "Sig",
        "--type",
        "partner-subdomain",
        "--domain",
        "cli-sig.cozyartzmedia.com",
        "--tier",
        "starter",
    ]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "tenants.py"), *args, "--remote"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while not mark.exists() and proc.poll() is None:  # until the deploy step is under way
            select.select([], [], [], 0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f'interrupted ({name}): stopped in or after the step "$ ')
    assert "deploy -c wrangler.tenant.toml" in last
    assert last.endswith("re-run the same command to complete it (every step is safe to repeat), then `verify`")
    with pg_cluster.connect() as conn:  # the steps before it happened, the rest did not
        assert conn.execute("select status from public.tenants where tenant_id = 'cli-sig'").fetchone() == ("active",)
    assert remote.d1_rows("select count(*) from tenants where tenant_id = 'cli-sig'") == [(0,)]
    code_again, _, err = remote(*args)  # the re-run completes it
    assert code_again == 0, err
    assert remote.d1_rows("select count(*) from tenants where tenant_id = 'cli-sig'") == [(1,)]


def test_a_closed_pipe_ends_quietly(remote: RemoteCli) -> None:
    """`tenants.py list --json | head -c 1`: the reader goes away; no traceback, no error line."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "tenants.py"), "list", "--json", "--remote"],
            cwd=ROOT,
            env=remote.env,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    assert proc.returncode == 141 and proc.stderr == ""


def test_an_unwritable_export_path_is_one_line_before_anything_is_read(remote: RemoteCli) -> None:
    code, _, err = remote("export", "partner1", "--output", "/proc/cli-not-writable.json")
    assert code == 2 and "cannot write /proc/cli-not-writable.json" in err and "Traceback" not in err

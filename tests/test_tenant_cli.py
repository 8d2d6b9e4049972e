"""The tenant CLI end to end on the local platform, over real HTTP, against the real local Supabase."""
from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from localrt.kv import KVNamespace
from localrt.platform import Platform
from scripts.tenants import main
from tests.support import LiveServer

PREFIX = "cli-"  # every tenant these tests create; the shared Supabase stack is cleaned of them


class Cli:
    """Runs scripts/tenants.py in-process against one test's platform and the session's Supabase."""

    def __init__(self, platform: Platform, env: dict[str, str]) -> None:
        self.platform, self.env = platform, env

    def __call__(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        args = [*argv, "--state-dir", str(self.platform.paths.root), "--d1-file", str(self.platform.d1.path)]
        code = main(args, env=self.env, stdin=io.StringIO(stdin), stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    def json(self, *argv: str) -> Any:
        code, out, err = self(*argv, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def cli(platform: Platform, supabase_stack: Any, pg_cluster: Any) -> Iterator[Cli]:
    env = {"SUPABASE_URL": supabase_stack.url, "SUPABASE_SERVICE_ROLE_KEY": supabase_stack.service_role_key}
    yield Cli(platform, env)
    with pg_cluster.connect() as conn:  # owner connection: drop whatever a failed test left behind
        conn.execute("delete from public.tenants where tenant_id like %s", (PREFIX + "%",))


def health(live: LiveServer, host: str) -> httpx.Response:
    return httpx.get(live.url + "/api/health", headers={"Host": host}, timeout=10)


def test_lifecycle_add_suspend_resume_remove_over_http(cli: Cli, live: LiveServer) -> None:
    host = "cli-life.cozyartzmedia.com"
    assert health(live, host).status_code == 404
    code, out, err = cli("add", "cli-life", "--name", "Life Co", "--type", "partner-subdomain",
                         "--domain", host, "--tier", "growth")
    assert code == 0, err
    r = health(live, host)
    assert r.status_code == 200 and r.json()["tenant_id"] == "cli-life" and r.json()["tier"] == "growth"
    env = cli.platform.namespace.env_of("cmgsite-cli-life")
    assert env.SUPABASE_URL == cli.env["SUPABASE_URL"] and len(env.SESSION_SECRET) > 40
    assert env.TENANT_ID == "cli-life" and env.TENANT_TYPE == "partner-subdomain"

    assert cli("suspend", "cli-life")[0] == 0
    assert health(live, host).status_code == 403
    assert cli("resume", "cli-life")[0] == 0
    assert health(live, host).status_code == 200
    assert cli("remove", "cli-life")[0] == 0
    assert health(live, host).status_code == 404
    assert "cmgsite-cli-life" not in cli.platform.namespace.names()
    assert cli("verify")[0] == 0
    # A removed tenant keeps its data and its domain: resume brings it back (Worker redeployed).
    code, _, err = cli("add", "cli-life", "--name", "Life Co", "--type", "partner-subdomain", "--domain", host,
                       "--tier", "growth")
    assert code == 2 and "use resume" in err
    assert cli("resume", "cli-life")[0] == 0
    assert health(live, host).json()["tenant_id"] == "cli-life"


def rows_everywhere(pg_cluster: Any, tenant_id: str) -> dict[str, int]:
    """Rows of a tenant in every Supabase table that has a tenant_id column (as the owner: no RLS)."""
    with pg_cluster.connect() as conn:
        tables = [r[0] for r in conn.execute(
            "select table_name from information_schema.columns where table_schema = 'public'"
            " and column_name = 'tenant_id' and table_name in (select tablename from pg_tables where schemaname = 'public')")]
        return {t: conn.execute(f'select count(*) from public."{t}" where tenant_id = %s', (tenant_id,)).fetchone()[0]
                for t in tables}


def d1_rows(platform: Platform, tenant_id: str) -> int:
    db = platform.d1
    return (db.execute("select count(*) as n from tenants where id = ?", (tenant_id,))["results"][0]["n"]
            + db.execute("select count(*) as n from tenant_domains where tenant_id = ?", (tenant_id,))["results"][0]["n"])


def test_crash_in_the_d1_step_then_rerun_converges_and_verify_reports_it(cli: Cli, live: LiveServer) -> None:
    host = "cli-crash.cozyartzmedia.com"
    db = cli.platform.d1
    db.execute("CREATE TRIGGER cli_fail BEFORE INSERT ON tenants WHEN NEW.id = 'cli-crash'"
               " BEGIN SELECT RAISE(ABORT, 'injected D1 outage'); END")
    code, _, err = cli("add", "cli-crash", "--name", "Crash", "--type", "partner-subdomain", "--domain", host,
                       "--tier", "starter")
    assert code == 1 and "injected D1 outage" in err and "re-run" in err
    assert health(live, host).status_code == 404  # Supabase has it, D1 does not: not routed, never misrouted

    code, out, _ = cli("verify", "--json")
    assert code == 3
    drift = {d["tenant_id"]: d["problems"] for d in json.loads(out)["drift"]}
    assert list(drift) == ["cli-crash"] and "missing from D1" in " ".join(drift["cli-crash"])

    db.execute("DROP TRIGGER cli_fail")
    code, _, err = cli("add", "cli-crash", "--name", "Crash", "--type", "partner-subdomain", "--domain", host,
                       "--tier", "starter")
    assert code == 0, err
    assert health(live, host).json()["tenant_id"] == "cli-crash"
    assert cli("verify")[0] == 0


def test_verify_repair_fixes_d1_and_kv_drift(cli: Cli, live: LiveServer) -> None:
    host = "cli-drift.cozyartzmedia.com"
    assert cli("add", "cli-drift", "--name", "Drift", "--type", "partner-subdomain", "--domain", host,
               "--tier", "starter")[0] == 0
    assert health(live, host).status_code == 200  # fills KV with the active route
    cli.platform.d1.execute("UPDATE tenants SET status = 'active', tier = 'enterprise' WHERE id = 'cli-drift'")
    cli.platform.d1.execute("DELETE FROM tenant_domains WHERE domain = 'partner1.cozyartzmedia.com'")
    report = json.loads(cli("verify", "--json")[1])
    problems = {d["tenant_id"]: " ".join(d["problems"]) for d in report["drift"]}
    assert "D1 tier is 'enterprise'" in problems["cli-drift"]
    assert "partner1.cozyartzmedia.com is in Supabase but not routed" in problems["partner1"]
    code, out, _ = cli("verify", "--repair", "--json")
    assert code == 0 and sorted(json.loads(out)["repaired"]) == ["cli-drift", "partner1"]
    assert health(live, "partner1.cozyartzmedia.com").status_code == 200
    assert health(live, host).json()["tier"] == "starter"


def test_export_holds_the_tenant_rows_and_nothing_of_others(cli: Cli, live: LiveServer, pg_cluster: Any) -> None:
    assert cli("add", "cli-exp", "--name", "Export Co", "--type", "custom-domain", "--domain", "exp.cli-test.example",
               "--tier", "growth")[0] == 0
    with pg_cluster.connect() as conn:
        conn.execute("insert into public.profiles (id, tenant_id, tenant_role, email, display_name) values"
                     " ('00000000-0000-4000-8000-0000000000e1', 'cli-exp', 'admin', 'ann@exp.example', 'Ann')")
        conn.execute("insert into public.tenant_usage (tenant_id, usage_type, period, usage_count, usage_limit)"
                     " values ('cli-exp', 'ai_calls', '2026-11', 42, 250)")
    code, out, err = cli("export", "cli-exp")
    assert code == 0, err
    data = json.loads(out)
    sb = data["supabase"]
    assert [p["email"] for p in sb["profiles"]] == ["ann@exp.example"]
    assert sb["tenant_usage"][0]["usage_count"] == 42
    assert [d["domain"] for d in sb["tenant_domains"]] == ["exp.cli-test.example"]
    assert sb["tenants"][0]["name"] == "Export Co"
    assert any(a["action"] == "tenant.added" for a in sb["audit_log"])
    assert data["d1"]["tenants"][0]["id"] == "cli-exp" and data["worker"]["deployed"] is True
    assert {"tenants", "profiles", "tenant_usage", "tenant_domains", "audit_log"} <= set(sb)
    for table, rows in sb.items():  # tables other features add are exported too, and hold only this tenant
        assert all(r["tenant_id"] == "cli-exp" for r in rows), table
    for other in ("cozyartz", "partner1", "partner-seo", "cozyartzmedia.com", "@partner1.example"):
        assert other not in out.replace('"PRIMARY_TENANT_ID"', "")
    assert "TENANT_CONTEXT_KEY" not in out
    target = cli.platform.paths.root / "exp.json"
    assert cli("export", "cli-exp", "--output", str(target))[0] == 0
    assert target.stat().st_mode & 0o777 == 0o600  # personal data: owner-only
    assert json.loads(target.read_text())["supabase"]["profiles"][0]["email"] == "ann@exp.example"


def test_delete_erases_every_row_and_leaves_an_audit_record_without_personal_data(
        cli: Cli, live: LiveServer, pg_cluster: Any) -> None:
    host = "cli-gone.example.org"
    assert cli("add", "cli-gone", "--name", "Gone Ltd", "--type", "custom-domain", "--domain", host,
               "--tier", "starter")[0] == 0
    with pg_cluster.connect() as conn:
        conn.execute("insert into public.profiles (id, tenant_id, tenant_role, email, display_name) values"
                     " ('00000000-0000-4000-8000-0000000000f1', 'cli-gone', 'client', 'bob@gone.example', 'Bob')")
    assert health(live, host).status_code == 200
    assert sum(rows_everywhere(pg_cluster, "cli-gone").values()) >= 4
    root = cli.platform.paths.root
    auth_kv = KVNamespace(root / "auth_kv.sqlite")  # what tenant_worker.auth_store writes, keyed by tenant
    asyncio.run(auth_kv.put("cli-gone:session-epoch:00000000-0000-4000-8000-0000000000f1", "1"))
    asyncio.run(auth_kv.put("partner1:session-epoch:00000000-0000-4000-8000-000000000011", "1"))
    objects = root / "durable_objects" / "cmgsite-cli-gone" / "UsageMeter"
    objects.mkdir(parents=True, exist_ok=True)  # the health call may already have metered into it
    (objects / "abc.sqlite").write_bytes(b"")
    export = json.loads(cli("export", "cli-gone")[1])
    assert export["runtime"]["auth_kv_keys"] == 1 and "abc.sqlite" in export["runtime"]["durable_object_files"]

    code, _, err = cli("delete", "cli-gone")  # no terminal, no --yes
    assert code == 2 and "--yes" in err
    code, _, err = cli("delete", "cli-gone", "--yes")
    assert code == 0, err
    assert rows_everywhere(pg_cluster, "cli-gone") == {t: 0 for t in rows_everywhere(pg_cluster, "cli-gone")}
    assert d1_rows(cli.platform, "cli-gone") == 0
    assert "cmgsite-cli-gone" not in cli.platform.namespace.names()
    assert not cli.platform.namespace.secrets_path("cmgsite-cli-gone").exists()
    assert health(live, host).status_code == 404
    assert [k["name"] for k in asyncio.run(auth_kv.list({"prefix": ""}))["keys"]] == [
        "partner1:session-epoch:00000000-0000-4000-8000-000000000011"]
    assert not objects.parent.exists()
    with pg_cluster.connect() as conn:
        audit = conn.execute("select tenant_id, actor, action, target, details::text from public.audit_log"
                             " where action = 'tenant.erased' and details::text like '%%profiles%%'"
                             " order by id desc limit 1").fetchone()
    assert audit is not None and audit[0] == "cozyartz" and audit[3].startswith("sha256:")
    record = " ".join(str(x) for x in audit)
    for personal in ("cli-gone", "Gone Ltd", "bob@gone.example", "Bob", host):
        assert personal not in record
    assert cli("delete", "cli-gone", "--yes")[0] == 0  # re-run: already erased, still fine
    assert cli("verify")[0] == 0


@pytest.mark.parametrize("argv, message", [
    (["add", "cli-bad", "--name", "B", "--type", "custom-domain", "--domain", "not a domain", "--tier", "starter"],
     "invalid domain"),
    (["add", "cli-bad", "--name", "B", "--type", "custom-domain", "--domain", "http://x.example/", "--tier", "starter"],
     "invalid domain"),
    (["add", "cli-bad", "--name", "B", "--type", "custom-domain", "--domain", "10.0.0.1", "--tier", "starter"],
     "IP addresses"),
    (["add", "cli-bad", "--name", "B", "--type", "custom-domain", "--domain", "partner-seo.com", "--tier", "starter"],
     "already held by tenant 'partner-seo'"),
    (["add", "cli-bad", "--name", "B", "--type", "partner-subdomain", "--domain", "PARTNER1.cozyartzmedia.com.",
      "--tier", "starter"], "already held by tenant 'partner1'"),
    (["add", "cli-bad", "--name", "B", "--type", "custom-domain", "--domain", "ok.example", "--tier", "platinum"],
     "unknown tier 'platinum'"),
    (["add", "cli-bad", "--name", "B", "--type", "reseller", "--domain", "ok.example", "--tier", "starter"],
     "unknown tenant type 'reseller'"),
    (["add", "cli-bad", "--name", "B", "--type", "primary", "--domain", "ok.example", "--tier", "starter"],
     "primary"),
    (["add", "cli-bad", "--name", "B", "--type", "partner-subdomain", "--domain", "ok.example", "--tier", "starter"],
     "end in .cozyartzmedia.com"),
    (["add", "Bad_Id", "--name", "B", "--type", "custom-domain", "--domain", "ok.example", "--tier", "starter"],
     "invalid tenant id"),
    (["remove", "cozyartz"], "primary tenant cannot be removed"),
    (["suspend", "cozyartz"], "primary tenant cannot be suspended"),
    (["delete", "cozyartz", "--yes"], "primary tenant cannot be deleted"),
    (["suspend", "cli-nobody"], "no tenant 'cli-nobody'"),
    (["set-tier", "partner1", "gold"], "unknown tier 'gold'"),
    (["add-domain", "partner-seo", "more.partner-seo.example"], "tier starter allows 1 domain"),
    (["add-domain", "partner1", "cozyartzmedia.com"], "belongs to the platform's primary tenant"),
    (["remove-domain", "partner1", "partner1.cozyartzmedia.com"], "primary domain"),
    (["deploy"], "name a tenant"),
])
def test_bad_input_is_refused_with_a_clear_message_and_nothing_written(
        cli: Cli, pg_cluster: Any, argv: list[str], message: str) -> None:
    before_d1 = cli.platform.d1.execute("select * from tenant_domains order by domain")["results"]
    with pg_cluster.connect() as conn:
        before = conn.execute("select tenant_id, status, subscription_tier from public.tenants order by 1").fetchall()
        domains_before = conn.execute("select domain, tenant_id from public.tenant_domains order by 1").fetchall()
    code, out, err = cli(*argv)
    assert code == 2, (out, err)
    assert message in err and "Traceback" not in err
    assert cli.platform.d1.execute("select * from tenant_domains order by domain")["results"] == before_d1
    with pg_cluster.connect() as conn:
        assert conn.execute("select tenant_id, status, subscription_tier from public.tenants order by 1").fetchall() == before
        assert conn.execute("select domain, tenant_id from public.tenant_domains order by 1").fetchall() == domains_before


def test_domain_quota_follows_the_tier(cli: Cli, live: LiveServer) -> None:
    assert cli("add", "cli-quota", "--name", "Quota", "--type", "custom-domain", "--domain", "q1.cli-test.example",
               "--tier", "starter")[0] == 0
    code, _, err = cli("add-domain", "cli-quota", "q2.cli-test.example")
    assert code == 2 and "tier starter allows 1 domain" in err
    assert cli("set-tier", "cli-quota", "growth")[0] == 0
    assert cli("add-domain", "cli-quota", "Q2.cli-test.example")[0] == 0
    assert health(live, "q2.cli-test.example").json()["tenant_id"] == "cli-quota"
    assert health(live, "q2.cli-test.example").json()["tier"] == "growth"
    code, _, err = cli("set-tier", "cli-quota", "starter")
    assert code == 2 and "allows 1 domain(s) and cli-quota has 2" in err
    assert cli("remove-domain", "cli-quota", "q2.cli-test.example")[0] == 0
    assert health(live, "q2.cli-test.example").status_code == 404
    assert cli("set-tier", "cli-quota", "starter")[0] == 0


def test_dry_run_prints_the_writes_and_changes_nothing(cli: Cli, live: LiveServer, pg_cluster: Any) -> None:
    code, out, err = cli("add", "cli-dry", "--name", "Dry", "--type", "partner-subdomain",
                         "--domain", "cli-dry.cozyartzmedia.com", "--tier", "starter", "--dry-run")
    assert code == 0, err
    lines = out.splitlines()
    assert any(line.startswith("[dry-run] supabase: POST ") and "/rest/v1/tenants?on_conflict=tenant_id" in line
               and '"tenant_id":"cli-dry"' in line for line in lines)
    assert any("INSERT INTO tenants (id, name, type, status, tier, script_name, whitelabel_config) VALUES "
               "('cli-dry', 'Dry', 'partner-subdomain', 'active', 'starter', 'cmgsite-cli-dry'" in line for line in lines)
    assert "[dry-run] kv (local): DELETE host:cli-dry.cozyartzmedia.com" in lines
    assert any(line.startswith("[dry-run] namespace (local ") and "deploy" in line for line in lines)
    assert "service_role" not in out and "eyJ" not in out  # no credentials in the plan
    with pg_cluster.connect() as conn:
        assert conn.execute("select count(*) from public.tenants where tenant_id = 'cli-dry'").fetchone()[0] == 0
    assert d1_rows(cli.platform, "cli-dry") == 0
    assert "cmgsite-cli-dry" not in cli.platform.namespace.names()
    assert health(live, "cli-dry.cozyartzmedia.com").status_code == 404

    code, out, _ = cli("suspend", "partner1", "--dry-run")
    assert code == 0
    assert any(line.startswith("[dry-run] supabase: PATCH ") and "tenant_id=eq.partner1" in line
               and '{"status":"suspended"}' in line for line in out.splitlines())
    assert health(live, "partner1.cozyartzmedia.com").status_code == 200


def test_list_and_show_as_json(cli: Cli) -> None:
    rows = cli.json("list")
    assert {"cozyartz", "partner1", "partner-seo"} <= {r["tenant_id"] for r in rows}
    shown = cli.json("show", "partner1")
    assert shown["tenant"]["domain"] == "partner1.cozyartzmedia.com" and shown["worker_deployed"] is True
    assert shown["d1_route"]["script_name"] == "cmgsite-partner-tenant"


def test_secrets_from_a_git_ignored_file_reach_the_worker(cli: Cli, tmp_path: Path) -> None:
    secret_file = tmp_path / "partner1.secrets.env"
    secret_file.write_text("SESSION_SECRET=s3cr3t-value\nGITHUB_CLIENT_ID=abc\n")
    code, out, err = cli("secrets", "partner1", "--file", str(secret_file), "--json")
    assert code == 0, err
    assert json.loads(out)["secrets_set"] == ["GITHUB_CLIENT_ID", "SESSION_SECRET"]
    assert "s3cr3t-value" not in out + err
    env = cli.platform.namespace.env_of("cmgsite-partner-tenant")
    assert env.SESSION_SECRET == "s3cr3t-value" and env.TENANT_CONTEXT_KEY
    bad = tmp_path / "bad.env"
    bad.write_text("TENANT_CONTEXT_KEY=forged\n")
    code, _, err = cli("secrets", "partner1", "--file", str(bad))
    assert code == 2 and "TENANT_CONTEXT_KEY" in err


def test_committable_secrets_file_in_the_repo_is_refused(cli: Cli) -> None:
    tracked = Path(__file__).resolve().parent / "cli_not_ignored_secrets.env"
    tracked.write_text("SESSION_SECRET=x\n")
    try:
        code, _, err = cli("secrets", "partner1", "--file", str(tracked))
    finally:
        tracked.unlink()
    assert code == 2 and "not git-ignored" in err


class Terminal(io.StringIO):
    """Operator input typed at a terminal."""

    def isatty(self) -> bool:
        return True


def test_delete_asks_for_the_typed_tenant_id(cli: Cli, pg_cluster: Any) -> None:
    assert cli("add", "cli-ask", "--name", "Ask", "--type", "partner-subdomain", "--domain",
               "cli-ask.cozyartzmedia.com", "--tier", "starter")[0] == 0
    out, err = io.StringIO(), io.StringIO()
    base = ["--state-dir", str(cli.platform.paths.root), "--d1-file", str(cli.platform.d1.path)]
    code = main(["delete", "cli-ask", *base], env=cli.env, stdin=Terminal("cli-as\n"), stdout=out, stderr=err)
    assert code == 2 and "did not match: nothing was deleted" in err.getvalue()
    assert "Type the tenant id to confirm" in err.getvalue()
    assert sum(rows_everywhere(pg_cluster, "cli-ask").values()) > 0
    code = main(["delete", "cli-ask", *base], env=cli.env, stdin=Terminal("cli-ask\n"), stdout=out, stderr=err)
    assert code == 0
    assert sum(rows_everywhere(pg_cluster, "cli-ask").values()) == 0


async def test_tenant_tables_are_discovered_from_postgrest(supabase_stack: Any) -> None:
    """Export and erasure find every table with a tenant_id column, not only the ones known today."""
    from controlplane.registry import KNOWN_TENANT_TABLES, SupabaseRegistry
    from localrt.http_client import HttpxClient

    async with HttpxClient() as http:
        registry = SupabaseRegistry(http, url=supabase_stack.url, service_role_key=supabase_stack.service_role_key)
        assert set(KNOWN_TENANT_TABLES) <= await registry.discovered_tables()
        tables = await registry.tenant_tables()
    assert tables[-1] == "tenants" and len(tables) == len(set(tables))


def test_remove_interrupted_in_d1_never_routes_to_a_missing_worker(cli: Cli, live: LiveServer) -> None:
    host = "cli-rm.cozyartzmedia.com"
    assert cli("add", "cli-rm", "--name", "Rm", "--type", "partner-subdomain", "--domain", host,
               "--tier", "starter")[0] == 0
    db = cli.platform.d1
    db.execute("CREATE TRIGGER cli_rm_fail BEFORE DELETE ON tenant_domains WHEN OLD.tenant_id = 'cli-rm'"
               " BEGIN SELECT RAISE(ABORT, 'injected D1 outage'); END")
    code, _, err = cli("remove", "cli-rm")
    assert code == 1 and "injected D1 outage" in err
    # Still routed (D1 did not change), so its Worker must still be there: served, never a 502.
    assert "cmgsite-cli-rm" in cli.platform.namespace.names()
    assert health(live, host).status_code == 200
    db.execute("DROP TRIGGER cli_rm_fail")
    assert cli("remove", "cli-rm")[0] == 0
    assert health(live, host).status_code == 404
    assert cli("verify")[0] == 0

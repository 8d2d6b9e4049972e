"""The tenant CLI end to end on the running local platform (the session's `platform`: the
dispatcher and one workerd per tenant script), over real HTTP, against the real local Supabase.

The CLI is driven as an operator runs it, `--local` with the platform's --state-dir and
--wrangler-state: it writes the namespace registry, purges KV through the running host and
waits until the host has started or stopped the changed Worker. The dispatcher of the test
platform keeps no in-isolate route cache (ROUTE_ISOLATE_TTL_SECONDS=0), so a change is seen
by the very next request. Every tenant these tests add is erased again afterwards.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import httpx
import pytest

from controlplane.edges import miniflare_object_id
from controlplane.tenant_data import FINGERPRINT_KEY_FILE, erasure_fingerprint
from scripts.tenants import main
from tests.auth_support import AuthWorld, Browser, provider_vars
from tests.fake_oauth import FakeOAuth
from tests.support import Platform

PREFIX = "cli-"  # every tenant these tests create; the shared Supabase stack is cleaned of them
FAILURE_TRIGGERS = ("cli_fail", "cli_rm_fail")  # the D1 outages tests inject


class Cli:
    """Runs scripts/tenants.py in-process against the shared platform's state and the session's Supabase."""

    def __init__(self, platform: Platform, env: dict[str, str]) -> None:
        self.platform, self.env = platform, env

    @property
    def base(self) -> list[str]:
        return ["--state-dir", str(self.platform.paths.root), "--wrangler-state", str(self.platform.wrangler_state)]

    def __call__(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main([*argv, *self.base], env=self.env, stdin=io.StringIO(stdin), stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    def json(self, *argv: str) -> Any:
        code, out, err = self(*argv, "--json")
        assert code == 0, err
        return json.loads(out)


def _cleanup(cli: Cli, pg_cluster: Any) -> None:
    """Put the shared platform back: erase every cli- tenant everywhere, stop its Worker."""
    platform = cli.platform
    for trigger in FAILURE_TRIGGERS:
        platform.d1.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    with pg_cluster.connect() as conn:
        left = [
            r[0] for r in conn.execute("select tenant_id from public.tenants where tenant_id like %s", (PREFIX + "%",))
        ]
    for tenant_id in left:
        cli("delete", tenant_id, "--yes", "--quiet")
    with pg_cluster.connect() as conn:  # owner connection: whatever a failed erasure left behind
        conn.execute("delete from public.tenants where tenant_id like %s", (PREFIX + "%",))
    hosts = [r["domain"] for r in platform.rows("SELECT domain FROM tenant_domains WHERE tenant_id LIKE 'cli-%'")]
    platform.sql("DELETE FROM tenant_domains WHERE tenant_id LIKE 'cli-%'")
    platform.sql("DELETE FROM tenants WHERE tenant_id LIKE 'cli-%'")
    for host in hosts:
        platform.purge(host)
    for name in platform.registry.names():
        if name.startswith("cmgsite-" + PREFIX):
            platform.registry.remove(name)
            platform.registry.secrets_path(name).unlink(missing_ok=True)
    platform.host.sync()


@pytest.fixture
def cli(platform: Platform, supabase_stack: Any, pg_cluster: Any) -> Iterator[Cli]:
    env = {"SUPABASE_URL": supabase_stack.url, "SUPABASE_SERVICE_ROLE_KEY": supabase_stack.service_role_key}
    runner = Cli(platform, env)
    try:
        yield runner
    finally:
        _cleanup(runner, pg_cluster)


@pytest.fixture
def live(platform: Platform) -> Platform:
    return platform


def health(live: Platform, host: str) -> httpx.Response:
    return live.get(host, "/api/health")


def env_of(platform: Platform, script: str) -> SimpleNamespace:
    """What the namespace gives the script's Worker: its vars and its secrets."""
    spec = platform.registry.get(script)
    assert spec is not None, script
    return SimpleNamespace(**spec.vars, **platform.registry.secrets_of(script))


def script_starts(platform: Platform) -> list[str]:
    """Every tenant Worker (re)start the host reported, in order."""
    return [e["script"] for e in platform.host.events if e.get("event") == "script_ready"]


def starts_since(platform: Platform, before: int, expected: list[str]) -> list[str]:
    """The (re)starts after the first `before`; the host's event lines are read by a thread, so
    they may land a moment after the /sync reply the CLI waited for."""
    deadline = time.monotonic() + 10
    while len(script_starts(platform)) - before < len(expected) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # and nothing else restarts
    return script_starts(platform)[before:]


def running_scripts(platform: Platform) -> dict[str, dict[str, Any]]:
    return dict(platform.host.status()["scripts"])


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_lifecycle_add_suspend_resume_remove_over_http(cli: Cli, live: Platform) -> None:
    host = "cli-life.cozyartzmedia.com"
    script = "cmgsite-cli-life"
    assert health(live, host).status_code == 404
    others = running_scripts(live)
    starts = len(script_starts(live))
    code, out, err = cli(
        "add", "cli-life", "--name", "Life Co", "--type", "partner-subdomain", "--domain", host, "--tier", "growth"
    )
    assert code == 0, err
    # Answered at once, through the dispatcher, by the new script's own workerd.
    r = health(live, host)
    assert r.status_code == 200 and r.json()["tenant_id"] == "cli-life" and r.json()["tier"] == "growth"
    assert live.invocations()[-1]["script"] == script
    # Only the new script started; every other Worker kept running on its port.
    assert starts_since(live, starts, [script]) == [script]
    now = running_scripts(live)
    assert now[script]["state"] == "ready"
    assert {n: e for n, e in now.items() if n != script} == others
    env = env_of(cli.platform, script)
    assert env.SUPABASE_URL == cli.env["SUPABASE_URL"] and len(env.SESSION_SECRET) > 40
    assert env.TENANT_ID == "cli-life" and not hasattr(env, "TENANT_TYPE")

    assert cli("suspend", "cli-life")[0] == 0
    assert health(live, host).status_code == 403  # KV purged through the host: no stale route
    assert cli("resume", "cli-life")[0] == 0
    assert health(live, host).status_code == 200
    port = running_scripts(live)[script]["port"]
    assert listening(port)
    assert cli("remove", "cli-life")[0] == 0
    assert health(live, host).status_code == 404
    assert script not in cli.platform.registry.names()
    assert script not in running_scripts(live) and not listening(port)  # its workerd is gone
    assert {n: e for n, e in running_scripts(live).items()} == others
    assert cli("verify")[0] == 0
    # A removed tenant keeps its data and its domain: resume brings it back (Worker redeployed).
    code, _, err = cli(
        "add", "cli-life", "--name", "Life Co", "--type", "partner-subdomain", "--domain", host, "--tier", "growth"
    )
    assert code == 2 and "`resume cli-life`" in err
    assert cli("resume", "cli-life")[0] == 0
    assert health(live, host).json()["tenant_id"] == "cli-life"


def rows_everywhere(pg_cluster: Any, tenant_id: str) -> dict[str, int]:
    """Rows of a tenant in every Supabase table that has a tenant_id column (as the owner: no RLS)."""
    with pg_cluster.connect() as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "select table_name from information_schema.columns where table_schema = 'public'"
                " and column_name = 'tenant_id' and table_name in (select tablename from pg_tables where schemaname = 'public')"
            )
        ]
        return {
            t: conn.execute(f'select count(*) from public."{t}" where tenant_id = %s', (tenant_id,)).fetchone()[0]
            for t in tables
        }


def d1_rows(platform: Platform, tenant_id: str) -> int:
    db = platform.d1
    return (
        db.execute("select count(*) as n from tenants where tenant_id = ?", (tenant_id,))["results"][0]["n"]
        + db.execute("select count(*) as n from tenant_domains where tenant_id = ?", (tenant_id,))["results"][0]["n"]
    )


def test_crash_in_the_d1_step_then_rerun_converges_and_verify_reports_it(cli: Cli, live: Platform) -> None:
    host = "cli-crash.cozyartzmedia.com"
    db = cli.platform.d1
    db.execute(
        "CREATE TRIGGER cli_fail BEFORE INSERT ON tenants WHEN NEW.tenant_id = 'cli-crash'"
        " BEGIN SELECT RAISE(ABORT, 'injected D1 outage'); END"
    )
    code, _, err = cli(
        "add", "cli-crash", "--name", "Crash", "--type", "partner-subdomain", "--domain", host, "--tier", "starter"
    )
    assert code == 1 and "injected D1 outage" in err and "re-run" in err
    assert health(live, host).status_code == 404  # Supabase has it, D1 does not: not routed, never misrouted

    code, out, _ = cli("verify", "--json")
    assert code == 3
    drift = {d["tenant_id"]: d["problems"] for d in json.loads(out)["drift"]}
    assert list(drift) == ["cli-crash"] and "missing from D1" in " ".join(drift["cli-crash"])

    db.execute("DROP TRIGGER cli_fail")
    code, _, err = cli(
        "add", "cli-crash", "--name", "Crash", "--type", "partner-subdomain", "--domain", host, "--tier", "starter"
    )
    assert code == 0, err
    assert health(live, host).json()["tenant_id"] == "cli-crash"
    assert cli("verify")[0] == 0


def test_verify_repair_fixes_d1_and_kv_drift(cli: Cli, live: Platform) -> None:
    host = "cli-drift.cozyartzmedia.com"
    assert (
        cli(
            "add", "cli-drift", "--name", "Drift", "--type", "partner-subdomain", "--domain", host, "--tier", "starter"
        )[0]
        == 0
    )
    assert health(live, host).status_code == 200  # fills KV with the active route
    cli.platform.d1.execute(
        "UPDATE tenants SET status = 'active', subscription_tier = 'enterprise' WHERE tenant_id = 'cli-drift'"
    )
    cli.platform.d1.execute("DELETE FROM tenant_domains WHERE domain = 'partner1.cozyartzmedia.com'")
    report = json.loads(cli("verify", "--json")[1])
    problems = {d["tenant_id"]: " ".join(d["problems"]) for d in report["drift"]}
    assert "D1 subscription_tier is 'enterprise'" in problems["cli-drift"]
    assert "partner1.cozyartzmedia.com is in Supabase but not routed" in problems["partner1"]
    code, out, _ = cli("verify", "--repair", "--json")
    assert code == 0 and sorted(json.loads(out)["repaired"]) == ["cli-drift", "partner1"]
    assert health(live, "partner1.cozyartzmedia.com").status_code == 200
    assert health(live, host).json()["tier"] == "starter"


def test_export_holds_the_tenant_rows_and_nothing_of_others(cli: Cli, live: Platform, pg_cluster: Any) -> None:
    assert (
        cli(
            "add",
            "cli-exp",
            "--name",
            "Export Co",
            "--type",
            "custom-domain",
            "--domain",
            "exp.cli-test.example",
            "--tier",
            "growth",
        )[0]
        == 0
    )
    with pg_cluster.connect() as conn:
        conn.execute(
            "insert into public.profiles (id, tenant_id, tenant_role, email, display_name) values"
            " ('00000000-0000-4000-8000-0000000000e1', 'cli-exp', 'admin', 'ann@exp.example', 'Ann')"
        )
        conn.execute(
            "insert into public.tenant_usage (tenant_id, usage_type, period, usage_count, usage_limit)"
            " values ('cli-exp', 'ai_calls', '2026-11', 42, 250)"
        )
    code, out, err = cli("export", "cli-exp")
    assert code == 0, err
    data = json.loads(out)
    sb = data["supabase"]
    assert [p["email"] for p in sb["profiles"]] == ["ann@exp.example"]
    usage = {u["usage_type"]: u["usage_count"] for u in sb["tenant_usage"]}
    assert usage == {"ai_calls": 42, "domains": 1}  # the domains row is Supabase's own count (0005)
    assert [d["domain"] for d in sb["tenant_domains"]] == ["exp.cli-test.example"]
    assert sb["tenants"][0]["name"] == "Export Co"
    assert any(a["action"] == "tenant.added" for a in sb["audit_log"])
    assert data["d1"]["tenants"][0]["tenant_id"] == "cli-exp" and data["worker"]["deployed"] is True
    assert {"tenants", "profiles", "tenant_usage", "tenant_domains", "audit_log"} <= set(sb)
    for table, rows in sb.items():  # tables other features add are exported too, and hold only this tenant
        assert all(r["tenant_id"] == "cli-exp" for r in rows), table
    for other in ("cozyartz", "partner1", "partner-seo", "cozyartzmedia.com", "@partner1.example"):
        assert other not in out.replace('"PRIMARY_TENANT_ID"', "")
    assert "TENANT_CONTEXT_KEY" not in out
    target = cli.platform.paths.root / "exp.json"
    code, _, err = cli("export", "cli-exp", "--output", str(target))
    assert code == 0, err
    assert target.stat().st_mode & 0o777 == 0o600  # personal data: owner-only
    assert json.loads(target.read_text())["supabase"]["profiles"][0]["email"] == "ann@exp.example"
    assert f"wrote {target}" in err and "profiles 1" in err  # the path and the row counts
    target.write_text("an earlier export")
    code, _, err = cli("export", "cli-exp", "--output", str(target))
    assert code == 2 and "--force" in err and target.read_text() == "an earlier export"
    assert cli("export", "cli-exp", "--output", str(target), "--force")[0] == 0
    assert json.loads(target.read_text())["tenant_id"] == "cli-exp"


def test_delete_erases_every_row_and_leaves_an_audit_record_without_personal_data(
    cli: Cli,
    live: Platform,
    pg_cluster: Any,
    supabase_stack: Any,
    fake_oauth_server: tuple[FakeOAuth, str],
    tmp_path: Path,
) -> None:
    host = "cli-gone.example.org"
    script = "cmgsite-cli-gone"
    assert (
        cli("add", "cli-gone", "--name", "Gone Ltd", "--type", "custom-domain", "--domain", host, "--tier", "starter")[
            0
        ]
        == 0
    )
    with pg_cluster.connect() as conn:
        conn.execute(
            "insert into public.profiles (id, tenant_id, tenant_role, email, display_name) values"
            " ('00000000-0000-4000-8000-0000000000f1', 'cli-gone', 'client', 'bob@gone.example', 'Bob')"
        )
    assert health(live, host).status_code == 200
    # A real sign-in and sign-out: the tenant's Worker writes its AUTH_KV (a used OAuth state, a session epoch).
    fake, fake_url = fake_oauth_server
    client_id = f"github-cli-gone-{secrets.token_hex(3)}"
    fake.register_client(client_id, "cli-gone-client-secret", f"https://{host}/auth/callback")
    oauth = tmp_path / "cli-gone.secrets.env"
    oauth.write_text(
        "".join(
            f"{k}={v}\n"
            for k, v in {
                **provider_vars(fake_url),
                "GITHUB_CLIENT_ID": client_id,
                "GITHUB_CLIENT_SECRET": "cli-gone-client-secret",
            }.items()
        )
    )
    assert cli("secrets", "cli-gone", "--file", str(oauth))[0] == 0
    login = f"cli-gone-{secrets.token_hex(3)}"
    fake.add_user(login, f"{login}@gone.example", "Carol")
    browser = Browser(AuthWorld(live, fake, fake_url, supabase_stack, pg_cluster))
    assert browser.sign_in(host, "github", login).status_code == 302
    assert browser.request("POST", host, "/auth/logout", headers={"Origin": f"https://{host}"}).status_code < 400
    assert sum(rows_everywhere(pg_cluster, "cli-gone").values()) >= 5
    export = json.loads(cli("export", "cli-gone")[1])
    assert export["runtime"]["auth_kv_keys"] >= 1
    v3 = cli.platform.wrangler_state / "v3"
    kv_db = (
        v3
        / "kv"
        / "miniflare-KVNamespaceObject"
        / f"{miniflare_object_id('miniflare-KVNamespaceObject', 'auth-kv-' + script)}.sqlite"
    )
    assert kv_db.exists()
    others = {p for p in (v3 / "kv" / "miniflare-KVNamespaceObject").glob("*.sqlite") if p != kv_db}
    others |= {p for p in (v3 / "do").glob("*-UsageMeter") if p.name != f"{script}-UsageMeter"}

    code, _, err = cli("delete", "cli-gone")  # no terminal, no --yes
    assert code == 2 and "--yes" in err
    before = rows_everywhere(pg_cluster, "cli-gone")
    code, out, err = cli("delete", "cli-gone", "--dry-run", "--json")  # the real counts of what would go
    assert code == 0, err
    would = json.loads(out)["would_erase"]
    assert "erased" not in json.loads(out)
    assert (would["tenants"], would["tenant_domains"], would["d1.tenants"], would["d1.tenant_domains"]) == (1, 1, 1, 1)
    assert would["profiles"] == before["profiles"] >= 2
    assert would["audit_log"] == before["audit_log"] >= 2 and would["runtime.auth_kv"] >= 1
    assert rows_everywhere(pg_cluster, "cli-gone") == before and health(live, host).status_code == 200
    code, _, err = cli("delete", "cli-gone", "--yes")
    assert code == 0, err
    assert "export cli-gone" in err  # delete suggests keeping a copy first
    assert rows_everywhere(pg_cluster, "cli-gone") == {t: 0 for t in rows_everywhere(pg_cluster, "cli-gone")}
    assert d1_rows(cli.platform, "cli-gone") == 0
    assert script not in cli.platform.registry.names() and script not in running_scripts(live)
    assert not cli.platform.registry.secrets_path(script).exists()
    assert health(live, host).status_code == 404
    # Its AUTH_KV keys and Durable Objects are gone; every other script's storage is untouched.
    assert not kv_db.exists() and not (v3 / "kv" / f"auth-kv-{script}").exists()
    assert not (v3 / "do" / f"{script}-UsageMeter").exists()
    assert all(p.exists() for p in others)
    with pg_cluster.connect() as conn:
        audit = conn.execute(
            "select tenant_id, actor, action, target, details::text from public.audit_log"
            " where action = 'tenant.erased' and details::text like '%%profiles%%'"
            " order by id desc limit 1"
        ).fetchone()
    # A keyed fingerprint: HMAC under the operator's key (state dir), not a hash anyone can recompute.
    key = (cli.platform.paths.root / "secrets" / FINGERPRINT_KEY_FILE).read_text().strip().encode()
    assert audit is not None and audit[0] == "cozyartz" and audit[3] == erasure_fingerprint(key, "cli-gone")
    assert audit[3] != erasure_fingerprint(b"another operator's key, 32 bytes", "cli-gone")
    assert hashlib.sha256(b"cmgsite-tenant:cli-gone").hexdigest()[:32] not in audit[3]
    record = " ".join(str(x) for x in audit)
    for personal in ("cli-gone", "Gone Ltd", "bob@gone.example", "Bob", host):
        assert personal not in record
    assert cli("delete", "cli-gone", "--yes")[0] == 0  # re-run: already erased, still fine
    assert cli("verify")[0] == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            [
                "add",
                "cli-bad",
                "--name",
                "B",
                "--type",
                "custom-domain",
                "--domain",
                "not a domain",
                "--tier",
                "starter",
            ],
            "invalid domain",
        ),
        (
            [
                "add",
                "cli-bad",
                "--name",
                "B",
                "--type",
                "custom-domain",
                "--domain",
                "http://x.example/",
                "--tier",
                "starter",
            ],
            "invalid domain",
        ),
        (
            ["add", "cli-bad", "--name", "B", "--type", "custom-domain", "--domain", "10.0.0.1", "--tier", "starter"],
            "IP addresses",
        ),
        (
            [
                "add",
                "cli-bad",
                "--name",
                "B",
                "--type",
                "custom-domain",
                "--domain",
                "partner-seo.com",
                "--tier",
                "starter",
            ],
            "already held by tenant 'partner-seo'",
        ),
        (
            [
                "add",
                "cli-bad",
                "--name",
                "B",
                "--type",
                "partner-subdomain",
                "--domain",
                "PARTNER1.cozyartzmedia.com.",
                "--tier",
                "starter",
            ],
            "already held by tenant 'partner1'",
        ),
        (
            [
                "add",
                "cli-bad",
                "--name",
                "B",
                "--type",
                "custom-domain",
                "--domain",
                "ok.example",
                "--tier",
                "platinum",
            ],
            "unknown tier 'platinum'",
        ),
        (
            ["add", "cli-bad", "--name", "B", "--type", "reseller", "--domain", "ok.example", "--tier", "starter"],
            "unknown tenant type 'reseller'",
        ),
        (
            ["add", "cli-bad", "--name", "B", "--type", "primary", "--domain", "ok.example", "--tier", "starter"],
            "primary",
        ),
        (
            [
                "add",
                "cli-bad",
                "--name",
                "B",
                "--type",
                "partner-subdomain",
                "--domain",
                "ok.example",
                "--tier",
                "starter",
            ],
            "end in .cozyartzmedia.com",
        ),
        (
            ["add", "Bad_Id", "--name", "B", "--type", "custom-domain", "--domain", "ok.example", "--tier", "starter"],
            "invalid tenant id",
        ),
        (["remove", "cozyartz"], "primary tenant cannot be removed"),
        (["suspend", "cozyartz"], "primary tenant cannot be suspended"),
        (["delete", "cozyartz", "--yes"], "primary tenant cannot be deleted"),
        (["suspend", "cli-nobody"], "no tenant 'cli-nobody'"),
        (["set-tier", "partner1", "gold"], "unknown tier 'gold'"),
        (["add-domain", "partner-seo", "more.partner-seo.example"], "tier starter allows 1 domain"),
        (["add-domain", "partner1", "cozyartzmedia.com"], "belongs to the platform's primary tenant"),
        (["remove-domain", "partner1", "partner1.cozyartzmedia.com"], "primary domain"),
        (["deploy"], "name a tenant"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message_and_nothing_written(
    cli: Cli, pg_cluster: Any, argv: list[str], message: str
) -> None:
    before_d1 = cli.platform.d1.execute("select * from tenant_domains order by domain")["results"]
    with pg_cluster.connect() as conn:
        before = conn.execute("select tenant_id, status, subscription_tier from public.tenants order by 1").fetchall()
        domains_before = conn.execute("select domain, tenant_id from public.tenant_domains order by 1").fetchall()
    code, out, err = cli(*argv)
    assert code == 2, (out, err)
    assert message in err and "Traceback" not in err
    assert cli.platform.d1.execute("select * from tenant_domains order by domain")["results"] == before_d1
    with pg_cluster.connect() as conn:
        assert (
            conn.execute("select tenant_id, status, subscription_tier from public.tenants order by 1").fetchall()
            == before
        )
        assert (
            conn.execute("select domain, tenant_id from public.tenant_domains order by 1").fetchall() == domains_before
        )


def test_domain_quota_follows_the_tier(cli: Cli, live: Platform) -> None:
    assert (
        cli(
            "add",
            "cli-quota",
            "--name",
            "Quota",
            "--type",
            "custom-domain",
            "--domain",
            "q1.cli-test.example",
            "--tier",
            "starter",
        )[0]
        == 0
    )
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


def test_dry_run_prints_the_writes_and_changes_nothing(cli: Cli, live: Platform, pg_cluster: Any) -> None:
    code, out, err = cli(
        "add",
        "cli-dry",
        "--name",
        "Dry",
        "--type",
        "partner-subdomain",
        "--domain",
        "cli-dry.cozyartzmedia.com",
        "--tier",
        "starter",
        "--dry-run",
    )
    assert code == 0, err
    lines = out.splitlines()
    assert any(
        line.startswith("[dry-run] supabase: would POST ")
        and "/rest/v1/tenants?on_conflict=tenant_id" in line
        and '"tenant_id":"cli-dry"' in line
        for line in lines
    )
    assert any(
        "INSERT INTO tenants (tenant_id, name, type, status, subscription_tier, script_name, whitelabel_config) VALUES "
        "('cli-dry', 'Dry', 'partner-subdomain', 'active', 'starter', 'cmgsite-cli-dry'" in line
        for line in lines
    )
    assert "[dry-run] kv (local platform): would DELETE host:cli-dry.cozyartzmedia.com" in lines
    assert any(line.startswith("[dry-run] namespace (local ") and "deploy" in line for line in lines)
    assert "service_role" not in out and "eyJ" not in out  # no credentials in the plan
    with pg_cluster.connect() as conn:
        assert conn.execute("select count(*) from public.tenants where tenant_id = 'cli-dry'").fetchone()[0] == 0
    assert d1_rows(cli.platform, "cli-dry") == 0
    assert "cmgsite-cli-dry" not in cli.platform.registry.names()
    assert health(live, "cli-dry.cozyartzmedia.com").status_code == 404

    # Every line says what would happen; none says it happened.
    assert [line for line in lines[:-1] if ": would " not in line] == [] and lines[-1] == "dry run: nothing changed"
    steps = [line for line in err.splitlines() if line.startswith("  - ")]
    assert any(line.startswith("  - supabase: would register cli-dry") for line in steps)
    assert any(line.startswith("  - d1: would route cli-dry") for line in steps)
    assert any(line.startswith("  - kv: would purge 1 cached route") for line in steps)
    assert "ok: would add cli-dry" in err and "purged" not in out + err and "added cli-dry" not in err
    code, out, err = cli(
        "add",
        "cli-dry",
        "--name",
        "Dry",
        "--type",
        "partner-subdomain",
        "--domain",
        "cli-dry.cozyartzmedia.com",
        "--tier",
        "starter",
        "--dry-run",
        "--json",
    )
    assert code == 0, err
    result = json.loads(out)  # stdout is the JSON alone; the plan is in it (and on stderr)
    assert result["dry_run"] is True and "would_add" in result and "added" not in result
    assert any(line.startswith("[dry-run] supabase: would POST ") for line in result["plan"])
    assert err.rstrip().endswith("dry run: nothing changed")

    code, out, _ = cli("suspend", "partner1", "--dry-run")
    assert code == 0
    assert any(
        line.startswith("[dry-run] supabase: would PATCH ")
        and "tenant_id=eq.partner1" in line
        and '{"status":"suspended"}' in line
        for line in out.splitlines()
    )
    assert out.splitlines()[-1] == "dry run: nothing changed"
    assert health(live, "partner1.cozyartzmedia.com").status_code == 200


def test_list_and_show_as_json(cli: Cli) -> None:
    rows = cli.json("list")
    assert {"cozyartz", "partner1", "partner-seo"} <= {r["tenant_id"] for r in rows}
    shown = cli.json("show", "partner1")
    assert shown["tenant"]["domain"] == "partner1.cozyartzmedia.com" and shown["worker_deployed"] is True
    assert shown["d1_route"]["script_name"] == "cmgsite-partner-tenant"


@pytest.fixture
def partner1_restored(platform: Platform) -> Iterator[None]:
    """partner1's Worker as it was (the sign-in tests share it): spec and secrets put back, restarted."""
    script = "cmgsite-partner-tenant"
    spec, values = platform.registry.get(script), platform.registry.secrets_of(script)
    assert spec is not None
    try:
        yield
    finally:
        platform.deploy(spec, values)


def test_secrets_from_a_git_ignored_file_reach_the_worker(cli: Cli, tmp_path: Path, partner1_restored: None) -> None:
    secret_file = tmp_path / "partner1.secrets.env"
    short = tmp_path / "short.env"
    short.write_text("SESSION_SECRET=s3cr3t-value\n")  # the Worker would refuse to start with it
    code, _, err = cli("secrets", "partner1", "--file", str(short))
    assert code == 2 and "SESSION_SECRET is too short" in err and "s3cr3t-value" not in err
    value = "s3cr3t-value-" + "x" * 40
    secret_file.write_text(f"SESSION_SECRET={value}\nGITHUB_CLIENT_ID=abc\n")
    starts = len(script_starts(cli.platform))
    code, out, err = cli("secrets", "partner1", "--file", str(secret_file), "--json")
    assert code == 0, err
    assert json.loads(out)["secrets_set"] == ["GITHUB_CLIENT_ID", "SESSION_SECRET"]
    assert "s3cr3t-value" not in out + err
    env = env_of(cli.platform, "cmgsite-partner-tenant")
    assert env.SESSION_SECRET == value and env.TENANT_CONTEXT_KEY
    # The host restarted partner1's Worker with them (and only it) before the command returned.
    assert starts_since(cli.platform, starts, ["cmgsite-partner-tenant"]) == ["cmgsite-partner-tenant"]
    assert running_scripts(cli.platform)["cmgsite-partner-tenant"]["state"] == "ready"
    assert health(cli.platform, "partner1.cozyartzmedia.com").status_code == 200
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
    assert (
        cli(
            "add",
            "cli-ask",
            "--name",
            "Ask",
            "--type",
            "partner-subdomain",
            "--domain",
            "cli-ask.cozyartzmedia.com",
            "--tier",
            "starter",
        )[0]
        == 0
    )
    out, err = io.StringIO(), io.StringIO()
    base = cli.base
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


def test_remove_interrupted_in_d1_never_routes_to_a_missing_worker(cli: Cli, live: Platform) -> None:
    host = "cli-rm.cozyartzmedia.com"
    assert (
        cli("add", "cli-rm", "--name", "Rm", "--type", "partner-subdomain", "--domain", host, "--tier", "starter")[0]
        == 0
    )
    db = cli.platform.d1
    db.execute(
        "CREATE TRIGGER cli_rm_fail BEFORE DELETE ON tenant_domains WHEN OLD.tenant_id = 'cli-rm'"
        " BEGIN SELECT RAISE(ABORT, 'injected D1 outage'); END"
    )
    code, _, err = cli("remove", "cli-rm")
    assert code == 1 and "injected D1 outage" in err
    # Still routed (D1 did not change), so its Worker must still be there: served, never a 502.
    assert "cmgsite-cli-rm" in cli.platform.registry.names()
    assert running_scripts(live)["cmgsite-cli-rm"]["state"] == "ready"
    assert health(live, host).status_code == 200
    db.execute("DROP TRIGGER cli_rm_fail")
    assert cli("remove", "cli-rm")[0] == 0
    assert health(live, host).status_code == 404
    assert "cmgsite-cli-rm" not in running_scripts(live)
    assert cli("verify")[0] == 0


@pytest.mark.parametrize("url", ["https://abcd1234.supabase.co", "http://10.0.0.5:54321", "http://db.internal"])
def test_local_command_refuses_a_remote_supabase_from_the_environment(cli: Cli, pg_cluster: Any, url: str) -> None:
    # The operator has production credentials exported and forgets --remote: nothing may be written there.
    prod = Cli(cli.platform, {"SUPABASE_URL": url, "SUPABASE_SERVICE_ROLE_KEY": "prod-service-role-key"})
    code, out, err = prod(
        "add",
        "cli-prodleak",
        "--name",
        "Leak",
        "--type",
        "partner-subdomain",
        "--domain",
        "cli-prodleak.cozyartzmedia.com",
        "--tier",
        "starter",
    )
    assert code == 4 and "not at this machine" in err and "--remote" in err and "Traceback" not in err
    assert "prod-service-role-key" not in err + out
    with pg_cluster.connect() as conn:
        assert conn.execute("select 1 from public.tenants where tenant_id = 'cli-prodleak'").fetchone() is None
    code, _, err = prod("list")
    assert code == 4 and "not at this machine" in err


def test_local_command_accepts_a_loopback_supabase_from_the_environment(cli: Cli) -> None:
    assert cli.env["SUPABASE_URL"].startswith("http://127.0.0.1:")
    code, _, err = cli("list")
    assert code == 0, err


def audit_rows(pg_cluster: Any, tenant_id: str) -> int:
    with pg_cluster.connect() as conn:
        return int(
            conn.execute("select count(*) from public.audit_log where tenant_id = %s", (tenant_id,)).fetchone()[0]
        )


def test_add_of_an_existing_id_refuses_other_parameters_and_is_a_no_op_with_the_same(
    cli: Cli, live: Platform, pg_cluster: Any
) -> None:
    args = [
        "add",
        "cli-idem",
        "--name",
        "Idem Co",
        "--type",
        "partner-subdomain",
        "--domain",
        "cli-idem.cozyartzmedia.com",
        "--tier",
        "starter",
    ]
    assert cli(*args)[0] == 0
    rows, starts = audit_rows(pg_cluster, "cli-idem"), len(script_starts(live))

    def with_(**changes: str) -> list[str]:
        out = list(args)
        for flag, value in changes.items():
            out[out.index("--" + flag) + 1] = value
        return out

    code, _, err = cli(*with_(tier="growth", name="Idem Inc"))
    assert code == 2 and "already exists with other parameters" in err
    assert "`set-tier cli-idem growth`" in err and "`rename cli-idem 'Idem Inc'`" in err
    code, _, err = cli(*with_(domain="cli-idem2.cozyartzmedia.com"))
    assert code == 2 and "`add-domain cli-idem cli-idem2.cozyartzmedia.com`" in err
    code, _, err = cli(*with_(type="custom-domain", domain="idem.cli-test.example"))
    assert code == 2 and "type does not change" in err
    code, _, err = cli(*args, "--brand", "Idem Brand")
    assert code == 2 and "`branding cli-idem --brand-name 'Idem Brand'`" in err
    with pg_cluster.connect() as conn:
        assert conn.execute(
            "select name, subscription_tier from public.tenants where tenant_id = 'cli-idem'"
        ).fetchone() == ("Idem Co", "starter")

    code, _, err = cli(*args)  # the same add again: nothing to do, nothing written, no restart
    assert code == 0, err
    assert "nothing changed" in err
    assert audit_rows(pg_cluster, "cli-idem") == rows and len(script_starts(live)) == starts

    assert cli("suspend", "cli-idem")[0] == 0
    code, _, err = cli(*args)
    assert code == 2 and "`resume cli-idem`" in err
    assert cli("resume", "cli-idem")[0] == 0
    assert cli("rename", "cli-idem", "Idem Inc")[0] == 0
    assert cli.json("show", "cli-idem")["tenant"]["name"] == "Idem Inc"
    assert cli.platform.d1.execute("select name from tenants where tenant_id = 'cli-idem'")["results"] == [
        {"name": "Idem Inc"}
    ]


def test_list_shows_every_domain_routing_and_worker_and_flags_drift(cli: Cli, live: Platform) -> None:
    assert (
        cli(
            "add",
            "cli-list",
            "--name",
            "List",
            "--type",
            "custom-domain",
            "--domain",
            "list.cli-test.example",
            "--tier",
            "growth",
        )[0]
        == 0
    )
    assert cli("add-domain", "cli-list", "www.list.cli-test.example")[0] == 0
    code, out, err = cli("list")
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("cli-list "))
    assert (
        " present " in row and "list.cli-test.example (routed)" in row and "www.list.cli-test.example (routed)" in row
    )
    assert "DRIFT" not in row
    cli.platform.d1.execute("DELETE FROM tenant_domains WHERE domain = 'www.list.cli-test.example'")
    cli.platform.registry.remove("cmgsite-cli-list")  # the Worker gone behind the control plane's back
    code, out, _ = cli("list")
    row = next(line for line in out.splitlines() if line.startswith("cli-list "))
    assert " MISSING " in row and "DRIFT" in row and "www.list.cli-test.example (not routed)" in row
    assert "drift: cli-list: Worker cmgsite-cli-list missing" in out and "verify --repair" in out
    rows = {r["tenant_id"]: r for r in cli.json("list")}
    assert rows["cli-list"]["worker"] is False and rows["cli-list"]["drift"]
    assert {d["domain"]: d["routed"] for d in rows["cli-list"]["domains"]} == {
        "list.cli-test.example": True,
        "www.list.cli-test.example": False,
    }
    assert rows["partner1"]["drift"] == [] and rows["partner1"]["worker"] is True

    code, out, _ = cli("show", "cli-list")
    assert code == 0 and "worker:         cmgsite-cli-list (MISSING)" in out
    assert not out.lstrip().startswith("{")
    assert any(
        line.startswith("www.list.cli-test.example") and line.rstrip().endswith("no") for line in out.splitlines()
    )
    assert cli("verify", "--repair")[0] == 0


def test_export_never_writes_into_the_working_tree_or_a_missing_directory(cli: Cli) -> None:
    inside = Path(__file__).resolve().parent / "cli-export-in-tree.json"  # tracked territory, not ignored
    code, _, err = cli("export", "partner1", "--output", str(inside))
    assert code == 2 and "not git-ignored" in err and not inside.exists()
    code, _, err = cli("export", "partner1", "--output", "/nonexistent-dir/x.json")
    assert code == 2 and "does not exist" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_failed_read_says_nothing_changed_not_incomplete(cli: Cli) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    down = Cli(cli.platform, {"SUPABASE_URL": closed, "SUPABASE_SERVICE_ROLE_KEY": "k"})
    code, _, err = down("suspend", "partner1")
    assert code == 1 and "supabase unreachable" in err
    assert "nothing was changed" in err and "incomplete" not in err


def test_dry_runs_of_keys_check_backup_and_restore_read_as_what_would_happen(cli: Cli, tmp_path: Path) -> None:
    from tests.test_tenant_cli_units import dry_run_wording_problems

    assert (
        cli(
            "add",
            "cli-plan",
            "--name",
            "Plan",
            "--type",
            "partner-subdomain",
            "--domain",
            "cli-plan.cozyartzmedia.com",
            "--tier",
            "starter",
            "--no-deploy",
            "--quiet",
        )[0]
        == 0
    )
    archive = tmp_path / "plan.tar.gz"
    assert cli("backup", "cli-plan", "--output", str(archive), "--quiet")[0] == 0  # real: restore plans from it
    keys_before = cli.json("keys", "status")
    runs = [
        ("keys", "rotate", "data"),
        ("keys", "rotate", "context"),
        ("keys", "rotate", "session"),
        ("keys", "rotate", "jwt"),
        ("check",),
        ("backup", "cli-plan", "--output", str(tmp_path / "dry.tar.gz")),
        ("restore", str(archive)),
    ]
    for argv in runs:
        code, out, err = cli(*argv, "--dry-run")
        assert code in (0, 3), (argv, err)  # check: 3 when a tenant fails its checks
        assert "Traceback" not in err and "error:" not in err, (argv, err)
        assert dry_run_wording_problems(out, err) == [], (argv, out, err)
        said = out.splitlines() + err.splitlines()  # check prints its table, then the write it would make
        assert any(
            line.startswith("ok: would ")
            or line.startswith("[dry-run] supabase: would POST ")
            and "record_health_checks" in line
            for line in said
        ), (argv, out, err)
    assert not (tmp_path / "dry.tar.gz").exists()  # a dry backup writes no archive
    assert cli.json("keys", "status") == keys_before  # and no rotation changed a key

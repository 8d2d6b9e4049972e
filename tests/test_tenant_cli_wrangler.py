"""The CLI's own commands and SQL checked by the real tools: wrangler runs the D1 SQL the
control plane renders, and every subcommand answers --help."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import pytest

from controlplane.model import new_tenant
from controlplane.replica import RoutingReplica, Statement, render
from controlplane.wrangler import ROOT, d1_execute_command
from scripts.tenants import main, parser

ENV = {**os.environ, "CI": "true", "WRANGLER_SEND_METRICS": "false"}


class Recording:
    def __init__(self) -> None:
        self.batches: list[list[Statement]] = []

    async def query(self, statement: Statement) -> list[dict[str, Any]]:
        return []

    async def batch(self, statements: Sequence[Statement]) -> None:
        self.batches.append(list(statements))


def run_locally(argv: list[str], persist: Path) -> str:
    """The CLI's `d1 execute --remote` command, pointed at a local D1 copy instead."""
    i = argv.index("--remote")
    argv = argv[:i] + ["--local", "--persist-to", str(persist)] + argv[i + 1 :]
    proc = subprocess.run(argv, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


async def test_rendered_sql_runs_on_real_d1_and_quotes_hostile_values(d1_template: Path, tmp_path: Path) -> None:
    persist = tmp_path / "state"
    shutil.copytree(d1_template.parents[3], persist)
    rec = Recording()
    replica = RoutingReplica(rec)
    tenant, domain = new_tenant(
        "acme",
        "O'Brien; DROP TABLE tenants; --",
        "custom-domain",
        "shop.acme.example",
        "growth",
        brand_name='It\'s "quoted"',
    )
    await replica.replace_tenant(tenant, [domain])
    select = render(
        (
            "SELECT t.tenant_id, t.name, t.subscription_tier, json_extract(t.whitelabel_config, '$.brand_name') AS brand,"
            " d.domain FROM tenants t JOIN tenant_domains d ON d.tenant_id = t.tenant_id WHERE t.tenant_id = ?1",
            ("acme",),
        )
    )
    # One wrangler run per batch (each starts workerd): the batch, then a read-back in the same command.
    out = run_locally(d1_execute_command("; ".join(render(s) for s in rec.batches[0]) + "; " + select), persist)
    assert json.loads(out)[-1]["results"] == [
        {
            "tenant_id": "acme",
            "name": "O'Brien; DROP TABLE tenants; --",
            "subscription_tier": "growth",
            "brand": 'It\'s "quoted"',
            "domain": "shop.acme.example",
        }
    ]

    await replica.drop_tenant("acme")
    out = run_locally(
        d1_execute_command(
            "; ".join(render(s) for s in rec.batches[1])
            + "; SELECT count(*) AS n FROM tenants WHERE tenant_id = 'acme'"
        ),
        persist,
    )
    assert json.loads(out)[-1]["results"] == [{"n": 0}]


def test_render_refuses_what_it_cannot_quote() -> None:
    with pytest.raises(ValueError):
        render(("SELECT ?1", ("a\x00b",)))
    assert render(("SELECT ?1, ?2, ?3", ("it's", None, 3))) == "SELECT 'it''s', NULL, 3"


def commands() -> list[str]:
    sub = next(a for a in parser()._actions if a.dest == "command")
    return sorted(sub.choices)  # type: ignore[union-attr]


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert {
        "add",
        "list",
        "show",
        "suspend",
        "resume",
        "remove",
        "set-tier",
        "add-domain",
        "remove-domain",
        "domains",
        "deploy",
        "secrets",
        "verify",
        "export",
        "delete",
        "audit",
        "backup",
        "restore",
        "check",
        "rename",
        "branding",
        "keys",
    } == set(commands())
    for name in commands():
        for argv in [["domains", "status"], ["domains", "verify"]] if name == "domains" else [[name]]:
            assert main([*argv, "--help"]) == 0
            text = capsys.readouterr().out
            assert f"usage: tenants.py {' '.join(argv)}" in text and "--dry-run" in text and "exit codes" in text


def test_cli_runs_as_a_script_and_reports_missing_supabase(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "CLOUDFLARE_"))}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "tenants.py"), "list", "--state-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 4 and "SUPABASE_URL" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "tenants.py"), "frobnicate"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_unknown_flag_and_missing_arguments_are_usage_errors() -> None:
    err = io.StringIO()
    sys_stderr, sys.stderr = sys.stderr, err
    try:
        assert main(["add", "acme", "--name", "A"]) == 2
        assert main(["suspend"]) == 2
    finally:
        sys.stderr = sys_stderr
    assert "required" in err.getvalue()

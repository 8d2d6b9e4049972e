"""The tenant CLI end to end on the local platform, over real HTTP, against the real local Supabase."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

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

    assert cli("suspend", "cli-life")[0] == 0
    assert health(live, host).status_code == 403
    assert cli("resume", "cli-life")[0] == 0
    assert health(live, host).status_code == 200
    assert cli("remove", "cli-life")[0] == 0
    assert health(live, host).status_code == 404
    assert "cmgsite-cli-life" not in cli.platform.namespace.names()
    assert cli("verify")[0] == 0

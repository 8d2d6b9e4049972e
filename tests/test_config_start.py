"""A tenant Worker deployed without a required secret, on workerd: it refuses to start. Every
request gets a 503 that names no variable and no value (and no platform brand on its page); the
operator's log names the variable, once per isolate."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support import Platform
from tests.usage_support import usage_tenant


def _refusals(platform: Platform, name: str) -> int:
    return sum(1 for line in platform.log_text().splitlines() if '"event": "config_invalid"' in line and name in line)


def test_a_tenant_missing_a_secret_refuses_to_start_and_only_the_log_names_it(
    platform: Platform, pg_cluster: Any
) -> None:
    before = _refusals(platform, "SUPABASE_ANON_KEY")
    with usage_tenant(platform, pg_cluster, secrets_={"SUPABASE_ANON_KEY": ""}) as t:
        anon = platform.registry.secrets_of("cmgsite-custom-tenant")["SUPABASE_ANON_KEY"]
        for _ in range(3):
            api = httpx.get(platform.url + "/api/health", headers={"Host": t.host}, timeout=60)
            assert api.status_code == 503, api.text
            assert api.json()["error"]["code"] == "misconfigured"
            assert "SUPABASE" not in api.text and "SESSION" not in api.text
        # A signed-in user gets no further: nothing reads a session without the config.
        me = httpx.get(platform.url + "/api/me", headers={"Host": t.host, **t.session("admin")}, timeout=60)
        assert me.status_code == 503 and me.json()["error"]["code"] == "misconfigured"
        page = httpx.get(platform.url + "/auth/login/github", headers={"Host": t.host}, timeout=60)
        assert page.status_code == 503 and t.host in page.text
        assert "Cozyartz" not in page.text and "SUPABASE" not in page.text and anon not in page.text
        assert "set-cookie" not in page.headers  # no sign-in state handed out
        log = platform.log_text()
        assert _refusals(platform, "SUPABASE_ANON_KEY") == before + 1  # once per isolate, not per request
        assert t.session_secret not in log

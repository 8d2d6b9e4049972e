"""Usage tests on the shared workerd platform: a throwaway tenant per test.

Usage counters live in each tenant's UsageMeter Durable Object and are flushed to Supabase;
neither can be "put back" on a demo tenant. So metered tests get a tenant of their own, set
up as the control plane would (D1 route, Supabase rows, a script in the namespace with its
secrets) and torn down after (script removed, D1 and Supabase rows deleted, KV purged):

    with usage_tenant(platform, pg, tier="starter") as t:
        t.generate("Write a tagline")       # signed-in POST /api/ai/generate
        t.usage()["ai_calls"]["used"]

Sessions are issued with the tenant's own SESSION_SECRET (the Worker's sign-in issues the same
token; the OAuth round trip is tested in test_auth_*). Profiles exist in Supabase for them.
"""

from __future__ import annotations

import contextlib
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import httpx

from localrt.demo import DemoTenant, deploy_script
from localrt.devvars import read_dev_vars
from shared.session import issue_session
from tenant_worker.sessions import SESSION_COOKIE
from tests.support import Platform

SUPABASE_SECRETS = ("SUPABASE_URL", "SUPABASE_ANON_KEY", "SUPABASE_JWT_SECRET", "SUPABASE_SERVICE_ROLE_KEY")


@dataclass
class UsageTenant:
    platform: Platform
    pg: Any
    tenant_id: str
    host: str
    script: str
    tier: str
    session_secret: str
    users: dict[str, str] = field(default_factory=dict)  # role -> profile id

    def session(self, role: str = "client", tenant_id: str | None = None) -> dict[str, str]:
        token = issue_session(
            self.session_secret,
            tenant_id=tenant_id or self.tenant_id,  # type: ignore[arg-type]
            user_id=self.users[role],
            role=role,
            now=time.time(),
        )  # type: ignore[arg-type]
        return {"cookie": f"{SESSION_COOKIE}={token}"}

    def post(self, path: str, *, auth: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        headers = {"Host": self.host, **(self.session() if auth is None else auth), **kw.pop("headers", {})}
        return httpx.post(self.platform.url + path, headers=headers, timeout=60, **kw)

    def generate(
        self,
        prompt: str = "Write a tagline",
        *,
        auth: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> httpx.Response:
        return self.post("/api/ai/generate", json={"prompt": prompt, **extra}, auth=auth, headers=headers or {})

    def get(self, path: str, role: str = "client") -> httpx.Response:
        return httpx.get(self.platform.url + path, headers={"Host": self.host, **self.session(role)}, timeout=60)

    def usage(self, role: str = "client") -> dict[str, Any]:
        r = httpx.get(self.platform.url + "/api/usage", headers={"Host": self.host, **self.session(role)}, timeout=60)
        assert r.status_code == 200, r.text
        return dict(r.json()["usage"])

    def usage_rows(self) -> dict[tuple[str, str], int]:
        """(usage_type, period) -> usage_count in Supabase tenant_usage."""
        with self.pg.connect() as conn:
            rows = conn.execute(
                "select usage_type, period, usage_count from public.tenant_usage where tenant_id = %s",
                (self.tenant_id,),
            ).fetchall()
        return {(kind, period): count for kind, period, count in rows}

    def set_tier(self, tier: str) -> None:
        """What the control plane does on an upgrade: D1, then purge the route cache."""
        self.platform.sql("UPDATE tenants SET subscription_tier = ?1 WHERE tenant_id = ?2", tier, self.tenant_id)
        self.platform.purge(self.host)
        self.tier = tier


@contextlib.contextmanager
def usage_tenant(
    platform: Platform,
    pg: Any,
    tier: str = "starter",
    *,
    vars_: dict[str, str] | None = None,
    secrets_: dict[str, str] | None = None,
) -> Iterator[UsageTenant]:
    tag = secrets.token_hex(4)
    tenant_id, script, host = f"ut-{tag}", f"cmgsite-ut-{tag}", f"ut-{tag}.usage-test.example"
    session_secret = secrets.token_urlsafe(48)
    users = {"admin": str(uuid.uuid4()), "client": str(uuid.uuid4())}
    t = DemoTenant(tenant_id, f"Usage test {tag}", "custom-domain", tier, script, host, "custom", f"Usage {tag}")
    with pg.connect() as conn:
        conn.execute(
            "insert into public.tenants (tenant_id, name, domain, type, subscription_tier, script_name)"
            " values (%s, %s, %s, 'custom-domain', %s, %s)",
            (tenant_id, t.name, host, tier, script),
        )
        conn.execute(
            "insert into public.tenant_domains (tenant_id, domain, domain_type, ssl_status, dns_configured)"
            " values (%s, %s, 'custom', 'active', true)",
            (tenant_id, host),
        )
        for role, uid in users.items():
            conn.execute(
                "insert into public.profiles (id, tenant_id, tenant_role, email) values (%s, %s, %s, %s)",
                (uid, tenant_id, role, f"{role}-{tag}@usage-test.example"),
            )
    platform.sql(
        "INSERT INTO tenants (tenant_id, name, type, status, subscription_tier, script_name) VALUES (?1, ?2, 'custom-domain', 'active', ?3, ?4)",
        tenant_id,
        t.name,
        tier,
        script,
    )
    platform.sql(
        "INSERT INTO tenant_domains (domain, tenant_id, domain_type, ssl_status, dns_configured)"
        " VALUES (?1, ?2, 'custom', 'active', 1)",
        host,
        tenant_id,
    )
    supabase = {k: v for k, v in platform.registry.secrets_of("cmgsite-custom-tenant").items() if k in SUPABASE_SECRETS}
    master = read_dev_vars(platform.paths.dispatcher_secrets)["CONTEXT_SIGNING_SECRET"]
    deploy_script(
        platform.registry, t, master, {**supabase, "SESSION_SECRET": session_secret, **(secrets_ or {})}, vars_ or {}
    )
    try:
        state = platform.host.sync()
        assert state.get(script) == "ready", state
        yield UsageTenant(platform, pg, tenant_id, host, script, tier, session_secret, users)
    finally:
        platform.remove(script)
        platform.sql("DELETE FROM tenant_domains WHERE tenant_id = ?1", tenant_id)
        platform.sql("DELETE FROM tenants WHERE tenant_id = ?1", tenant_id)
        platform.purge(host)
        with pg.connect() as conn:
            conn.execute("delete from public.tenants where tenant_id = %s", (tenant_id,))  # cascades

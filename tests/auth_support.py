"""Sign-in test world: the local platform wired to the fake OAuth server and the local Supabase.

    world = AuthWorld(...)                      # built by the `auth_world` fixture (module scope)
    b = Browser(world)                          # one browser: its own cookie jar per host
    r = b.sign_in("partner1.cozyartzmedia.com", "github", "alice")
    b.get(host, "/api/me").json()

Cookies are kept by hand because they are `Secure` and the test server speaks plain HTTP
on loopback (a real browser would only ever see them over https).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest

from localrt.demo import DEMO_TENANTS, DemoTenant
from localrt.namespace import NamespaceRegistry
from tests.fake_oauth import FakeOAuth
from tests.support import Platform

TEST_EMAIL_DOMAIN = "auth-test.example"  # every user these tests create; cleanup keys on it
HOSTS = {t.tenant_id: t.domain for t in DEMO_TENANTS}
SEEDED = {  # seed.sql users: email -> (tenant, role, id)
    "root@cozyartzmedia.com": ("cozyartz", "super_admin", "00000000-0000-4000-8000-000000000001"),
    "admin@cozyartzmedia.com": ("cozyartz", "admin", "00000000-0000-4000-8000-000000000002"),
    "client@cozyartzmedia.com": ("cozyartz", "client", "00000000-0000-4000-8000-000000000003"),
    "admin@partner1.example": ("partner1", "admin", "00000000-0000-4000-8000-000000000011"),
    "client@partner1.example": ("partner1", "client", "00000000-0000-4000-8000-000000000012"),
    "admin@partner-seo.example": ("partner-seo", "admin", "00000000-0000-4000-8000-000000000021"),
    "client@partner-seo.example": ("partner-seo", "client", "00000000-0000-4000-8000-000000000022"),
}


@dataclass
class AuthWorld:
    platform: Platform
    fake: FakeOAuth
    fake_url: str
    stack: Any
    pg: Any
    started_at: float = field(default_factory=time.time)

    @property
    def url(self) -> str:
        return self.platform.url

    def secrets_of(self, tenant_id: str) -> dict[str, str]:
        return self.platform.registry.secrets_of(demo(tenant_id).script_name)

    def set_secret(self, tenant_id: str, name: str, value: str | None) -> None:
        """Change one tenant secret and restart that tenant's Worker (what `wrangler secret put` does)."""
        self.platform.set_secret(demo(tenant_id).script_name, name, value)

    def new_user(self, prefix: str = "user", *, email_domain: str = TEST_EMAIL_DOMAIN, **kw: Any) -> str:
        login = f"{prefix}-{secrets.token_hex(4)}"
        self.fake.add_user(login, kw.pop("email", f"{login}@{email_domain}"), f"Test {login}", **kw)
        return login

    def profile_rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with self.pg.connect() as conn:
            return conn.execute(sql, args).fetchall()


class Browser:
    """A browser: per-host cookie jar, never follows redirects by itself."""

    def __init__(self, world: AuthWorld) -> None:
        self.world = world
        self.jar: dict[str, dict[str, str]] = {}
        self.http = httpx.Client(timeout=20, follow_redirects=False)

    def cookies(self, host: str) -> dict[str, str]:
        return self.jar.setdefault(host, {})

    def _keep(self, host: str, resp: httpx.Response) -> None:
        for raw in resp.headers.get_list("set-cookie"):
            name, _, rest = raw.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in raw or not value:
                self.cookies(host).pop(name, None)
            else:
                self.cookies(host)[name] = value

    def request(self, method: str, host: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Host": host, **kw.pop("headers", {})}
        jar = self.cookies(host)
        if jar and "cookie" not in {k.lower() for k in headers}:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        resp = self.http.request(method, self.world.url + path, headers=headers, **kw)
        self._keep(host, resp)
        return resp

    def get(self, host: str, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", host, path, **kw)

    def start(self, host: str, provider: str, next_path: str | None = None) -> str:
        """GET /auth/login/<provider>: the provider URL the browser is sent to."""
        q = f"?{urlencode({'next': next_path})}" if next_path is not None else ""
        r = self.get(host, f"/auth/login/{provider}{q}")
        assert r.status_code == 302, r.text
        return r.headers["location"]

    def at_provider(self, authorize_url: str, provider: str, login: str) -> str:
        """The user approves at the (fake) provider: the callback URL it redirects to."""
        param = "login" if provider == "github" else "login_hint"
        r = self.http.get(authorize_url + "&" + urlencode({param: login}))
        assert r.status_code == 302, r.text
        return r.headers["location"]

    def callback(self, host: str, callback_url: str) -> httpx.Response:
        parts = urlsplit(callback_url)
        assert (parts.scheme, parts.netloc, parts.path) == ("https", host, "/auth/callback"), callback_url
        return self.get(host, f"/auth/callback?{parts.query}")

    def sign_in(self, host: str, provider: str, login: str, next_path: str | None = None) -> httpx.Response:
        url = self.start(host, provider, next_path)
        return self.callback(host, self.at_provider(url, provider, login))


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


def configure_oauth(registry: NamespaceRegistry, fake: FakeOAuth) -> None:
    """Per-tenant OAuth apps at the fake providers, as `scripts/oauth_setup.py` registers real ones."""
    for t in DEMO_TENANTS:
        values = registry.secrets_of(t.script_name)
        for provider in ("github", "google"):
            cid, csecret = f"{provider}-{t.tenant_id}-{secrets.token_hex(3)}", secrets.token_urlsafe(24)
            values[f"{provider.upper()}_CLIENT_ID"], values[f"{provider.upper()}_CLIENT_SECRET"] = cid, csecret
            fake.register_client(cid, csecret, f"https://{t.domain}/auth/callback")
        spec = registry.get(t.script_name)
        assert spec is not None
        registry.deploy(spec, values)


def provider_vars(fake_url: str) -> dict[str, str]:
    return {
        "OAUTH_GITHUB_AUTHORIZE_URL": f"{fake_url}/github/login/oauth/authorize",
        "OAUTH_GITHUB_TOKEN_URL": f"{fake_url}/github/login/oauth/access_token",
        "OAUTH_GITHUB_API_URL": f"{fake_url}/github/api",
        "OAUTH_GOOGLE_AUTHORIZE_URL": f"{fake_url}/google/o/oauth2/v2/auth",
        "OAUTH_GOOGLE_TOKEN_URL": f"{fake_url}/google/token",
        "OAUTH_GOOGLE_JWKS_URL": f"{fake_url}/google/oauth2/v3/certs",
        "OAUTH_TIMEOUT_SECONDS": "1",
    }


@pytest.fixture(scope="module")
def auth_world(
    platform: Platform, fake_oauth_server: tuple[FakeOAuth, str], supabase_stack: Any, pg_cluster: Any
) -> Iterator[AuthWorld]:
    fake, fake_url = fake_oauth_server
    world = AuthWorld(platform, fake, fake_url, supabase_stack, pg_cluster)
    try:
        yield world
    finally:
        _cleanup(world)


def _cleanup(world: AuthWorld) -> None:
    """Put the shared database back: drop profiles these tests created, restore seeded roles."""
    seeded = [v[2] for v in SEEDED.values()]
    with world.pg.connect() as conn:
        conn.execute(
            "delete from public.profiles where email like %s and not (id = any(%s::uuid[]))",
            (f"%@{TEST_EMAIL_DOMAIN}", seeded),
        )
        for _email, (_tenant, role, uid) in SEEDED.items():
            conn.execute(
                "update public.profiles set tenant_role = %s where id = %s and tenant_role <> %s", (role, uid, role)
            )


@pytest.fixture
def fake(auth_world: AuthWorld) -> Iterator[FakeOAuth]:
    auth_world.fake.reset_knobs()
    yield auth_world.fake
    auth_world.fake.reset_knobs()


def demo(tenant_id: str) -> DemoTenant:
    return next(t for t in DEMO_TENANTS if t.tenant_id == tenant_id)

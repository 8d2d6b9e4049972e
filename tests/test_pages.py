"""The tenant's own pages: a branded home with sign-in, and white-label error pages."""
from __future__ import annotations

import httpx

from tests.auth_support import HOSTS, AuthWorld, Browser
from tests.fake_oauth import FakeOAuth
from tests.support import LiveServer


def test_home_offers_sign_in_under_the_tenants_brand(auth_world: AuthWorld) -> None:
    r = httpx.get(auth_world.live.url + "/", headers={"Host": HOSTS["partner-seo"]})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "Partner SEO" in r.text and 'href="/auth/login/github"' in r.text and 'href="/auth/login/google"' in r.text
    assert "Cozyartz" not in r.text  # white-label: the platform's name never shows


def test_home_shows_the_signed_in_user(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    b = Browser(auth_world)
    login = auth_world.new_user("home")
    b.sign_in(HOSTS["partner1"], "github", login)
    r = b.get(HOSTS["partner1"], "/")
    assert r.status_code == 200 and "Signed in as" in r.text and "Sign out" in r.text


def test_not_found_page_is_white_label(auth_world: AuthWorld) -> None:
    r = httpx.get(auth_world.live.url + "/no/such/page", headers={"Host": HOSTS["partner-seo"]})
    assert r.status_code == 404 and "Partner SEO" in r.text and "Cozyartz" not in r.text
    assert r.headers["x-request-id"] in r.text


def test_tenant_written_branding_cannot_inject_markup(auth_world: AuthWorld) -> None:
    with auth_world.pg.connect() as conn:
        old = conn.execute("select whitelabel_config from public.tenants where tenant_id = 'partner1'").fetchone()[0]
        conn.execute("update public.tenants set whitelabel_config = %s::jsonb where tenant_id = 'partner1'",
                     ('{"brand_name": "<script>alert(1)</script>", "primary_color": "red}</style><script>x()</script>"}',))
    try:
        import tenant_worker.auth

        tenant_worker.auth._brands.clear()  # the brand is cached per isolate for 5 minutes
        for path in ("/", "/missing"):
            r = httpx.get(auth_world.live.url + path, headers={"Host": HOSTS["partner1"]})
            assert "<script>" not in r.text and "&lt;script&gt;" in r.text
    finally:
        with auth_world.pg.connect() as conn:
            conn.execute("update public.tenants set whitelabel_config = %s where tenant_id = 'partner1'",
                         (__import__("json").dumps(old),))
        auth_world.platform.restart_isolates()


def test_pages_without_data_service_fall_back_to_the_host(live: LiveServer) -> None:
    # The plain platform fixture has no Supabase secrets: pages still render (branded by host,
    # or by the brand this process already cached for the tenant).
    r = httpx.get(live.url + "/", headers={"Host": "partner-seo.com"})
    assert r.status_code == 200 and "/auth/login/github" in r.text and "Cozyartz" not in r.text

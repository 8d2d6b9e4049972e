"""The tenant's own pages: a branded home with sign-in, and white-label error pages."""

from __future__ import annotations

import json
import secrets

import httpx

from tests.auth_support import HOSTS, AuthWorld, Browser
from tests.fake_oauth import FakeOAuth
from tests.support import free_port


def test_home_offers_sign_in_under_the_tenants_brand(auth_world: AuthWorld) -> None:
    r = httpx.get(auth_world.url + "/", headers={"Host": HOSTS["partner-seo"]})
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
    r = httpx.get(auth_world.url + "/no/such/page", headers={"Host": HOSTS["partner-seo"]})
    assert r.status_code == 404 and "Partner SEO" in r.text and "Cozyartz" not in r.text
    assert r.headers["x-request-id"] in r.text


def test_tenant_written_branding_cannot_inject_markup(auth_world: AuthWorld) -> None:
    with auth_world.pg.connect() as conn:
        old = conn.execute("select whitelabel_config from public.tenants where tenant_id = 'partner1'").fetchone()[0]
        conn.execute(
            "update public.tenants set whitelabel_config = %s::jsonb where tenant_id = 'partner1'",
            ('{"brand_name": "<script>alert(1)</script>", "primary_color": "red}</style><script>x()</script>"}',),
        )
    try:
        # The brand is cached per isolate for 5 minutes: a secret change restarts the tenant's Worker.
        auth_world.set_secret("partner1", "TEST_RESTART", secrets.token_hex(4))
        for path in ("/", "/missing"):
            r = httpx.get(auth_world.url + path, headers={"Host": HOSTS["partner1"]})
            assert "<script>" not in r.text and "&lt;script&gt;" in r.text
    finally:
        with auth_world.pg.connect() as conn:
            conn.execute(
                "update public.tenants set whitelabel_config = %s where tenant_id = 'partner1'", (json.dumps(old),)
            )
        auth_world.set_secret("partner1", "TEST_RESTART", None)  # original secrets, a fresh brand cache
    assert "Partner One" in httpx.get(auth_world.url + "/", headers={"Host": HOSTS["partner1"]}).text


def test_pages_without_data_service_fall_back_to_the_host(auth_world: AuthWorld) -> None:
    # With its data service unreachable (and a fresh isolate, no cached brand), the home page
    # still renders, branded by the host, and never with the platform's name.
    saved = auth_world.secrets_of("partner-seo")["SUPABASE_URL"]
    auth_world.set_secret("partner-seo", "SUPABASE_URL", f"http://127.0.0.1:{free_port()}")
    try:
        r = httpx.get(auth_world.url + "/", headers={"Host": HOSTS["partner-seo"]})
        assert r.status_code == 200 and "/auth/login/github" in r.text
        assert "partner-seo.com" in r.text and "Cozyartz" not in r.text and "Partner SEO" not in r.text
    finally:
        auth_world.set_secret("partner-seo", "SUPABASE_URL", saved)

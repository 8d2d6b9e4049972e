"""Sign-in end to end over HTTP: each demo tenant, each provider, through the fake providers
and the real local Supabase (PostgREST + RLS), ending in /api/me and tenant-scoped data."""

from __future__ import annotations

import pytest

from tests.auth_support import HOSTS, SEEDED, AuthWorld, Browser, query_of
from tests.fake_oauth import FakeOAuth

SESSION = "__Host-cmg_session"
NONCE = "__Host-cmg_oauth"


@pytest.mark.parametrize("provider", ["github", "google"])
@pytest.mark.parametrize("tenant", list(HOSTS))
def test_new_user_signs_in_and_sees_only_their_tenant(
    auth_world: AuthWorld, fake: FakeOAuth, tenant: str, provider: str
) -> None:
    host = HOSTS[tenant]
    login = auth_world.new_user(tenant)
    b = Browser(auth_world)

    r = b.sign_in(host, provider, login, next_path="/dashboard?tab=1")
    assert r.status_code == 302 and r.headers["location"] == "/dashboard?tab=1", r.text
    set_cookies = r.headers.get_list("set-cookie")
    session_cookie = next(c for c in set_cookies if c.startswith(SESSION + "="))
    for attr in ("HttpOnly", "Secure", "SameSite=Lax", "Path=/"):
        assert attr in session_cookie
    assert "Domain" not in session_cookie  # host-only
    assert NONCE not in b.cookies(host)  # the one-time nonce cookie is cleared

    me = b.get(host, "/api/me")
    assert me.status_code == 200, me.text
    body = me.json()
    assert (body["tenant_id"], body["role"], body["host"]) == (tenant, "client", host)
    assert body["email"] == f"{login}@auth-test.example"

    # A real PostgREST query under RLS with the tenant JWT minted from this session.
    domains = b.get(host, "/api/domains")
    assert domains.status_code == 200, domains.text
    assert [d["domain"] for d in domains.json()["domains"]] == [host]
    tenant_rec = b.get(host, "/api/tenant").json()
    assert tenant_rec["tenant"]["tenant_id"] == tenant and tenant_rec["branding"]["brand_name"]

    rows = auth_world.profile_rows("select tenant_id, tenant_role from public.profiles where id = %s", body["user_id"])
    assert rows == [(tenant, "client")]
    audit = auth_world.profile_rows(
        "select action, details->>'provider' from public.audit_log where tenant_id = %s and actor = %s",
        tenant,
        body["user_id"],
    )
    assert ("auth.signin.success", provider) in audit


@pytest.mark.parametrize("provider", ["github", "google"])
@pytest.mark.parametrize("email", ["admin@partner1.example", "admin@partner-seo.example", "admin@cozyartzmedia.com"])
def test_seeded_admin_signs_in_with_their_role_and_lists_only_their_profiles(
    auth_world: AuthWorld, fake: FakeOAuth, email: str, provider: str
) -> None:
    tenant, role, uid = SEEDED[email]
    host = HOSTS[tenant]
    login = auth_world.new_user("admin", email=email)
    b = Browser(auth_world)
    assert b.sign_in(host, provider, login).status_code == 302
    me = b.get(host, "/api/me").json()
    assert (me["user_id"], me["tenant_id"], me["role"]) == (uid, tenant, role)
    profiles = b.get(host, "/api/profiles")
    assert profiles.status_code == 200, profiles.text
    rows = profiles.json()["profiles"]
    assert rows and {p["tenant_id"] for p in rows} == {tenant}
    assert uid in {p["id"] for p in rows}
    audit = b.get(host, "/api/audit")
    assert audit.status_code == 200 and audit.json()["entries"]
    assert all(e["action"] for e in audit.json()["entries"])


def test_same_person_in_two_tenants_gets_two_separate_profiles(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    login = auth_world.new_user("both")
    b = Browser(auth_world)
    b.sign_in(HOSTS["partner1"], "github", login)
    b.sign_in(HOSTS["partner-seo"], "google", login)
    a = b.get(HOSTS["partner1"], "/api/me").json()
    c = b.get(HOSTS["partner-seo"], "/api/me").json()
    assert a["tenant_id"] == "partner1" and c["tenant_id"] == "partner-seo"
    assert a["user_id"] != c["user_id"]


def test_second_sign_in_reuses_the_profile(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    login = auth_world.new_user("again")
    host = HOSTS["partner1"]
    b = Browser(auth_world)
    b.sign_in(host, "github", login)
    first = b.get(host, "/api/me").json()["user_id"]
    b2 = Browser(auth_world)
    b2.sign_in(host, "google", login)  # same verified email, other provider
    assert b2.get(host, "/api/me").json()["user_id"] == first
    n = auth_world.profile_rows("select count(*) from public.profiles where id = %s", first)
    assert n == [(1,)]


def test_github_form_encoded_token_response_works(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    fake.knobs.github_token_format = "form"
    login = auth_world.new_user("form")
    b = Browser(auth_world)
    assert b.sign_in(HOSTS["partner-seo"], "github", login).status_code == 302
    assert b.get(HOSTS["partner-seo"], "/api/me").json()["role"] == "client"


def test_login_redirect_carries_pkce_state_and_tenant_client(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    b = Browser(auth_world)
    for provider in ("github", "google"):
        url = b.start(HOSTS["partner1"], provider)
        q = query_of(url)
        assert q["client_id"] == auth_world.secrets_of("partner1")[f"{provider.upper()}_CLIENT_ID"]
        assert q["redirect_uri"] == "https://partner1.cozyartzmedia.com/auth/callback"
        assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
        assert len(q["state"]) > 100
        if provider == "google":
            assert q["nonce"] and "openid" in q["scope"]
        assert "__Host-cmg_oauth" in b.cookies(HOSTS["partner1"])


def test_logout_clears_the_session_and_signs_out_everywhere(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    host = HOSTS["cozyartz"]
    login = auth_world.new_user("bye")
    b = Browser(auth_world)
    b.sign_in(host, "github", login)
    stolen = dict(b.cookies(host))  # a copy of the cookie someone else kept
    r = b.request("POST", host, "/auth/logout", headers={"Origin": f"https://{host}"})
    assert r.status_code == 303 and SESSION not in b.cookies(host)
    assert b.get(host, "/api/me").status_code == 401
    replay = b.get(host, "/api/me", headers={"Cookie": f"{SESSION}={stolen[SESSION]}"})
    assert replay.status_code == 401


def test_me_without_session_is_401_json(auth_world: AuthWorld) -> None:
    r = Browser(auth_world).get(HOSTS["partner1"], "/api/me")
    assert r.status_code == 401
    err = r.json()["error"]
    assert err["code"] == "unauthenticated" and err["request_id"] == r.headers["x-request-id"]


def test_google_key_rotation_refetches_the_jwks_once(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    """Google rotates its signing key: the Worker's cached JWKS lacks the new kid, refetches once, signs
    the user in; a kid nobody publishes costs exactly one refetch and is refused."""
    host = HOSTS["partner-seo"]
    login = auth_world.new_user("rotation")
    assert Browser(auth_world).sign_in(host, "google", login).status_code == 302  # the Worker holds the keys now
    before = fake.jwks_requests
    assert Browser(auth_world).sign_in(host, "google", login).status_code == 302
    assert fake.jwks_requests == before  # served from the isolate's cache

    fake.rotate_key()
    b = Browser(auth_world)
    r = b.sign_in(host, "google", login)
    assert r.status_code == 302 and r.headers["location"] == "/", r.text
    assert fake.jwks_requests == before + 1
    assert b.get(host, "/api/me").json()["email"] == f"{login}@auth-test.example"

    fake.knobs.id_token_kid = "fake-unpublished"
    refused = Browser(auth_world)
    r = refused.sign_in(host, "google", login)
    assert r.status_code == 502 and SESSION not in refused.cookies(host)
    assert fake.jwks_requests == before + 2

"""Google sign-in against a provider nobody here wrote: npm `oidc-provider` as the local "Google"
(tests/oidc_google.mjs), through a tenant Worker on workerd and the real local Supabase.

The Worker's endpoints come from the provider's discovery document; the provider publishes its
own JWKS, signs its own RS256 ID tokens, enforces PKCE S256 and echoes the nonce, so each of
those meets a real peer rather than tests/fake_oauth.py (which the other sign-in tests use)."""

from __future__ import annotations

import secrets
from typing import Any, Iterator

import httpx
import pytest

from shared.oauth import GOOGLE_ISSUERS
from tests.auth_support import AuthWorld, Browser, query_of
from tests.fake_oauth import FakeOAuth
from tests.oidc_support import ACCOUNT, LocalGoogle
from tests.support import Platform
from tests.usage_support import UsageTenant, usage_tenant

SESSION = "__Host-cmg_session"


@pytest.fixture(scope="module")
def google_tenant(platform: Platform, pg_cluster: Any, local_google: LocalGoogle) -> Iterator[UsageTenant]:
    """A throwaway tenant whose Google app is registered at the local provider."""
    client_id, client_secret = f"oidc-{secrets.token_hex(6)}.apps.local", secrets.token_urlsafe(32)
    with usage_tenant(
        platform,
        pg_cluster,
        vars_=local_google.worker_vars(),
        secrets_={"GOOGLE_CLIENT_ID": client_id, "GOOGLE_CLIENT_SECRET": client_secret},
    ) as t:
        local_google.register_client(client_id, client_secret, f"https://{t.host}/auth/callback")
        yield t


@pytest.fixture
def browser(
    platform: Platform, fake_oauth_server: tuple[FakeOAuth, str], supabase_stack: Any, pg_cluster: Any
) -> Browser:
    return Browser(AuthWorld(platform, fake_oauth_server[0], fake_oauth_server[1], supabase_stack, pg_cluster))


def test_discovery_names_what_the_worker_relies_on(local_google: LocalGoogle) -> None:
    d = local_google.discovery
    assert d["issuer"] in GOOGLE_ISSUERS  # the local "Google" is mapped to Google's issuer (test wiring)
    assert "S256" in d["code_challenge_methods_supported"] and "RS256" in d["id_token_signing_alg_values_supported"]
    assert "client_secret_post" in d["token_endpoint_auth_methods_supported"]
    keys = httpx.get(d["jwks_uri"], timeout=10).json()["keys"]
    assert [k["kty"] for k in keys] == ["RSA"] and "d" not in keys[0]  # public halves only


def test_google_sign_in_against_oidc_provider(
    local_google: LocalGoogle, google_tenant: UsageTenant, browser: Browser, pg_cluster: Any
) -> None:
    host = google_tenant.host
    authorize = browser.start(host, "google", "/welcome")
    q = query_of(authorize)
    assert authorize.startswith(local_google.discovery["authorization_endpoint"] + "?")
    assert q["code_challenge_method"] == "S256" and q["nonce"] and q["response_type"] == "code"

    back = local_google.approve(authorize, redirect_prefix=f"https://{host}/auth/callback")
    r = browser.callback(host, back)
    assert r.status_code == 302 and r.headers["location"] == "/welcome", (r.status_code, r.text, local_google.output)
    assert any(c.startswith(SESSION + "=") for c in r.headers.get_list("set-cookie"))

    me = browser.get(host, "/api/me")
    assert me.status_code == 200, me.text
    body = me.json()
    assert (body["tenant_id"], body["role"], body["email"]) == (google_tenant.tenant_id, "client", ACCOUNT["email"])
    with pg_cluster.connect() as conn:
        rows = conn.execute(
            "select tenant_id, email, display_name from public.profiles where id = %s", (body["user_id"],)
        ).fetchall()
        audit = conn.execute(
            "select details->>'provider' from public.audit_log where tenant_id = %s"
            " and action = 'auth.signin.success' and actor = %s",
            (google_tenant.tenant_id, body["user_id"]),
        ).fetchall()
    assert rows == [(google_tenant.tenant_id, ACCOUNT["email"], ACCOUNT["name"])]
    assert audit == [("google",)]


def test_a_code_from_another_sign_in_fails_the_providers_pkce_check(
    local_google: LocalGoogle, google_tenant: UsageTenant, browser: Browser, pg_cluster: Any
) -> None:
    """Code injection: a code issued for one sign-in, delivered to a later one of the same browser
    (its state and cookie are genuine). The Worker sends that sign-in's PKCE verifier, which the
    real provider refuses for the code: no session."""
    host = google_tenant.host
    first = local_google.approve(browser.start(host, "google"), redirect_prefix=f"https://{host}/auth/callback")
    second = browser.start(host, "google")  # new nonce cookie, new state, new verifier
    injected = f"https://{host}/auth/callback?code={query_of(first)['code']}&state={query_of(second)['state']}"
    r = browser.callback(host, injected)
    assert r.status_code == 502, (r.status_code, r.text)
    assert not any(c.startswith(SESSION + "=") and "Max-Age=0" not in c for c in r.headers.get_list("set-cookie"))
    assert browser.get(host, "/api/me").status_code == 401
    with pg_cluster.connect() as conn:
        reason = conn.execute(
            "select details->>'reason' from public.audit_log where tenant_id = %s"
            " and action = 'auth.signin.failure' order by id desc limit 1",
            (google_tenant.tenant_id,),
        ).fetchone()
    assert reason == ("code_exchange_failed",)  # refused at the provider's token endpoint

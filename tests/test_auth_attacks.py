"""Attacks on sign-in and sessions, over real HTTP, and the failure paths a user can hit.

Every failed sign-in must end on a branded page on the tenant's own host, create no
profile, and leave an `auth.signin.failure` audit row with its reason.
"""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

from shared.session import issue_session
from tests.auth_support import HOSTS, AuthWorld, Browser, query_of
from tests.fake_oauth import FakeOAuth

SESSION = "__Host-cmg_session"
NONCE = "__Host-cmg_oauth"


def failures(world: AuthWorld, tenant: str, since: float) -> list[str]:
    rows = world.profile_rows(
        "select details->>'reason' from public.audit_log where tenant_id = %s and action = 'auth.signin.failure'"
        " and at >= to_timestamp(%s) order by id",
        tenant,
        since,
    )
    return [r[0] for r in rows]


def profiles_with_email(world: AuthWorld, email: str) -> int:
    return world.profile_rows("select count(*) from public.profiles where email = %s", email)[0][0]


def session_cookies_set(r: httpx.Response) -> list[str]:
    """Each Set-Cookie header of `r` on its own that gives the session cookie a value.

    A clearing one (empty value) is not a session; anything else is, whatever its Max-Age."""
    issued = []
    for raw in r.headers.get_list("set-cookie"):
        name, _, rest = raw.partition("=")
        if name.strip() == SESSION and rest.split(";", 1)[0].strip():
            issued.append(raw)
    return issued


def assert_branded_failure(world: AuthWorld, r, tenant: str, status: int, reason: str, since: float) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("text/html")
    brand = {"cozyartz": "Cozyartz Media Group", "partner1": "Partner One", "partner-seo": "Partner SEO"}[tenant]
    assert brand in r.text
    for other in {"Cozyartz Media Group", "Partner One", "Partner SEO"} - {brand}:
        assert other not in r.text
    assert session_cookies_set(r) == [], r.headers.get_list("set-cookie")
    assert reason in failures(world, tenant, since)


# ---- state: CSRF, replay, forgery, expiry ---------------------------------------------------


def test_callback_with_a_state_from_another_browser_is_refused(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    """Login CSRF: the attacker starts a flow, then sends the victim the callback link."""
    since, host = time.time() - 1, HOSTS["partner1"]
    login = auth_world.new_user("mallory")
    attacker, victim = Browser(auth_world), Browser(auth_world)
    cb = attacker.at_provider(attacker.start(host, "github"), "github", login)
    r = victim.callback(host, cb)
    assert_branded_failure(auth_world, r, "partner1", 400, "state_browser_mismatch", since)
    assert SESSION not in victim.cookies(host)
    assert profiles_with_email(auth_world, f"{login}@auth-test.example") == 0


def test_state_from_another_tenant_is_refused(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    since = time.time() - 1
    login = auth_world.new_user("hop")
    b = Browser(auth_world)
    cb = b.at_provider(b.start(HOSTS["partner1"], "google"), "google", login)
    # Same browser carries its partner1 nonce cookie over to partner-seo.
    b.cookies(HOSTS["partner-seo"])[NONCE] = b.cookies(HOSTS["partner1"])[NONCE]
    r = b.get(HOSTS["partner-seo"], f"/auth/callback?{urlsplit(cb).query}")
    assert_branded_failure(auth_world, r, "partner-seo", 400, "state_invalid", since)
    assert SESSION not in b.cookies(HOSTS["partner-seo"])


def test_replayed_state_is_refused(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    since, host = time.time() - 1, HOSTS["cozyartz"]
    login = auth_world.new_user("replay")
    b = Browser(auth_world)
    start = b.start(host, "github")
    nonce = b.cookies(host)[NONCE]
    cb = b.at_provider(start, "github", login)
    first = b.callback(host, cb)
    assert first.status_code == 302 and len(session_cookies_set(first)) == 1  # the check sees a real session
    b.cookies(host).pop(SESSION)
    b.cookies(host)[NONCE] = nonce  # the attacker kept the cookie and the URL
    r = b.callback(host, cb)
    assert_branded_failure(auth_world, r, "cozyartz", 400, "state_replayed", since)
    assert SESSION not in b.cookies(host)


@pytest.mark.parametrize("mutate", ["missing", "garbage", "flipped", "alg_none"])
def test_forged_or_missing_state_is_refused(auth_world: AuthWorld, fake: FakeOAuth, mutate: str) -> None:
    since, host = time.time() - 1, HOSTS["partner-seo"]
    b = Browser(auth_world)
    q = query_of(b.start(host, "github"))
    state = q["state"]
    if mutate == "missing":
        path = "/auth/callback?code=abc"
    else:
        if mutate == "garbage":
            state = "not-a-state"
        elif mutate == "flipped":
            state = state[:-3] + ("AAA" if not state.endswith("AAA") else "BBB")
        else:
            h, p, _ = state.split(".")
            state = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode() + f".{p}."
        path = "/auth/callback?" + urlencode({"code": "abc", "state": state})
    r = b.get(host, path)
    reason = "state_missing" if mutate == "missing" else "state_invalid"
    assert_branded_failure(auth_world, r, "partner-seo", 400, reason, since)


def test_expired_state_is_refused(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    """A state older than ten minutes: forged here with the tenant's real key and an old iat."""
    from shared.oauth import encode_state, issue_state

    since, host = time.time() - 1, HOSTS["partner1"]
    b = Browser(auth_world)
    b.start(host, "github")
    nonce = b.cookies(host)[NONCE]
    old = issue_state(
        tenant_id="partner1", host=host, provider="github", nonce=nonce, next_path="/", now=time.time() - 3600
    )
    token = encode_state(auth_world.secrets_of("partner1")["SESSION_SECRET"], old)
    r = b.get(host, "/auth/callback?" + urlencode({"code": "abc", "state": token}))
    assert_branded_failure(auth_world, r, "partner1", 400, "state_expired", since)


# ---- open redirect ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "\\\\evil.example",
        "https:evil.example",
        "javascript:alert(1)",
        "/%0d%0aLocation:%20https://evil",
        "/ok\r\nSet-Cookie: x=y",
    ],
)
def test_next_cannot_leave_the_tenant_host(auth_world: AuthWorld, fake: FakeOAuth, target: str) -> None:
    host = HOSTS["partner1"]
    login = auth_world.new_user("next")
    r = Browser(auth_world).sign_in(host, "github", login, next_path=target)
    assert r.status_code == 302
    location = r.headers["location"]
    assert location.startswith("/") and not location.startswith("//") and "\\" not in location
    assert urlsplit(location).netloc == "" and urlsplit(location).scheme == ""
    assert "\r" not in location and "\n" not in location


# ---- provider failures --------------------------------------------------------------------------


def test_user_cancels_at_the_provider(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    since, host = time.time() - 1, HOSTS["partner1"]
    b = Browser(auth_world)
    cb = b.at_provider(b.start(host, "github"), "github", "deny")
    assert query_of(cb)["error"] == "access_denied"
    assert_branded_failure(auth_world, b.callback(host, cb), "partner1", 403, "provider_denied", since)


@pytest.mark.parametrize("provider", ["github", "google"])
def test_code_exchange_failure(auth_world: AuthWorld, fake: FakeOAuth, provider: str) -> None:
    since, host = time.time() - 1, HOSTS["cozyartz"]
    login = auth_world.new_user("badcode")
    b = Browser(auth_world)
    cb = b.at_provider(b.start(host, provider), provider, login)
    if provider == "github":
        fake.knobs.github_bad_code = True  # GitHub: 200 with error=bad_verification_code
    else:
        fake.codes.clear()  # Google: 400 invalid_grant
    assert_branded_failure(auth_world, b.callback(host, cb), "cozyartz", 502, "code_exchange_failed", since)
    assert profiles_with_email(auth_world, f"{login}@auth-test.example") == 0


@pytest.mark.parametrize("status", [500, 503])
def test_provider_5xx(auth_world: AuthWorld, fake: FakeOAuth, status: int) -> None:
    since, host = time.time() - 1, HOSTS["partner-seo"]
    login = auth_world.new_user("5xx")
    b = Browser(auth_world)
    cb = b.at_provider(b.start(host, "google"), "google", login)
    fake.knobs.token_status = status
    assert_branded_failure(auth_world, b.callback(host, cb), "partner-seo", 504, "provider_unavailable", since)
    assert profiles_with_email(auth_world, f"{login}@auth-test.example") == 0


def test_provider_timeout(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    since, host = time.time() - 1, HOSTS["partner1"]
    login = auth_world.new_user("slow")
    b = Browser(auth_world)
    cb = b.at_provider(b.start(host, "github"), "github", login)
    fake.knobs.token_delay = 1.5  # the tenant's OAUTH_TIMEOUT_SECONDS is 1: without it, 1.5 s is a sign-in
    r = b.callback(host, cb)
    assert_branded_failure(auth_world, r, "partner1", 504, "provider_unavailable", since)


@pytest.mark.parametrize("provider", ["github", "google"])
@pytest.mark.parametrize("kind", ["none", "unverified"])
def test_email_missing_or_unverified(auth_world: AuthWorld, fake: FakeOAuth, provider: str, kind: str) -> None:
    since, host = time.time() - 1, HOSTS["partner1"]
    login = (
        auth_world.new_user("noemail", email=None)
        if kind == "none"
        else auth_world.new_user("unverified", verified=False)
    )
    b = Browser(auth_world)
    cb = b.at_provider(b.start(host, provider), provider, login)
    assert_branded_failure(auth_world, b.callback(host, cb), "partner1", 403, "email_missing", since)
    assert profiles_with_email(auth_world, f"{login}@auth-test.example") == 0


@pytest.mark.parametrize(
    "override",
    [
        {"aud": "someone-else"},
        {"iss": "https://evil.example"},
        {"exp": 1_000_000_000, "iat": 999_999_000},
        {"nonce": "wrong"},
        "other_key",
        "alg_none",
    ],
)
def test_bad_google_id_token_is_refused(auth_world: AuthWorld, fake: FakeOAuth, override: object) -> None:
    since, host = time.time() - 1, HOSTS["cozyartz"]
    login = auth_world.new_user("idtok")
    b = Browser(auth_world)
    cb = b.at_provider(b.start(host, "google"), "google", login)
    if override == "other_key":
        fake.knobs.id_token_sign_with_other_key = True
    elif override == "alg_none":
        fake.knobs.id_token_alg_none = True
    else:
        fake.knobs.id_token_overrides = dict(override)  # type: ignore[call-overload]
    assert_branded_failure(auth_world, b.callback(host, cb), "cozyartz", 502, "id_token_invalid", since)
    assert profiles_with_email(auth_world, f"{login}@auth-test.example") == 0


def test_unknown_provider_is_a_branded_404(auth_world: AuthWorld) -> None:
    r = Browser(auth_world).get(HOSTS["partner-seo"], "/auth/login/facebook")
    assert r.status_code == 404 and "Partner SEO" in r.text


# ---- sessions -----------------------------------------------------------------------------------


def _signed_in(world: AuthWorld, tenant: str) -> tuple[Browser, str]:
    b = Browser(world)
    b.sign_in(HOSTS[tenant], "github", world.new_user(tenant))
    return b, b.cookies(HOSTS[tenant])[SESSION]


def test_session_from_tenant_a_is_refused_at_tenant_b(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    _, token = _signed_in(auth_world, "partner1")
    other = Browser(auth_world)
    for host in (HOSTS["partner-seo"], HOSTS["cozyartz"]):
        r = other.get(host, "/api/me", headers={"Cookie": f"{SESSION}={token}"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
        assert other.get(host, "/api/domains", headers={"Cookie": f"{SESSION}={token}"}).status_code == 401
    assert other.get(HOSTS["partner1"], "/api/me", headers={"Cookie": f"{SESSION}={token}"}).status_code == 200


def test_session_signed_with_b_secret_for_tenant_a_claims_is_refused(auth_world: AuthWorld) -> None:
    """Even a correctly signed token from B's key, naming tenant A, is refused at A."""
    b_secret = auth_world.secrets_of("partner-seo")["SESSION_SECRET"]
    token = issue_session(
        b_secret, tenant_id="partner1", user_id="00000000-0000-4000-8000-000000000011", role="admin", now=time.time()
    )
    r = Browser(auth_world).get(HOSTS["partner1"], "/api/profiles", headers={"Cookie": f"{SESSION}={token}"})
    assert r.status_code == 401


def _b64(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("attack", ["role_raised", "alg_none", "signature_stripped", "tenant_swapped", "garbage"])
def test_tampered_sessions_are_refused(auth_world: AuthWorld, fake: FakeOAuth, attack: str) -> None:
    _, token = _signed_in(auth_world, "partner1")
    header, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    if attack == "role_raised":
        token = f"{header}.{_b64({**claims, 'role': 'admin'})}.{sig}"
    elif attack == "alg_none":
        token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({**claims, 'role': 'admin'})}."
    elif attack == "signature_stripped":
        token = f"{header}.{payload}."
    elif attack == "tenant_swapped":
        token = f"{header}.{_b64({**claims, 'tid': 'partner-seo'})}.{sig}"
    else:
        token = "x" * 40
    b = Browser(auth_world)
    for host in {HOSTS["partner1"], HOSTS["partner-seo"]}:
        assert b.get(host, "/api/me", headers={"Cookie": f"{SESSION}={token}"}).status_code == 401
        assert b.get(host, "/api/profiles", headers={"Cookie": f"{SESSION}={token}"}).status_code == 401


def test_expired_session_is_refused(auth_world: AuthWorld) -> None:
    secret = auth_world.secrets_of("partner1")["SESSION_SECRET"]
    token = issue_session(
        secret,
        tenant_id="partner1",
        user_id="00000000-0000-4000-8000-000000000011",
        role="admin",
        now=time.time() - 9 * 3600,
    )
    r = Browser(auth_world).get(HOSTS["partner1"], "/api/me", headers={"Cookie": f"{SESSION}={token}"})
    assert r.status_code == 401
    fresh = issue_session(
        secret, tenant_id="partner1", user_id="00000000-0000-4000-8000-000000000011", role="admin", now=time.time()
    )
    assert (
        Browser(auth_world).get(HOSTS["partner1"], "/api/me", headers={"Cookie": f"{SESSION}={fresh}"}).status_code
        == 200
    )


def test_cross_site_logout_is_refused(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    b, _ = _signed_in(auth_world, "partner1")
    r = b.request("POST", HOSTS["partner1"], "/auth/logout", headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert b.get(HOSTS["partner1"], "/api/me").status_code == 200


def test_sign_in_without_a_session_secret_refuses_to_start(auth_world: AuthWorld) -> None:
    """A tenant Worker missing its SESSION_SECRET does not start (tenant_worker.config): it hands
    out no state and no session, and its page shows no platform brand on a white-label host."""
    saved = auth_world.secrets_of("partner-seo")["SESSION_SECRET"]
    auth_world.set_secret("partner-seo", "SESSION_SECRET", None)
    try:
        r = Browser(auth_world).get(HOSTS["partner-seo"], "/auth/login/github")
        assert r.status_code == 503 and HOSTS["partner-seo"] in r.text and "Cozyartz" not in r.text
        assert "set-cookie" not in r.headers
    finally:
        auth_world.set_secret("partner-seo", "SESSION_SECRET", saved)


def test_data_service_down_at_sign_in_creates_nothing_and_says_so(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    from tests.support import free_port

    host = HOSTS["partner-seo"]
    login = auth_world.new_user("nodb")
    saved = auth_world.secrets_of("partner-seo")["SUPABASE_URL"]
    b = Browser(auth_world)
    cb = b.at_provider(b.start(host, "github"), "github", login)
    auth_world.set_secret("partner-seo", "SUPABASE_URL", f"http://127.0.0.1:{free_port()}")
    try:
        r = b.callback(host, cb)
    finally:
        auth_world.set_secret("partner-seo", "SUPABASE_URL", saved)
    assert r.status_code == 503 and r.headers["content-type"].startswith("text/html")
    assert "partner-seo.com" in r.text or "Partner SEO" in r.text  # the tenant's host, never another brand
    assert "Partner One" not in r.text and "Cozyartz" not in r.text
    assert SESSION not in b.cookies(host)
    assert profiles_with_email(auth_world, f"{login}@auth-test.example") == 0

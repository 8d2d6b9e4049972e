"""Attacks on the request rules, end to end on workerd (dispatcher -> tenant Worker -> PostgREST):
cross-site state changes (CSRF, also from a sibling tenant, which is the same *site*), bodies
that are not JSON, malformed JSON, and methods nothing serves. Policy: README "Request rules"."""

from __future__ import annotations

from typing import Any, Iterator

import httpx
import pytest

from tests.auth_support import HOSTS, SEEDED, AuthWorld, Browser
from tests.fake_oauth import FakeOAuth
from tests.support import Platform
from tests.usage_support import UsageTenant, usage_tenant

ADMINS = {
    "cozyartz": "admin@cozyartzmedia.com",
    "partner1": "admin@partner1.example",
    "partner-seo": "admin@partner-seo.example",
}
BRANDS = {"cozyartz": "Cozyartz Media Group", "partner1": "Partner One", "partner-seo": "Partner SEO"}
JSON = {"Content-Type": "application/json"}


def own_pages(world: AuthWorld, host: str) -> dict[str, str]:
    """What a browser adds to a fetch() from the tenant's own page (plain HTTP locally, any port)."""
    return {"Origin": f"http://{host}:{world.platform.port}", "Sec-Fetch-Site": "same-origin"}


def admin_of(world: AuthWorld, tenant: str) -> Browser:
    b = Browser(world)
    assert b.sign_in(HOSTS[tenant], "github", world.new_user("adm", email=ADMINS[tenant])).status_code == 302
    return b


def new_client(world: AuthWorld, tenant: str) -> str:
    b = Browser(world)
    b.sign_in(HOSTS[tenant], "google", world.new_user(f"c-{tenant}"))
    return str(b.get(HOSTS[tenant], "/api/me").json()["user_id"])


def role_of(world: AuthWorld, uid: str) -> str:
    return str(world.profile_rows("select tenant_role from public.profiles where id = %s", uid)[0][0])


def ai_calls_used(b: Browser, host: str) -> int:
    r = b.get(host, "/api/usage")
    assert r.status_code == 200, r.text
    return int(r.json()["usage"]["ai_calls"]["used"])


def assert_refused(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["code"] == code and r.json()["error"]["request_id"] == r.headers["x-request-id"]


# ---- CSRF ------------------------------------------------------------------------------------


@pytest.mark.parametrize("victim, sibling", [("cozyartz", "partner1"), ("partner1", "cozyartz")])
def test_a_sibling_tenants_pages_cannot_change_state(
    auth_world: AuthWorld, fake: FakeOAuth, victim: str, sibling: str
) -> None:
    """partner1.cozyartzmedia.com and cozyartzmedia.com are one site: SameSite=Lax sends the
    victim's cookie along, so only the origin check stands between them."""
    host, other = HOSTS[victim], HOSTS[sibling]
    admin = admin_of(auth_world, victim)
    target = new_client(auth_world, victim)
    used = ai_calls_used(admin, host)
    for attack in (
        {"Origin": f"http://{other}"},
        {"Origin": f"https://{other}"},
        {"Origin": f"http://{other}:{auth_world.platform.port}", "Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        for method, path, body in (
            ("PATCH", f"/api/profiles/{target}", {"tenant_role": "admin"}),
            ("POST", "/api/ai/generate", {"prompt": "spend their quota"}),
            ("POST", "/api/domains", {"domain": "x"}),
            ("DELETE", "/api/domains/not-theirs.example", None),
        ):
            r = admin.request(method, host, path, json=body, headers=attack)
            assert_refused(r, 403, "cross_site_request")
        r = admin.request(
            "POST",
            host,
            "/auth/logout",
            content=b"",
            headers={**attack, "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 403 and r.headers["content-type"].startswith("text/html"), r.text
        assert BRANDS[victim] in r.text and BRANDS[sibling] not in r.text
    assert role_of(auth_world, target) == "client"
    assert ai_calls_used(admin, host) == used
    assert admin.get(host, "/api/me").status_code == 200  # still signed in
    # The same change from the tenant's own pages goes through.
    r = admin.request(
        "PATCH", host, f"/api/profiles/{target}", json={"tenant_role": "admin"}, headers=own_pages(auth_world, host)
    )
    assert r.status_code == 200, r.text
    assert role_of(auth_world, target) == "admin"


@pytest.mark.parametrize(
    "attack",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},  # sandboxed iframes, data: URLs, some redirects
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "https://partner-seo.com.evil.example"},
        {"Origin": "https://evil.example@partner-seo.com"},
        {"Origin": "http://partner-seo.com", "Sec-Fetch-Site": "cross-site"},  # each header must agree
    ],
    ids=["evil", "null", "sfs-cross-site", "sfs-same-site", "suffix", "userinfo", "sfs-disagrees"],
)
def test_cross_site_state_changes_are_refused(auth_world: AuthWorld, fake: FakeOAuth, attack: dict[str, str]) -> None:
    host = HOSTS["partner-seo"]
    admin = admin_of(auth_world, "partner-seo")
    target = new_client(auth_world, "partner-seo")
    r = admin.request("PATCH", host, f"/api/profiles/{target}", json={"tenant_role": "admin"}, headers=attack)
    assert_refused(r, 403, "cross_site_request")
    r = admin.request("POST", host, "/auth/logout", headers=attack)
    assert r.status_code == 403 and "Partner SEO" in r.text
    assert role_of(auth_world, target) == "client"
    assert admin.get(host, "/api/me").status_code == 200


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        None,
        "application/json; charset=utf-16",
    ],
)
def test_api_state_changes_take_json_bodies_only(
    auth_world: AuthWorld, fake: FakeOAuth, content_type: str | None
) -> None:
    """What an HTML form or a no-cors fetch can send without a preflight, even from our own origin."""
    host = HOSTS["partner1"]
    admin = admin_of(auth_world, "partner1")
    target = new_client(auth_world, "partner1")
    used = ai_calls_used(admin, host)
    headers = own_pages(auth_world, host) | ({"Content-Type": content_type} if content_type else {})
    for method, path, body in (
        ("PATCH", f"/api/profiles/{target}", b'{"tenant_role": "admin"}'),
        ("POST", "/api/ai/generate", b'{"prompt": "hello"}'),
        ("POST", "/api/domains", b'{"domain": "x"}'),
    ):
        assert_refused(admin.request(method, host, path, content=body, headers=headers), 415, "unsupported_media_type")
    assert role_of(auth_world, target) == "client"
    assert ai_calls_used(admin, host) == used


def test_the_tenants_own_pages_and_plain_clients_still_work(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    host = HOSTS["cozyartz"]
    admin = admin_of(auth_world, "cozyartz")
    target = new_client(auth_world, "cozyartz")
    for headers in (
        own_pages(auth_world, host) | {"Content-Type": "application/json; charset=utf-8"},
        {"Origin": f"https://{host}", **JSON},  # deployed: https, default port
        {"Sec-Fetch-Site": "same-origin", **JSON},
        {"Sec-Fetch-Site": "none", **JSON},
        JSON,
    ):  # curl or a server: no browser, no ambient cookies of a victim
        r = admin.request(
            "PATCH", host, f"/api/profiles/{target}", content=b'{"display_name": "Renamed"}', headers=headers
        )
        assert r.status_code == 200, (headers, r.text)
    # A body-less state change needs no content type; the sign-out form posts form-encoded.
    assert (
        admin.request("DELETE", host, "/api/domains/not-ours.example", headers=own_pages(auth_world, host)).status_code
        == 404
    )
    user = Browser(auth_world)  # not the seeded admin: a sign-out ends every session of its user
    user.sign_in(host, "github", auth_world.new_user("bye"))
    r = user.request(
        "POST",
        host,
        "/auth/logout",
        content=b"",
        headers={**own_pages(auth_world, host), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 303 and user.get(host, "/api/me").status_code == 401


# ---- malformed bodies --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def metered(platform: Platform, pg_cluster: Any) -> Iterator[UsageTenant]:
    """A throwaway tenant: its AI and domain counters can be checked and are thrown away."""
    with usage_tenant(platform, pg_cluster, "growth") as t:
        yield t


DEEP = 100_000
MALFORMED = {
    "deep-array": b"[" * DEEP + b"]" * DEEP,
    "deep-object": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "deep-inside": b'{"prompt": ' + b"[" * DEEP + b"]" * DEEP + b"}",
    "bad-utf8": b'{"prompt": "\xff\xfe\xfa", "domain": "\xc3("}',
    "lone-surrogate": b'{"prompt": "\\ud800", "domain": "\\udfff.example"}',
    "string": b'"just a string"',
    "number": b"42",
    "null": b"null",
    "array": b'[{"prompt": "hi"}]',
    "true": b"true",
    "float-overflow": b'{"prompt": "hi", "max_tokens": 1e999999, "display_name": 1e999999}',
    "huge-int": b'{"prompt": "hi", "max_tokens": ' + b"9" * 100_000 + b"}",
    "nan": b'{"prompt": "hi", "max_tokens": NaN}',
    "duplicate-keys": b'{"prompt": "hi", "prompt": "again", "domain": "a.example", "domain": "b.example",'
    b' "tenant_role": "client", "tenant_role": "admin"}',
    "utf16": '{"prompt": "hi"}'.encode("utf-16"),
    "empty": b"",
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_bodies_are_4xx_json_on_every_body_endpoint(metered: UsageTenant, name: str) -> None:
    client, admin = metered.session("client"), metered.session("admin")
    used = metered.usage()["ai_calls"]["used"]
    for path, auth, method in (
        ("/api/ai/generate", client, "POST"),
        ("/api/domains", admin, "POST"),
        (f"/api/profiles/{metered.users['client']}", admin, "PATCH"),
    ):
        r = httpx.request(
            method,
            metered.platform.url + path,
            content=MALFORMED[name],
            timeout=60,
            headers={"Host": metered.host, **auth, **JSON},
        )
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:300])
        assert r.headers["content-type"] == "application/json"
        assert r.json()["error"]["code"] in ("invalid_json", "invalid_body"), (path, r.text[:300])
    assert metered.usage()["ai_calls"]["used"] == used
    with metered.pg.connect() as conn:
        rows = conn.execute("select domain from public.tenant_domains where tenant_id = %s", (metered.tenant_id,))
        assert [d for (d,) in rows] == [metered.host]
        role = conn.execute("select tenant_role from public.profiles where id = %s", (metered.users["client"],))
        assert role.fetchone() == ("client",)


def test_a_well_formed_generation_still_counts(metered: UsageTenant) -> None:
    used = metered.usage()["ai_calls"]["used"]
    r = metered.generate("Name a bakery", max_tokens=4, headers={**JSON, "Origin": f"https://{metered.host}"})
    assert r.status_code == 200, r.text
    assert metered.usage()["ai_calls"]["used"] == used + 1


def test_a_boolean_is_not_a_token_count(metered: UsageTenant) -> None:
    r = metered.post("/api/ai/generate", json={"prompt": "hi", "max_tokens": True})
    assert r.status_code == 422 and "max_tokens" in r.json()["error"]["fields"], r.text


@pytest.mark.parametrize("body", [{"display_name": True}, {"tenant_role": True}, {"display_name": 5}])
def test_profile_fields_take_only_their_types(metered: UsageTenant, body: dict[str, object]) -> None:
    r = httpx.patch(
        metered.platform.url + f"/api/profiles/{metered.users['client']}",
        json=body,
        timeout=60,
        headers={"Host": metered.host, **metered.session("admin")},
    )
    assert_refused(r, 422, "invalid_body")


# ---- methods -------------------------------------------------------------------------------------


# PUT is served (PUT /api/integrations/<name>): on an unknown path it is a 404 like GET.
@pytest.mark.parametrize("method", ["PROPFIND", "MKCOL", "PROPPATCH", "LOCK", "OPTIONS", "TRACE"])
def test_methods_nothing_serves(platform: Platform, method: str) -> None:
    """405 + Allow on a route that exists, 501 where nothing serves the method; never a 500."""
    host = HOSTS["partner1"]
    uid = SEEDED["client@partner1.example"][2]
    for path, allow in (
        (f"/api/profiles/{uid}", "PATCH"),
        ("/api/health", "GET, HEAD"),
        ("/auth/logout", "POST"),
        ("/", "GET, HEAD"),
    ):
        r = httpx.request(method, platform.url + path, headers={"Host": host}, timeout=30)
        assert r.status_code == 405 and r.headers["allow"] == allow, (path, r.status_code, r.text[:200])
        assert r.headers["x-request-id"]
        if path.startswith("/api/"):
            assert r.json()["error"]["code"] == "method_not_allowed"
    for path in ("/api/nothing-here", "/nothing-here"):
        r = httpx.request(method, platform.url + path, headers={"Host": host}, timeout=30)
        assert r.status_code == 501, (path, r.status_code, r.text[:200])
        if path.startswith("/api/"):
            assert r.json()["error"]["code"] == "not_implemented"
        else:
            assert r.headers["content-type"].startswith("text/html") and "Partner One" in r.text


def test_a_deeply_nested_oauth_state_does_not_take_the_worker_down(platform: Platform) -> None:
    """The state's JWS header is parsed before its signature is checked, and anyone can send one."""
    import base64

    host = HOSTS["partner-seo"]
    header = base64.urlsafe_b64encode(b"[" * 12_000).rstrip(b"=").decode()
    r = httpx.get(f"{platform.url}/auth/callback?code=x&state={header}.e30.c2ln", headers={"Host": host}, timeout=30)
    assert r.status_code == 400 and "Partner SEO" in r.text, r.text[:300]
    assert httpx.get(platform.url + "/api/health", headers={"Host": host}, timeout=30).status_code == 200

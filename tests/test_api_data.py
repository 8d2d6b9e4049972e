"""The tenant data endpoints over HTTP, as clients, admins, a super admin and attackers see them."""

from __future__ import annotations

import time

import pytest

from shared.session import issue_session
from tests.auth_support import HOSTS, SEEDED, AuthWorld, Browser
from tests.fake_oauth import FakeOAuth

SESSION = "__Host-cmg_session"
ADMIN_ENDPOINTS = [
    ("GET", "/api/profiles"),
    ("GET", "/api/audit"),
    ("PATCH", "/api/profiles/00000000-0000-4000-8000-000000000012"),
]


def signed_in_as(world: AuthWorld, email: str, provider: str = "github") -> Browser:
    tenant = SEEDED[email][0]
    b = Browser(world)
    assert b.sign_in(HOSTS[tenant], provider, world.new_user("as", email=email)).status_code == 302
    return b


def new_client(world: AuthWorld, tenant: str) -> tuple[Browser, str]:
    b = Browser(world)
    b.sign_in(HOSTS[tenant], "google", world.new_user(f"c-{tenant}"))
    return b, b.get(HOSTS[tenant], "/api/me").json()["user_id"]


def test_nothing_reaches_data_without_a_session(auth_world: AuthWorld) -> None:
    b = Browser(auth_world)
    for host in HOSTS.values():
        for method, path in [
            ("GET", "/api/tenant"),
            ("GET", "/api/domains"),
            ("GET", "/api/platform/tenants"),
            ("GET", "/api/me"),
            *ADMIN_ENDPOINTS,
        ]:
            r = b.request(method, host, path, json={"tenant_role": "admin"} if method == "PATCH" else None)
            expected = 404 if path.startswith("/api/platform") and host != HOSTS["cozyartz"] else 401
            assert r.status_code == expected, (host, path, r.text)
            assert r.json()["error"]["request_id"]


@pytest.mark.parametrize("tenant", list(HOSTS))
def test_client_is_refused_admin_and_platform_endpoints(auth_world: AuthWorld, fake: FakeOAuth, tenant: str) -> None:
    b, _ = new_client(auth_world, tenant)
    host = HOSTS[tenant]
    for method, path in ADMIN_ENDPOINTS:
        r = b.request(method, host, path, json={"tenant_role": "admin"} if method == "PATCH" else None)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", (path, r.text)
    r = b.get(host, "/api/platform/tenants")
    assert r.status_code == (403 if tenant == "cozyartz" else 404)
    assert b.get(host, "/api/tenant").status_code == 200


def test_tenant_record_and_branding_are_the_tenants_own(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    b, _ = new_client(auth_world, "partner-seo")
    body = b.get(HOSTS["partner-seo"], "/api/tenant").json()
    assert body["tenant"]["tenant_id"] == "partner-seo" and body["tenant"]["subscription_tier"] == "starter"
    assert body["branding"]["brand_name"] == "Partner SEO"


def test_admin_grants_admin_inside_own_tenant_and_the_session_rotates(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    host = HOSTS["partner1"]
    client, uid = new_client(auth_world, "partner1")
    before = client.cookies(host)[SESSION]
    assert client.get(host, "/api/profiles").status_code == 403
    admin = signed_in_as(auth_world, "admin@partner1.example")
    r = admin.request("PATCH", host, f"/api/profiles/{uid}", json={"tenant_role": "admin"})
    assert r.status_code == 200, r.text
    assert r.json()["profile"]["tenant_role"] == "admin"
    # The promoted user's next request rotates their session to the new role.
    r = client.get(host, "/api/me")
    assert r.status_code == 200 and r.json()["role"] == "admin"
    assert client.cookies(host)[SESSION] != before
    assert client.get(host, "/api/profiles").status_code == 200
    # Demotion takes effect on the very next request too (not at session expiry).
    assert admin.request("PATCH", host, f"/api/profiles/{uid}", json={"tenant_role": "client"}).status_code == 200
    assert client.get(host, "/api/profiles").status_code == 403
    audit = auth_world.profile_rows(
        "select actor, details->>'tenant_role' from public.audit_log"
        " where action = 'profile.role_changed' and target = %s order by id",
        uid,
    )
    assert audit == [(SEEDED["admin@partner1.example"][2], "admin"), (SEEDED["admin@partner1.example"][2], "client")]


def test_admin_cannot_grant_super_admin(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    host = HOSTS["partner1"]
    _, uid = new_client(auth_world, "partner1")
    admin = signed_in_as(auth_world, "admin@partner1.example")
    r = admin.request("PATCH", host, f"/api/profiles/{uid}", json={"tenant_role": "super_admin"})
    assert r.status_code == 403
    assert auth_world.profile_rows("select tenant_role from public.profiles where id = %s", uid) == [("client",)]
    # Not on the primary tenant either, for a tenant admin there.
    primary_admin = signed_in_as(auth_world, "admin@cozyartzmedia.com")
    _, cuid = new_client(auth_world, "cozyartz")
    r = primary_admin.request("PATCH", HOSTS["cozyartz"], f"/api/profiles/{cuid}", json={"tenant_role": "super_admin"})
    assert r.status_code == 403


def state_of(world: AuthWorld, *ids: str) -> list[tuple[str, str, str | None]]:
    """(id, role, display name) of each profile, in the order asked."""
    rows = {
        str(r[0]): r
        for r in world.profile_rows(
            "select id, tenant_role, display_name from public.profiles where id = any(%s::uuid[])", list(ids)
        )
    }
    return [(i, rows[i][1], rows[i][2]) for i in ids]


def test_admin_cannot_edit_another_tenants_profile(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    _, victim = new_client(auth_world, "partner-seo")
    admin = signed_in_as(auth_world, "admin@partner1.example")
    seeded_admin_b = SEEDED["admin@partner-seo.example"][2]
    before = state_of(auth_world, victim, seeded_admin_b)
    assert [row[1] for row in before] == ["client", "admin"]
    for body in ({"tenant_role": "admin"}, {"display_name": "pwned"}):
        r = admin.request("PATCH", HOSTS["partner1"], f"/api/profiles/{victim}", json=body)
        assert r.status_code == 404, r.text  # RLS hides it: indistinguishable from a missing id
    seeded_admin_b = SEEDED["admin@partner-seo.example"][2]
    r = admin.request("PATCH", HOSTS["partner1"], f"/api/profiles/{seeded_admin_b}", json={"tenant_role": "client"})
    assert r.status_code == 404
    # Both rows exactly as they were: the client still a client, the admin still an admin.
    assert state_of(auth_world, victim, seeded_admin_b) == before
    # The partner1 admin's cookie at partner-seo is no session at all.
    token = admin.cookies(HOSTS["partner1"])[SESSION]
    r = Browser(auth_world).request(
        "PATCH",
        HOSTS["partner-seo"],
        f"/api/profiles/{victim}",
        json={"tenant_role": "admin"},
        headers={"Cookie": f"{SESSION}={token}"},
    )
    assert r.status_code == 401
    assert state_of(auth_world, victim, seeded_admin_b) == before


def test_admin_cannot_change_own_role(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    admin = signed_in_as(auth_world, "admin@partner-seo.example")
    me = SEEDED["admin@partner-seo.example"][2]
    r = admin.request("PATCH", HOSTS["partner-seo"], f"/api/profiles/{me}", json={"tenant_role": "client"})
    assert r.status_code == 403


@pytest.mark.parametrize(
    "body,status,code",
    [
        ({"tenant_role": "owner"}, 422, "invalid_body"),
        ({"tenant_id": "partner1"}, 422, "invalid_body"),
        ({}, 422, "invalid_body"),
        ("not json", 400, "invalid_json"),
    ],
)
def test_bad_patch_bodies_get_clear_errors(
    auth_world: AuthWorld, fake: FakeOAuth, body: object, status: int, code: str
) -> None:
    admin = signed_in_as(auth_world, "admin@partner1.example")
    kw = {"content": body, "headers": {"Content-Type": "application/json"}} if isinstance(body, str) else {"json": body}
    r = admin.request("PATCH", HOSTS["partner1"], "/api/profiles/00000000-0000-4000-8000-000000000012", **kw)
    assert r.status_code == status and r.json()["error"]["code"] == code
    r = admin.request("PATCH", HOSTS["partner1"], "/api/profiles/not-a-uuid", json={"tenant_role": "admin"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_id"


def test_super_admin_lists_every_tenant_on_the_primary_only(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    root = signed_in_as(auth_world, "root@cozyartzmedia.com", "google")
    r = root.get(HOSTS["cozyartz"], "/api/platform/tenants")
    assert r.status_code == 200, r.text
    tenants = {t["tenant_id"]: (t["status"], t["subscription_tier"]) for t in r.json()["tenants"]}
    assert tenants["cozyartz"] == ("active", "enterprise")
    assert tenants["partner1"] == ("active", "growth") and tenants["partner-seo"] == ("active", "starter")
    # Tenant admins of the primary are not platform operators.
    admin = signed_in_as(auth_world, "admin@cozyartzmedia.com")
    assert admin.get(HOSTS["cozyartz"], "/api/platform/tenants").status_code == 403


def test_forged_super_admin_session_outside_the_primary_is_refused(auth_world: AuthWorld) -> None:
    """Even with partner1's real session key, a super_admin session does not work there."""
    secret = auth_world.secrets_of("partner1")["SESSION_SECRET"]
    token = issue_session(
        secret,
        tenant_id="partner1",
        user_id="00000000-0000-4000-8000-000000000011",
        role="super_admin",
        now=time.time(),
    )
    b = Browser(auth_world)
    assert b.get(HOSTS["partner1"], "/api/profiles", headers={"Cookie": f"{SESSION}={token}"}).status_code == 401


def test_admin_lists_only_own_tenant_even_when_others_exist(auth_world: AuthWorld, fake: FakeOAuth) -> None:
    new_client(auth_world, "partner1")
    new_client(auth_world, "cozyartz")
    admin = signed_in_as(auth_world, "admin@partner-seo.example")
    rows = admin.get(HOSTS["partner-seo"], "/api/profiles?limit=200").json()["profiles"]
    assert {p["tenant_id"] for p in rows} == {"partner-seo"}
    assert admin.get(HOSTS["partner-seo"], "/api/profiles?limit=0").status_code == 400
    audit = admin.get(HOSTS["partner-seo"], "/api/audit").json()["entries"]
    assert audit and all("tenant_id" not in e for e in audit)
    signins = [e for e in audit if e["action"].startswith("auth.signin.")]
    assert signins  # the sign-in counters are readable per tenant

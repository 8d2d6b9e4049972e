"""Unit attacks on the pure sign-in core: session tokens, OAuth state, next, PKCE, RS256."""

from __future__ import annotations

import base64
import hashlib
import json
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.jwt import HS256Signer
from shared.oauth import (
    OAuthError,
    encode_state,
    issue_state,
    nonce_hash,
    pkce_challenge,
    pkce_verifier,
    provider_config,
    safe_next,
    verify_state,
)
from shared.rs256 import RsaPublicKey, SignatureError, keys_from_jwks, verify_rs256
from shared.session import SessionError, issue_session, session_key, verify_session
from tests.rsa_verifier import CryptographyRsaVerifier

SECRET = "s" * 48
OTHER = "o" * 48
UID = "00000000-0000-4000-8000-0000000000aa"
NOW = 1_800_000_000


def b64(obj: object) -> str:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# ---- sessions ------------------------------------------------------------------------------


def test_session_round_trip() -> None:
    token = issue_session(SECRET, tenant_id="partner1", user_id=UID, role="admin", now=NOW, email="a@b.co")
    claims = verify_session(token, SECRET, tenant_id="partner1", now=NOW + 10)
    assert (claims.tid, claims.sub, claims.role, claims.email) == ("partner1", UID, "admin", "a@b.co")
    assert claims.exp - claims.iat == 8 * 3600 and len(claims.sid) >= 16


def test_each_session_has_its_own_id() -> None:
    a = issue_session(SECRET, tenant_id="t1", user_id=UID, role="client", now=NOW)
    b = issue_session(SECRET, tenant_id="t1", user_id=UID, role="client", now=NOW)
    assert (
        verify_session(a, SECRET, tenant_id="t1", now=NOW).sid != verify_session(b, SECRET, tenant_id="t1", now=NOW).sid
    )


def test_session_for_another_tenant_is_refused_even_with_the_same_secret() -> None:
    token = issue_session(SECRET, tenant_id="partner1", user_id=UID, role="client", now=NOW)
    with pytest.raises(SessionError):
        verify_session(token, SECRET, tenant_id="partner-seo", now=NOW)


def test_session_expiry_is_exact() -> None:
    token = issue_session(SECRET, tenant_id="t1", user_id=UID, role="client", now=NOW, ttl_seconds=60)
    verify_session(token, SECRET, tenant_id="t1", now=NOW + 59)
    with pytest.raises(SessionError, match="expired"):
        verify_session(token, SECRET, tenant_id="t1", now=NOW + 60)


@pytest.mark.parametrize(
    "attack",
    ["alg_none", "hs512", "wrong_key", "extra_claim", "missing_claim", "bad_role", "state_token", "empty", "huge"],
)
def test_forged_sessions_are_refused(attack: str) -> None:
    good = {"typ": "session", "tid": "t1", "sub": UID, "role": "client", "sid": "a" * 24, "iat": NOW, "exp": NOW + 60}
    key = session_key(SECRET, "t1")
    if attack == "alg_none":
        token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({**good, 'role': 'super_admin'})}."
    elif attack == "hs512":
        token = f"{b64({'alg': 'HS512', 'typ': 'JWT'})}.{b64(good)}.{b64(b'x' * 64)}"
    elif attack == "wrong_key":
        token = HS256Signer(session_key(OTHER, "t1")).sign(good)
    elif attack == "extra_claim":
        token = HS256Signer(key).sign({**good, "admin": True})
    elif attack == "missing_claim":
        token = HS256Signer(key).sign({k: v for k, v in good.items() if k != "sid"})
    elif attack == "bad_role":
        token = HS256Signer(key).sign({**good, "role": "owner"})
    elif attack == "state_token":  # a valid OAuth state of the same tenant is not a session
        token = encode_state(
            SECRET, issue_state(tenant_id="t1", host="t1.example", provider="github", nonce="n", next_path="/", now=NOW)
        )
    elif attack == "empty":
        token = ""
    else:
        token = "a." * 3000
    with pytest.raises(SessionError):
        verify_session(token, SECRET, tenant_id="t1", now=NOW)


# ---- OAuth state -----------------------------------------------------------------------------


def _state(**kw: object) -> str:
    args = dict(
        tenant_id="partner1",
        host="partner1.cozyartzmedia.com",
        provider="google",
        nonce="browser-nonce",
        next_path="/x",
        now=NOW,
    )
    args.update(kw)
    return encode_state(SECRET, issue_state(**args))  # type: ignore[arg-type]


def test_state_round_trip_and_binding() -> None:
    claims = verify_state(
        _state(), SECRET, tenant_id="partner1", host="partner1.cozyartzmedia.com", nonce="browser-nonce", now=NOW + 5
    )
    assert (claims.prv, claims.nxt, claims.nh) == ("google", "/x", nonce_hash("browser-nonce"))


@pytest.mark.parametrize(
    "change,reason",
    [
        ({"nonce": "other-browser"}, "state_browser_mismatch"),
        ({"tenant_id": "partner-seo"}, "state_invalid"),
        ({"host": "evil.example"}, "state_invalid"),
        ({"secret": OTHER}, "state_invalid"),
        ({"now": NOW + 601}, "state_expired"),
        ({"state": None}, "state_missing"),
    ],
)
def test_state_refusals(change: dict[str, object], reason: str) -> None:
    args: dict[str, object] = dict(
        state=_state(),
        secret=SECRET,
        tenant_id="partner1",
        host="partner1.cozyartzmedia.com",
        nonce="browser-nonce",
        now=NOW + 1,
    )
    args.update(change)
    with pytest.raises(OAuthError) as err:
        verify_state(args.pop("state"), args.pop("secret"), **args)  # type: ignore[arg-type]
    assert err.value.reason == reason


def test_pkce_is_s256_and_bound_to_browser_and_state() -> None:
    v = pkce_verifier(SECRET, "t1", "nonce", "state-id")
    assert 43 <= len(v) <= 128
    assert pkce_challenge(v) == base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).rstrip(b"=").decode()
    assert v != pkce_verifier(SECRET, "t1", "nonce2", "state-id") != pkce_verifier(SECRET, "t2", "nonce", "state-id")


@pytest.mark.parametrize(
    "value",
    [
        "https://evil.example",
        "//evil.example",
        "/\\evil.example",
        "\\evil",
        "evil",
        "http:/evil",
        "/a\nb",
        "/a\rb",
        "/\tevil",
        "",
        None,
        "/" + "a" * 600,
    ],
)
def test_safe_next_refuses_anything_that_could_leave(value: str | None) -> None:
    assert safe_next(value) == "/"


@pytest.mark.parametrize("value", ["/", "/dashboard", "/a/b?c=d&e=f#g", "/%2F%2Fevil"])
def test_safe_next_keeps_same_host_paths(value: str) -> None:
    assert safe_next(value) == value


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_safe_next_never_yields_another_host(value: str) -> None:
    from urllib.parse import urlsplit

    out = safe_next(value)
    assert out.startswith("/") and not out.startswith("//") and "\\" not in out
    assert urlsplit(out).netloc == "" and not any(c in out for c in "\r\n\t\x00")


def test_provider_config_defaults_to_the_real_providers_and_takes_overrides() -> None:
    env = {
        "GITHUB_CLIENT_ID": "id",
        "GITHUB_CLIENT_SECRET": "sec",
        "GOOGLE_CLIENT_ID": "g",
        "GOOGLE_CLIENT_SECRET": "s",
    }
    gh = provider_config("github", lambda k: env.get(k, ""))
    assert gh.authorize_url == "https://github.com/login/oauth/authorize"
    assert gh.token_url == "https://github.com/login/oauth/access_token" and gh.api_url == "https://api.github.com"
    go = provider_config("google", lambda k: env.get(k, ""))
    assert go.token_url == "https://oauth2.googleapis.com/token"
    assert go.jwks_url == "https://www.googleapis.com/oauth2/v3/certs"
    env["OAUTH_GITHUB_TOKEN_URL"] = "http://127.0.0.1:9/token"
    assert provider_config("github", lambda k: env.get(k, "")).token_url == "http://127.0.0.1:9/token"
    env["OAUTH_GITHUB_TOKEN_URL"] = "http://evil.example/token"  # plain http only to loopback
    with pytest.raises(OAuthError):
        provider_config("github", lambda k: env.get(k, ""))
    with pytest.raises(OAuthError) as err:
        provider_config("github", lambda k: "")
    assert err.value.reason == "provider_not_configured"


# ---- RS256 -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk(key: rsa.RSAPrivateKey, kid: str = "k1") -> dict[str, str]:
    pub = key.public_key().public_numbers()
    return {
        "kty": "RSA",
        "alg": "RS256",
        "use": "sig",
        "kid": kid,
        "n": b64(pub.n.to_bytes(256, "big")),
        "e": b64(pub.e.to_bytes(3, "big")),
    }


def _sign(key: rsa.RSAPrivateKey, claims: dict[str, object], header: dict[str, object] | None = None) -> str:
    signing_input = f"{b64(header or {'alg': 'RS256', 'kid': 'k1'})}.{b64(claims)}"
    return f"{signing_input}.{b64(key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()))}"


async def test_rs256_verifies_what_cryptography_signs(rsa_key: rsa.RSAPrivateKey) -> None:
    keys = keys_from_jwks({"keys": [_jwk(rsa_key)]})
    _, claims = await verify_rs256(_sign(rsa_key, {"sub": "1"}), keys, CryptographyRsaVerifier())
    assert claims == {"sub": "1"}


async def test_rs256_refusals(rsa_key: rsa.RSAPrivateKey) -> None:
    keys = keys_from_jwks({"keys": [_jwk(rsa_key)]})
    token = _sign(rsa_key, {"sub": "1"})
    h, p, s = token.split(".")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attacks = [
        f"{h}.{b64({'sub': '2'})}.{s}",  # payload swapped
        f"{b64({'alg': 'none', 'kid': 'k1'})}.{p}.",  # alg none
        _sign(other, {"sub": "1"}),  # someone else's key, same kid
        _sign(rsa_key, {"sub": "1"}, {"alg": "RS256", "kid": "unknown"}),
        f"{b64({'alg': 'HS256', 'kid': 'k1'})}.{p}.{s}",  # algorithm confusion
        f"{h}.{p}.{b64(b'x' * 256)}",
        f"{h}.{p}.{s[:-8]}",  # a shortened signature never reaches the library
        f"{h}.{p}",
    ]
    verifier = CryptographyRsaVerifier()
    for bad in attacks:
        with pytest.raises(SignatureError):
            await verify_rs256(bad, keys, verifier)


def test_weak_or_foreign_jwks_entries_are_skipped() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pub = small.public_key().public_numbers()
    jwks = {
        "keys": [
            {"kty": "RSA", "kid": "small", "n": b64(pub.n.to_bytes(128, "big")), "e": "AQAB"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "a", "y": "b"},
            "not a jwk",
        ]
    }
    assert keys_from_jwks(jwks) == []
    with pytest.raises(SignatureError):
        RsaPublicKey.from_jwk({"kty": "RSA", "n": "!!", "e": "AQAB"})


# ---- provider responses (in-process transport, the real wire shapes) --------------------------


class Transport:
    """An HttpClient answering from a table: (method, url) -> (status, content-type, body)."""

    def __init__(self, table: dict[tuple[str, str], tuple[int, str, object]]) -> None:
        self.table, self.seen = table, []  # type: ignore[var-annotated]

    async def request(self, method: str, url: str, *, headers=None, body=None, timeout=10.0):  # type: ignore[no-untyped-def]
        from shared.outbound_http import HttpResponse

        self.seen.append((method, url, dict(headers or {}), body))
        status, ctype, payload = self.table[(method, url.split("?")[0])]
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return HttpResponse(status, {"content-type": ctype}, raw)


GH = {
    "GITHUB_CLIENT_ID": "cid",
    "GITHUB_CLIENT_SECRET": "csec",
    "OAUTH_GITHUB_API_URL": "https://api.test",
    "OAUTH_GITHUB_TOKEN_URL": "https://gh.test/token",
}


async def test_github_form_token_then_primary_verified_email() -> None:
    from shared.oauth import exchange_code, github_identity

    cfg = provider_config("github", lambda k: GH.get(k, ""))
    t = Transport(
        {
            ("POST", "https://gh.test/token"): (
                200,
                "application/x-www-form-urlencoded",
                b"access_token=gho_x&scope=user%3Aemail&token_type=bearer",
            ),
            ("GET", "https://api.test/user"): (200, "application/json", {"id": 7, "login": "octo", "name": None}),
            ("GET", "https://api.test/user/emails"): (
                200,
                "application/json",
                [
                    {"email": "old@x.io", "primary": False, "verified": True},
                    {"email": "Octo@X.io", "primary": True, "verified": True},
                ],
            ),
        }
    )
    tokens = await exchange_code(t, cfg, "code1", "https://h.example/auth/callback", "v" * 43)
    who = await github_identity(t, cfg, tokens)
    assert (who.subject, who.email, who.name) == ("7", "octo@x.io", "octo")
    sent = t.seen[0][3].decode()
    assert "code_verifier=" + "v" * 43 in sent and "client_secret=csec" in sent
    assert t.seen[1][2]["authorization"] == "Bearer gho_x" and t.seen[1][2]["user-agent"]


@pytest.mark.parametrize(
    "emails,reason",
    [
        (
            [
                {"email": "a@x.io", "primary": True, "verified": False},
                {"email": "b@x.io", "primary": False, "verified": True},
            ],
            "email_missing",
        ),
        ([], "email_missing"),
        ([{"email": "a" * 400 + "@x.io", "primary": True, "verified": True}], "profile_fetch_failed"),
    ],
)
async def test_github_without_a_usable_primary_email_is_refused(emails: list[dict[str, object]], reason: str) -> None:
    from shared.oauth import TokenResponse, github_identity

    cfg = provider_config("github", lambda k: GH.get(k, ""))
    t = Transport(
        {
            ("GET", "https://api.test/user"): (200, "application/json", {"id": 7, "login": "octo"}),
            ("GET", "https://api.test/user/emails"): (200, "application/json", emails),
        }
    )
    with pytest.raises(OAuthError) as err:
        await github_identity(t, cfg, TokenResponse(access_token="gho_x"))
    assert err.value.reason == reason


async def test_github_bad_code_in_a_200_is_a_failed_exchange() -> None:
    from shared.oauth import exchange_code

    cfg = provider_config("github", lambda k: GH.get(k, ""))
    t = Transport({("POST", "https://gh.test/token"): (200, "application/json", {"error": "bad_verification_code"})})
    with pytest.raises(OAuthError) as err:
        await exchange_code(t, cfg, "c", "https://h/auth/callback", "v" * 43)
    assert err.value.reason == "code_exchange_failed"


async def test_google_id_token_with_several_audiences_needs_azp(rsa_key: rsa.RSAPrivateKey) -> None:
    from shared.oauth import JwksCache, TokenResponse, google_identity, oidc_nonce

    env = {"GOOGLE_CLIENT_ID": "gid", "GOOGLE_CLIENT_SECRET": "gs", "OAUTH_GOOGLE_JWKS_URL": "https://g.test/certs"}
    cfg = provider_config("google", lambda k: env.get(k, ""))
    t = Transport({("GET", "https://g.test/certs"): (200, "application/json", {"keys": [_jwk(rsa_key)]})})
    now = int(time.time())
    base = {
        "iss": "https://accounts.google.com",
        "sub": "42",
        "iat": now,
        "exp": now + 600,
        "nonce": oidc_nonce("n"),
        "email": "g@x.io",
        "email_verified": True,
    }
    ok = _sign(rsa_key, {**base, "aud": ["gid", "other"], "azp": "gid"})
    who = await google_identity(
        t,
        cfg,
        TokenResponse(access_token="a", id_token=ok),
        expected_nonce=oidc_nonce("n"),
        now=now,
        jwks=JwksCache(),
        verifier=CryptographyRsaVerifier(),
    )
    assert (who.subject, who.email) == ("42", "g@x.io")
    bad = _sign(rsa_key, {**base, "aud": ["gid", "other"], "azp": "other"})
    with pytest.raises(OAuthError) as err:
        await google_identity(
            t,
            cfg,
            TokenResponse(access_token="a", id_token=bad),
            expected_nonce=oidc_nonce("n"),
            now=now,
            jwks=JwksCache(),
            verifier=CryptographyRsaVerifier(),
        )
    assert err.value.reason == "id_token_invalid"


async def test_unknown_key_id_refetches_the_jwks_once_and_no_more(rsa_key: rsa.RSAPrivateKey) -> None:
    """Google rotates its keys: a new kid refetches the JWKS (once per sign-in, never in a loop)."""
    from shared.oauth import JwksCache, TokenResponse, google_identity, oidc_nonce

    env = {"GOOGLE_CLIENT_ID": "gid", "GOOGLE_CLIENT_SECRET": "gs", "OAUTH_GOOGLE_JWKS_URL": "https://g.test/certs"}
    cfg = provider_config("google", lambda k: env.get(k, ""))
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    table: dict[tuple[str, str], tuple[int, str, object]] = {
        ("GET", "https://g.test/certs"): (200, "application/json", {"keys": [_jwk(rsa_key)]})
    }
    t, jwks, verifier = Transport(table), JwksCache(), CryptographyRsaVerifier()
    now = int(time.time())
    claims = {
        "iss": "https://accounts.google.com",
        "aud": "gid",
        "sub": "42",
        "iat": now,
        "exp": now + 600,
        "nonce": oidc_nonce("n"),
        "email": "g@x.io",
        "email_verified": True,
    }

    async def sign_in(token: str) -> str:
        who = await google_identity(
            t,
            cfg,
            TokenResponse(access_token="a", id_token=token),
            expected_nonce=oidc_nonce("n"),
            now=now,
            jwks=jwks,
            verifier=verifier,
        )
        return who.subject

    assert await sign_in(_sign(rsa_key, claims)) == "42"
    assert len(t.seen) == 1
    assert await sign_in(_sign(rsa_key, claims)) == "42"
    assert len(t.seen) == 1  # cached
    # Rotation: the provider publishes the new key next to the old one and signs with it.
    table[("GET", "https://g.test/certs")] = (200, "application/json", {"keys": [_jwk(new_key, "k2"), _jwk(rsa_key)]})
    assert await sign_in(_sign(new_key, claims, {"alg": "RS256", "kid": "k2"})) == "42"
    assert len(t.seen) == 2
    # A kid nobody publishes: one refetch, then refused; the next attempt again costs one fetch at most.
    for attempt in (1, 2):
        with pytest.raises(OAuthError) as err:
            await sign_in(_sign(new_key, claims, {"alg": "RS256", "kid": "k9"}))
        assert err.value.reason == "id_token_invalid"
        assert len(t.seen) == 2 + attempt

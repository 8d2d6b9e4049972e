"""shared.jwt: what a forger, a replayer or a careless caller would try."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime, timezone
from typing import Any

import pytest

from shared.jwt import (
    MAX_TENANT_JWT_TTL,
    TENANT_JWT_AUDIENCE,
    HS256Signer,
    JwtError,
    TenantJwtClaims,
    decode_unverified_header,
    mint_tenant_jwt,
    verify_hs256,
    verify_tenant_jwt,
)

SECRET = "a-project-jwt-secret-of-at-least-32-bytes!"
OTHER = "another-project-jwt-secret-of-32-bytes-too!"
NOW = 1_800_000_000
USER = "00000000-0000-4000-8000-000000000011"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def craft(header: dict[str, Any], claims: dict[str, Any], secret: str = SECRET, alg: Any = hashlib.sha256) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    sig = hmac.new(secret.encode(), signing_input.encode(), alg).digest()
    return f"{signing_input}.{b64(sig)}"


def tenant_token(**overrides: Any) -> str:
    args: dict[str, Any] = dict(user_id=USER, tenant_id="partner1", tenant_role="admin", is_primary=False, now=NOW)
    args.update(overrides)
    return mint_tenant_jwt(HS256Signer(SECRET), **args)


def test_round_trip_and_exact_claims() -> None:
    claims = verify_hs256(tenant_token(), SECRET, now=NOW + 10, audience="authenticated")
    assert claims == {
        "sub": USER,
        "role": "authenticated",
        "aud": "authenticated",
        "tenant_id": "partner1",
        "tenant_role": "admin",
        "iat": NOW,
        "exp": NOW + 300,
    }
    assert decode_unverified_header(tenant_token()) == {"alg": "HS256", "typ": "JWT"}


def test_matches_an_independent_hs256_implementation() -> None:
    # Same bytes as a hand-rolled HMAC over our own header/payload: PostgREST will agree.
    tok = HS256Signer(SECRET).sign({"a": 1})
    head, body, sig = tok.split(".")
    expected = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert sig == b64(expected)


def test_kid_header_is_emitted_and_checked() -> None:
    tok = HS256Signer(SECRET, kid="key-2026").sign({"exp": NOW + 60})
    assert decode_unverified_header(tok)["kid"] == "key-2026"
    assert verify_hs256(tok, SECRET, now=NOW, kid="key-2026")["exp"] == NOW + 60
    with pytest.raises(JwtError, match="key id"):
        verify_hs256(tok, SECRET, now=NOW, kid="key-2025")


def test_wrong_secret() -> None:
    with pytest.raises(JwtError, match="signature"):
        verify_hs256(tenant_token(), OTHER, now=NOW)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "HS512", "HS384", "RS256", "ES256", None, ""])
def test_other_algorithms_refused(alg: Any) -> None:
    claims = {"sub": USER, "exp": NOW + 60}
    header = {"typ": "JWT"} if alg is None else {"alg": alg, "typ": "JWT"}
    for tok in (craft(header, claims), craft(header, claims).rsplit(".", 1)[0] + "."):
        with pytest.raises(JwtError, match="algorithm"):
            verify_hs256(tok, SECRET, now=NOW)


def test_hs512_with_the_right_secret_is_still_refused() -> None:
    with pytest.raises(JwtError, match="algorithm"):
        verify_hs256(craft({"alg": "HS512"}, {"exp": NOW + 60}, alg=hashlib.sha512), SECRET, now=NOW)


def test_payload_swap_keeps_no_signature() -> None:
    head, _, sig = tenant_token().split(".")
    evil = b64(json.dumps({"sub": USER, "tenant_id": "partner-seo", "exp": NOW + 60}).encode())
    with pytest.raises(JwtError, match="signature"):
        verify_hs256(f"{head}.{evil}.{sig}", SECRET, now=NOW)


def test_expiry_with_leeway() -> None:
    tok = tenant_token()  # exp = NOW + 300
    assert verify_hs256(tok, SECRET, now=NOW + 300 + 29, leeway=30)
    with pytest.raises(JwtError, match="expired"):
        verify_hs256(tok, SECRET, now=NOW + 300 + 30, leeway=30)
    with pytest.raises(JwtError, match="expired"):
        verify_hs256(tok, SECRET, now=NOW + 301, leeway=0)


def test_not_before_and_issued_in_future() -> None:
    with pytest.raises(JwtError, match="not yet valid"):
        verify_hs256(craft({"alg": "HS256"}, {"nbf": NOW + 100, "exp": NOW + 900}), SECRET, now=NOW)
    with pytest.raises(JwtError, match="future"):
        verify_hs256(tenant_token(now=NOW + 100), SECRET, now=NOW, leeway=30)
    assert verify_hs256(tenant_token(now=NOW + 20), SECRET, now=NOW, leeway=30)


def test_missing_or_malformed_time_claims() -> None:
    with pytest.raises(JwtError, match="exp"):
        verify_hs256(craft({"alg": "HS256"}, {"sub": USER}), SECRET, now=NOW)
    assert verify_hs256(craft({"alg": "HS256"}, {"sub": USER}), SECRET, now=NOW, require_exp=False)
    for bad in (True, "9999999999", [NOW]):
        with pytest.raises(JwtError, match="number"):
            verify_hs256(craft({"alg": "HS256"}, {"exp": bad}), SECRET, now=NOW)


def test_audience() -> None:
    assert verify_hs256(
        craft({"alg": "HS256"}, {"exp": NOW + 9, "aud": ["x", "authenticated"]}),
        SECRET,
        now=NOW,
        audience="authenticated",
    )
    for aud in ("anon", None, ["x"]):
        claims = {"exp": NOW + 9} if aud is None else {"exp": NOW + 9, "aud": aud}
        with pytest.raises(JwtError, match="audience"):
            verify_hs256(craft({"alg": "HS256"}, claims), SECRET, now=NOW, audience="authenticated")


@pytest.mark.parametrize(
    "tok",
    [
        "",
        "a.b",
        "a.b.c.d",
        "!!!.e30.sig",
        "e30.!!!.sig",
        b64(b"[]") + "." + b64(b"{}") + ".x",  # header not an object
        b64(json.dumps({"alg": "HS256"}).encode()) + "." + b64(b"not json") + ".x",
        b64(json.dumps({"alg": "HS256", "crit": ["exp"]}).encode()) + "." + b64(b"{}") + ".x",
    ],
)
def test_malformed_tokens(tok: str) -> None:
    with pytest.raises(JwtError):
        verify_hs256(tok, SECRET, now=NOW)


def test_junk_characters_in_signature_are_not_ignored() -> None:
    head, body, sig = tenant_token().split(".")
    with pytest.raises(JwtError):
        verify_hs256(f"{head}.{body}.{sig[:10]}*{sig[10:]}", SECRET, now=NOW)


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        HS256Signer("short")
    with pytest.raises(ValueError, match="32 bytes"):
        verify_hs256(tenant_token(), "short", now=NOW)


def test_super_admin_only_for_the_primary_tenant() -> None:
    with pytest.raises(JwtError, match="primary"):
        tenant_token(tenant_role="super_admin", tenant_id="partner1", is_primary=False)
    tok = tenant_token(tenant_role="super_admin", tenant_id="cozyartz", is_primary=True)
    assert verify_tenant_jwt(tok, SECRET, now=NOW).tenant_role == "super_admin"


@pytest.mark.parametrize("ttl", [0, -5, 3601, 86400 * 365])
def test_ttl_is_minutes_not_days(ttl: int) -> None:
    with pytest.raises(ValueError, match="ttl"):
        tenant_token(ttl_seconds=ttl)


@pytest.mark.parametrize("ttl", [1, 180, MAX_TENANT_JWT_TTL])
def test_every_minted_token_carries_the_audience_and_an_expiry_the_guard_accepts(ttl: int) -> None:
    # PostgREST's pre-request guard (20261126230448_api_request_guard.sql) refuses a tenant token without
    # `aud = authenticated`, without `exp`, or with `exp` more than MAX_TENANT_JWT_TTL ahead.
    claims = json.loads(base64.urlsafe_b64decode(tenant_token(ttl_seconds=ttl).split(".")[1] + "=="))
    assert claims["aud"] == TENANT_JWT_AUDIENCE == "authenticated"
    assert claims["exp"] == claims["iat"] + ttl and 0 < claims["exp"] - NOW <= MAX_TENANT_JWT_TTL
    with pytest.raises(ValueError):
        TenantJwtClaims.model_validate({k: v for k, v in claims.items() if k != "exp"})
    with pytest.raises(ValueError):
        TenantJwtClaims.model_validate({**claims, "aud": "other"})


@pytest.mark.parametrize(
    "field, value",
    [
        ("tenant_id", "Partner1"),
        ("tenant_id", "-partner"),
        ("tenant_id", "a" * 64),
        ("tenant_id", "p1' or 1=1"),
        ("tenant_id", ""),
        ("user_id", "not-a-uuid"),
        ("user_id", "1"),
        ("tenant_role", "owner"),
    ],
)
def test_mint_refuses_bad_inputs(field: str, value: str) -> None:
    with pytest.raises(ValueError):
        tenant_token(**{field: value})


def test_mint_accepts_datetime_now() -> None:
    tok = tenant_token(now=datetime.fromtimestamp(NOW, tz=timezone.utc))
    assert verify_tenant_jwt(tok, SECRET, now=NOW).iat == NOW


@pytest.mark.parametrize("extra", [{"role": "service_role"}, {"aud": "anon"}, {"is_admin": True}])
def test_verify_tenant_jwt_refuses_anything_but_a_tenant_token(extra: dict[str, Any]) -> None:
    claims = TenantJwtClaims(sub=USER, tenant_id="partner1", tenant_role="client", iat=NOW, exp=NOW + 60).model_dump()
    tok = HS256Signer(SECRET).sign({**claims, **extra})
    with pytest.raises(JwtError):
        verify_tenant_jwt(tok, SECRET, now=NOW)


def test_verify_tenant_jwt_refuses_missing_tenant_id() -> None:
    tok = HS256Signer(SECRET).sign(
        {
            "sub": USER,
            "role": "authenticated",
            "aud": "authenticated",
            "tenant_role": "admin",
            "iat": NOW,
            "exp": NOW + 60,
        }
    )
    with pytest.raises(JwtError, match="tenant"):
        verify_tenant_jwt(tok, SECRET, now=NOW)

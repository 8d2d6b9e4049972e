"""Keyrings, key ids and the envelope format under CPython: the pure logic every Worker runs.

Attacks are written to fail if the defence goes: a context or session signed with a retired,
expired or unknown key, a key id swapped under a valid signature, a ciphertext moved to another
tenant or row, a data key under a platform key the keyring does not hold.
"""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from controlplane.aead import CryptographyAead
from shared.context import (
    H_SIGNATURE,
    ContextError,
    context_headers,
    derive_tenant_key,
    derive_tenant_keyring,
    verify_context,
)
from shared.envelope import (
    EnvelopeError,
    UnknownKey,
    decrypt_secret,
    encrypt_secret,
    new_data_key,
    parse,
    rewrap_data_key,
    unwrap_data_key,
    wrap_data_key,
)
from shared.jwt import HS256Signer, JwtError, jwks_for, keyring_signer, verify_hs256
from shared.keys import LEGACY_KID, Key, Keyring, KeyringError, b64url_decode, b64url_encode, new_secret
from shared.models import TenantContext, TenantType
from shared.session import SessionError, issue_session, verify_session
from shared.tiers import Tier

NOW = 1_800_000_000
USER = "00000000-0000-4000-8000-000000000011"


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


# ---- keyrings -----------------------------------------------------------------------------


def test_a_bare_secret_is_the_legacy_key_and_formats_back_unchanged() -> None:
    secret = new_secret(48)
    ring = Keyring.parse(secret)
    assert ring.kids() == [LEGACY_KID] and ring.active.secret == secret
    assert ring.format() == secret


def test_keyring_text_round_trip_and_expiry() -> None:
    a, b = new_secret(), new_secret()
    ring = Keyring.parse(f"k2:{a},k1:{b}:{NOW}")
    assert ring.active.kid == "k2" and ring.format() == f"k2:{a},k1:{b}:{NOW}"
    assert ring.get("k1", now=NOW) is not None and ring.get("k1", now=NOW + 1) is None
    assert ring.get("k9", now=NOW) is None
    assert ring.next_kid("k") == "k3"


@pytest.mark.parametrize(
    "text", ["", "k1:", "K1:abc", "k1:a,k1:b", "k1:a:soon", "k1:a:1,k2:b", "k1:a b", "k1:abc:1:2", "-k:abc"]
)
def test_malformed_keyrings_are_refused_without_echoing_secrets(text: str) -> None:
    with pytest.raises(KeyringError) as err:
        Keyring.parse(text)
    assert "abc" not in str(err.value)


def test_rotation_keeps_the_old_key_until_its_not_after() -> None:
    old = Keyring.parse(new_secret(48))
    new = Key("s1", new_secret(48))
    ring = old.rotated(new, retire_after=NOW + 100, now=NOW)
    assert ring.active == new and ring.kids() == ["s1", "k0"]
    assert ring.get("k0", now=NOW + 100) is not None and ring.get("k0", now=NOW + 101) is None
    again = ring.rotated(Key("s2", new_secret(48)), retire_after=NOW + 500, now=NOW + 200)
    assert again.kids() == ["s2", "s1"]  # k0 had expired: dropped


def test_base64url_is_strict() -> None:
    assert b64url_decode(b64url_encode(b"\xff\x00ab")) == b"\xff\x00ab"
    for bad in ("ab=", "a b", "a+b", "a"):
        with pytest.raises(ValueError):
            b64url_decode(bad)


# ---- context ------------------------------------------------------------------------------


def _ctx(tenant: str = "partner1") -> TenantContext:
    return TenantContext(tenant, TenantType.PARTNER_SUBDOMAIN, Tier.GROWTH, "partner1.example.com", "r" * 32, NOW)


def test_context_signed_by_either_key_verifies_during_the_overlap() -> None:
    old_master, new_master = new_secret(48), new_secret(48)
    master = Keyring.parse(f"c1:{new_master},k0:{old_master}")
    tenant_ring = derive_tenant_keyring(master, "partner1")
    by_old = context_headers(_ctx(), derive_tenant_key(old_master, "partner1"))  # the legacy format, no kid
    by_new = context_headers(_ctx(), Key("c1", derive_tenant_key(new_master, "partner1")))
    assert by_old[H_SIGNATURE].startswith("v1=") and by_new[H_SIGNATURE].startswith("v1.c1=")
    for headers in (by_old, by_new):
        assert verify_context(headers, key=tenant_ring.format(), tenant_id="partner1", now=NOW).tenant_id == "partner1"


def test_legacy_tenant_key_is_byte_for_byte_what_it_was() -> None:
    master = new_secret(48)
    assert derive_tenant_keyring(master, "partner1").format() == derive_tenant_key(master, "partner1")


def test_context_under_a_retired_or_unknown_key_is_refused() -> None:
    old_master, new_master = new_secret(48), new_secret(48)
    ring = derive_tenant_keyring(f"c1:{new_master},k0:{old_master}:{NOW - 1}", "partner1")
    by_old = context_headers(_ctx(), derive_tenant_key(old_master, "partner1"))
    with pytest.raises(ContextError, match="does not hold"):
        verify_context(by_old, key=ring.format(), tenant_id="partner1", now=NOW)
    stranger = context_headers(_ctx(), Key("c9", derive_tenant_key(new_master, "partner1")))
    with pytest.raises(ContextError, match="does not hold"):
        verify_context(stranger, key=ring.format(), tenant_id="partner1", now=NOW)


def test_a_key_id_swapped_under_a_valid_signature_is_refused() -> None:
    a, b = new_secret(48), new_secret(48)
    ring = derive_tenant_keyring(f"c2:{a},c1:{b}", "partner1")
    headers = context_headers(_ctx(), Key("c1", derive_tenant_key(b, "partner1")))
    headers[H_SIGNATURE] = headers[H_SIGNATURE].replace("v1.c1=", "v1.c2=")
    with pytest.raises(ContextError, match="does not verify"):
        verify_context(headers, key=ring.format(), tenant_id="partner1", now=NOW)


def test_another_tenants_keyring_cannot_sign_for_this_tenant() -> None:
    master = f"c1:{new_secret(48)}"
    other = derive_tenant_keyring(master, "partner-seo").active
    headers = context_headers(_ctx(), other)  # partner-seo's key, partner1's context
    with pytest.raises(ContextError):
        verify_context(headers, key=derive_tenant_keyring(master, "partner1").format(), tenant_id="partner1", now=NOW)


# ---- sessions ------------------------------------------------------------------------------


def test_sessions_of_the_old_key_stay_good_after_rotation_until_it_retires() -> None:
    legacy = new_secret(48)
    old_token = issue_session(legacy, tenant_id="t1", user_id=USER, role="client", now=NOW)
    rotated = Keyring.parse(legacy).rotated(Key("s1", new_secret(48)), retire_after=NOW + 3600, now=NOW).format()
    assert verify_session(old_token, rotated, tenant_id="t1", now=NOW + 10).sub == USER
    new_token = issue_session(rotated, tenant_id="t1", user_id=USER, role="admin", now=NOW + 10)
    header = json.loads(base64.urlsafe_b64decode(new_token.split(".")[0] + "=="))
    assert header == {"alg": "HS256", "kid": "s1", "typ": "JWT"}
    assert verify_session(new_token, rotated, tenant_id="t1", now=NOW + 20).role == "admin"
    with pytest.raises(SessionError):  # the old key is gone once its not_after passed
        verify_session(old_token, rotated, tenant_id="t1", now=NOW + 3601)
    with pytest.raises(SessionError):  # and a Worker that never got the new key refuses its sessions
        verify_session(new_token, legacy, tenant_id="t1", now=NOW + 20)


def test_session_naming_an_unknown_or_swapped_kid_is_refused() -> None:
    ring = f"s2:{new_secret(48)},s1:{new_secret(48)}"
    token = issue_session(ring, tenant_id="t1", user_id=USER, role="client", now=NOW)
    # Re-sign the same claims under s1's key while the header names s2, and the reverse.
    header, payload, _ = token.split(".")
    s1 = Keyring.parse(ring).get("s1", now=None)
    assert s1 is not None
    from shared.session import session_key

    forged = HS256Signer(session_key(s1.secret, "t1"), kid="s2").sign(json.loads(b64url_decode(payload)))
    with pytest.raises(SessionError):
        verify_session(forged, ring, tenant_id="t1", now=NOW)
    unknown = HS256Signer(session_key(s1.secret, "t1"), kid="s9").sign(json.loads(b64url_decode(payload)))
    with pytest.raises(SessionError, match="key id"):
        verify_session(unknown, ring, tenant_id="t1", now=NOW)


# ---- the Supabase JWT --------------------------------------------------------------------


def test_tenant_tokens_name_the_active_key_and_verify_under_the_keyring() -> None:
    project, rotation = new_secret(48), new_secret(48)
    ring = Keyring.parse(f"j1:{rotation},k0:{project}")
    token = keyring_signer(ring).sign({"role": "authenticated", "exp": NOW + 60})
    assert json.loads(b64url_decode(token.split(".")[0]))["kid"] == "j1"
    assert verify_hs256(token, ring, now=NOW)["role"] == "authenticated"
    api_key = HS256Signer(project).sign({"role": "anon", "exp": NOW + 60})  # no kid: the project secret
    assert verify_hs256(api_key, ring, now=NOW)["role"] == "anon"
    with pytest.raises(JwtError, match="unknown key id"):
        verify_hs256(HS256Signer(rotation, kid="j7").sign({"exp": NOW + 60}), ring, now=NOW)
    jwks = jwks_for(ring)
    assert [k.get("kid") for k in jwks["keys"]] == ["j1", None]
    assert all(k["kty"] == "oct" and k["alg"] == "HS256" for k in jwks["keys"])


# ---- the envelope ----------------------------------------------------------------------------

AEAD = CryptographyAead()
PLATFORM = Keyring((Key("p1", new_secret()),))


def test_envelope_round_trip_and_format() -> None:
    async def go() -> None:
        dek = new_data_key()
        wrapped = await wrap_data_key(AEAD, PLATFORM, "partner1", "dk1", dek)
        assert wrapped.platform_key_id == "p1" and wrapped.wrapped.startswith("v1.p1.")
        assert await unwrap_data_key(AEAD, PLATFORM, "partner1", "dk1", wrapped.wrapped) == dek
        sealed = await encrypt_secret(AEAD, dek, "dk1", "partner1", "seo-tool", "sk_live_✓")
        assert parse(sealed).kid == "dk1" and "sk_live" not in sealed
        assert await decrypt_secret(AEAD, dek, "dk1", "partner1", "seo-tool", sealed) == "sk_live_✓"
        again = await encrypt_secret(AEAD, dek, "dk1", "partner1", "seo-tool", "sk_live_✓")
        assert again != sealed  # a fresh nonce every time

    run(go())


@pytest.mark.parametrize("where", ["tenant", "name", "key id"])
def test_a_ciphertext_moved_elsewhere_does_not_open(where: str) -> None:
    async def go() -> None:
        dek = new_data_key()
        sealed = await encrypt_secret(AEAD, dek, "dk1", "partner1", "seo-tool", "secret")
        tenant, name, kid = {
            "tenant": ("partner-seo", "seo-tool", "dk1"),
            "name": ("partner1", "analytics", "dk1"),
            "key id": ("partner1", "seo-tool", "dk2"),
        }[where]
        text = sealed if kid == "dk1" else sealed.replace("v1.dk1.", "v1.dk2.")
        with pytest.raises(EnvelopeError) as err:
            await decrypt_secret(AEAD, dek, kid, tenant, name, text)
        assert err.value.code == "tampered"

    run(go())


def test_a_data_key_wrapped_for_another_tenant_does_not_unwrap() -> None:
    async def go() -> None:
        wrapped = await wrap_data_key(AEAD, PLATFORM, "partner1", "dk1", new_data_key())
        with pytest.raises(EnvelopeError) as err:
            await unwrap_data_key(AEAD, PLATFORM, "partner-seo", "dk1", wrapped.wrapped)
        assert err.value.code == "tampered"

    run(go())


def test_unknown_platform_key_is_a_clear_error_and_tampering_is_detected() -> None:
    async def go() -> None:
        other = Keyring((Key("p9", new_secret()),))
        wrapped = await wrap_data_key(AEAD, other, "partner1", "dk1", new_data_key())
        with pytest.raises(UnknownKey) as err:
            await unwrap_data_key(AEAD, PLATFORM, "partner1", "dk1", wrapped.wrapped)
        assert err.value.kid == "p9" and err.value.code == "unknown_key"
        good = await wrap_data_key(AEAD, PLATFORM, "partner1", "dk1", new_data_key())
        body = good.wrapped.rsplit(".", 1)
        flipped = body[0] + "." + ("A" if body[1][0] != "A" else "B") + body[1][1:]
        with pytest.raises(EnvelopeError):
            await unwrap_data_key(AEAD, PLATFORM, "partner1", "dk1", flipped)
        for junk in ("", "v2.p1.x.y", "v1.p1.short.AAAAAAAAAAAAAAAAAAAAAAAA", "plaintext"):
            with pytest.raises(EnvelopeError):
                await unwrap_data_key(AEAD, PLATFORM, "partner1", "dk1", junk)

    run(go())


def test_rewrap_moves_a_data_key_to_the_new_platform_key() -> None:
    async def go() -> None:
        dek = new_data_key()
        wrapped = await wrap_data_key(AEAD, PLATFORM, "partner1", "dk1", dek)
        both = Keyring((Key("p2", new_secret()), *PLATFORM.keys))
        fresh = await rewrap_data_key(AEAD, both, "partner1", "dk1", wrapped.wrapped)
        assert fresh is not None and fresh.platform_key_id == "p2"
        assert await unwrap_data_key(AEAD, both.active_only(), "partner1", "dk1", fresh.wrapped) == dek
        assert await rewrap_data_key(AEAD, both, "partner1", "dk1", fresh.wrapped) is None  # already there

    run(go())


# ---- sign-in in progress across a SESSION_SECRET rotation --------------------------------------


def test_a_sign_in_started_before_a_session_key_rotation_finishes_after_it() -> None:
    from shared.oauth import OAuthError, encode_state, issue_state, pkce_verifier, verify_state

    legacy = new_secret(48)
    state = issue_state(
        tenant_id="t1", host="t1.example.com", provider="github", nonce="n" * 43, next_path="/", now=NOW
    )
    token = encode_state(legacy, state)
    verifier_at_start = pkce_verifier(legacy, "t1", "n" * 43, state.jti)
    rotated = Keyring.parse(legacy).rotated(Key("s1", new_secret(48)), retire_after=NOW + 3600, now=NOW).format()
    claims = verify_state(token, rotated, tenant_id="t1", host="t1.example.com", nonce="n" * 43, now=NOW + 5)
    assert claims.kid == "k0" and "kid" not in claims.model_dump()
    assert pkce_verifier(rotated, "t1", "n" * 43, claims.jti, kid=claims.kid) == verifier_at_start
    # New sign-ins use the new key, and a state naming a key the keyring does not hold is refused.
    fresh = encode_state(rotated, state)
    assert json.loads(b64url_decode(fresh.split(".")[0]))["kid"] == "s1"
    with pytest.raises(OAuthError):
        verify_state(fresh, legacy, tenant_id="t1", host="t1.example.com", nonce="n" * 43, now=NOW + 5)

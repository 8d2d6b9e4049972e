"""`keys rotate data|context|session|jwt --remote`: Cloudflare's side through the wrangler stand-in
and the fake API (tests/test_tenant_cli_remote.py's fixture), Supabase real (the local PostgREST
stack), its Management API a fake in the wire format that steers that PostgREST
(tests/fake_supabase_management.py).

The current keyrings come from the environment, the new ones go to --keyring-file (0600) and
nowhere else: not to stdout, stderr or the recorded wrangler commands (secrets files are
recorded by key names only).
"""

from __future__ import annotations

import asyncio
import json
import stat
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from controlplane.aead import CryptographyAead
from controlplane.keys import session_secret_name
from controlplane.supabase_keys import project_ref
from localrt.devvars import read_dev_vars, write_dev_vars
from shared.envelope import decrypt_secret, encrypt_secret, new_data_key, unwrap_data_key, wrap_data_key
from shared.keys import Key, Keyring, new_secret
from shared.session import SESSION_TTL_SECONDS
from tests.fake_supabase_management import FakeSupabaseManagement
from tests.test_key_rotation import _accepted
from tests.test_tenant_cli_remote import TENANT_DEPLOY, RemoteCli, W, remote  # noqa: F401  (the fixture)

AEAD = CryptographyAead()
MASTER = "master-secret-for-tests-0123456789"  # the fixture's CONTEXT_SIGNING_SECRET


def _add(remote: RemoteCli, tenant_id: str) -> None:
    code, _, err = remote(
        "add",
        tenant_id,
        "--name",
        "Keys",
        "--type",
        "custom-domain",
        "--domain",
        f"{tenant_id}.keys-remote.example",
        "--tier",
        "starter",
        "--json",
    )
    assert code == 0, err


def _deploys(remote: RemoteCli, since: int = 0) -> list[dict[str, Any]]:
    return [c for c in remote.commands()[since:] if c["argv"][:3] == [*W, "deploy"]]


def test_remote_data_rotation_rewraps_and_hands_back_the_new_keyring(
    remote: RemoteCli, pg_cluster: Any, tmp_path: Path
) -> None:
    old = Keyring((Key("p1", new_secret()),))
    remote.env.update({"PLATFORM_DATA_KEYS": old.format(), "CMGSITE_KEYS_SETTLE_SECONDS": "0"})
    _add(remote, "cli-keys")
    dek = new_data_key()

    async def seal() -> tuple[str, str]:
        wrapped = await wrap_data_key(AEAD, old, "cli-keys", "dk1", dek)
        return wrapped.wrapped, await encrypt_secret(AEAD, dek, "dk1", "cli-keys", "seo-tool", "remote-secret")

    wrapped, ciphertext = asyncio.run(seal())
    with pg_cluster.connect() as conn:
        conn.execute(
            "insert into public.tenant_data_keys (tenant_id, key_id, wrapped_key, platform_key_id)"
            " values ('cli-keys', 'dk1', %s, 'p1')",
            (wrapped,),
        )
        conn.execute(
            "insert into public.integration_credentials (tenant_id, name, key_id, ciphertext)"
            " values ('cli-keys', 'seo-tool', 'dk1', %s)",
            (ciphertext,),
        )
    before = len(remote.commands())
    out_file = tmp_path / "keys.env"
    code, out, err = remote("keys", "rotate", "data", "--keyring-file", str(out_file), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["active"] == "p2" and report["rewrapped"] == 1 and report["retired"] == ["p1"]
    ring = Keyring.parse(read_dev_vars(out_file)["PLATFORM_DATA_KEYS"])
    assert ring.kids() == ["p2"] and oct(out_file.stat().st_mode & 0o777) == "0o600"
    with pg_cluster.connect() as conn:
        row = conn.execute(
            "select wrapped_key, platform_key_id from public.tenant_data_keys where tenant_id = 'cli-keys'"
        ).fetchone()
    assert row[1] == "p2"

    async def reopen() -> str:
        again = await unwrap_data_key(AEAD, ring, "cli-keys", "dk1", row[0])
        return await decrypt_secret(AEAD, again, "dk1", "cli-keys", "seo-tool", ciphertext)

    assert asyncio.run(reopen()) == "remote-secret"
    deploys = _deploys(remote, before)
    assert [d["argv"][len(TENANT_DEPLOY) + 1] for d in deploys] == ["cmgsite-cli-keys", "cmgsite-cli-keys"]
    assert all("PLATFORM_DATA_KEYS" in d["secret_keys"] for d in deploys)
    for text in (out, err, remote.log.read_text()):
        assert old.active.secret not in text and ring.active.secret not in text


def test_remote_context_rotation_stages_tenants_then_switches_the_dispatcher(remote: RemoteCli, tmp_path: Path) -> None:
    remote.env["CMGSITE_KEYS_SETTLE_SECONDS"] = "0"
    _add(remote, "cli-ctx")
    before = len(remote.commands())
    out_file = tmp_path / "keys.env"
    started = time.time()
    code, out, err = remote("keys", "rotate", "context", "--keyring-file", str(out_file), "--json")
    assert code == 0, err
    report = json.loads(out)
    ring = Keyring.parse(read_dev_vars(out_file)["CONTEXT_SIGNING_SECRET"])
    assert ring.kids() == ["c1", "k0"] and ring.active.kid == report["active"]
    old = ring.get("k0", now=None)
    assert old is not None and old.secret == MASTER
    assert int(started) + 90 <= (old.not_after or 0) <= time.time() + 100  # 30 s max age + 5 s skew + 60 s
    # Order: tenants accept the new key, then the dispatcher signs with it, then tenants get the expiry.
    deploys = _deploys(remote, before)
    kinds = ["dispatcher" if "wrangler.dispatcher.toml" in d["argv"] else "tenant" for d in deploys]
    assert kinds == ["tenant", "dispatcher", "tenant"], kinds
    assert "CONTEXT_SIGNING_SECRET" in deploys[1]["secret_keys"]  # with the dispatcher's other secrets
    assert all("TENANT_CONTEXT_KEY" in d["secret_keys"] for d in (deploys[0], deploys[2]))
    for text in (out, err, remote.log.read_text()):
        assert MASTER not in text and ring.active.secret not in text


# ---- session: each tenant's SESSION_SECRET, kept in the operator's store ------------------------


def test_remote_session_rotation_keeps_the_old_key_from_the_operators_store(remote: RemoteCli, tmp_path: Path) -> None:
    _add(remote, "cli-sess")
    current = "legacy-session-secret-0123456789abcdef"  # what `add --remote` deployed (a bare secret: k0)
    remote.env["SESSION_SECRET_CLI_SESS"] = current
    before = len(remote.commands())
    out_file = tmp_path / "keys.env"
    started = time.time()
    code, out, err = remote("keys", "rotate", "session", "cli-sess", "--keyring-file", str(out_file), "--json")
    assert code == 0, err
    ring = Keyring.parse(read_dev_vars(out_file)["SESSION_SECRET_CLI_SESS"])
    assert ring.kids() == ["s1", "k0"] and ring.keys[1].secret == current
    assert int(started) + SESSION_TTL_SECONDS <= (ring.keys[1].not_after or 0) <= time.time() + SESSION_TTL_SECONDS + 61
    assert json.loads(out)["tenants"]["cli-sess"]["active"] == "s1"
    deploys = _deploys(remote, before)
    assert [d["argv"][len(TENANT_DEPLOY) + 1] for d in deploys] == ["cmgsite-cli-sess"]
    assert "SESSION_SECRET" in deploys[0]["secret_keys"]
    for text in (out, err, remote.log.read_text()):
        assert current not in text and ring.active.secret not in text
    # The next rotation starts from what the operator stored back: s1 stays, k0 keeps its expiry.
    remote.env["SESSION_SECRET_CLI_SESS"] = ring.format()
    code, out, err = remote("keys", "rotate", "session", "cli-sess", "--keyring-file", str(out_file), "--json")
    assert code == 0, err
    again = Keyring.parse(read_dev_vars(out_file)["SESSION_SECRET_CLI_SESS"])
    assert again.kids() == ["s2", "s1", "k0"] and again.keys[2].not_after == ring.keys[1].not_after


def test_add_remote_keeps_the_new_session_keyring_and_rotation_starts_from_it(
    remote: RemoteCli, tmp_path: Path
) -> None:
    """Cloudflare never gives a secret back: `add --remote` keeps the session key it deploys in the
    CLI's keyring file (0600) before deploying, so a later rotation keeps users signed in."""
    _add(remote, "cli-kept")
    kept_file = Path(remote.env["CMGSITE_STATE_DIR"]) / "secrets" / "remote-keyrings.dev.vars"
    kept = read_dev_vars(kept_file)["SESSION_SECRET_CLI_KEPT"]
    assert len(kept) >= 32 and stat.S_IMODE(kept_file.stat().st_mode) == 0o600
    assert "SESSION_SECRET_CLI_KEPT" not in remote.env
    before = len(remote.commands())
    code, out, err = remote("keys", "rotate", "session", "cli-kept", "--json")  # no env, no --keyring-file
    assert code == 0, err
    ring = Keyring.parse(read_dev_vars(kept_file)["SESSION_SECRET_CLI_KEPT"])
    assert ring.kids() == ["s1", "k0"] and ring.keys[1].secret == kept and json.loads(out)["signed_out"] is False
    assert len(_deploys(remote, before)) == 1
    for text in (out, err, remote.log.read_text()):
        assert kept not in text and ring.active.secret not in text


def test_remote_session_rotation_refuses_without_the_current_key_unless_signing_out(
    remote: RemoteCli, tmp_path: Path
) -> None:
    _add(remote, "cli-nokey")
    kept_file = Path(remote.env["CMGSITE_STATE_DIR"]) / "secrets" / "remote-keyrings.dev.vars"
    values = read_dev_vars(kept_file)
    del values["SESSION_SECRET_CLI_NOKEY"]  # added from another machine, or before keyrings were kept
    write_dev_vars(kept_file, values)
    before = len(remote.commands())
    out_file = tmp_path / "keys.env"
    code, _, err = remote("keys", "rotate", "session", "cli-nokey", "--keyring-file", str(out_file))
    assert code == 2 and "SESSION_SECRET_CLI_NOKEY" in err and "--sign-out" in err
    assert _deploys(remote, before) == [] and not out_file.exists()
    code, out, err = remote(
        "keys", "rotate", "session", "cli-nokey", "--sign-out", "--keyring-file", str(out_file), "--json"
    )
    assert code == 0, err
    assert Keyring.parse(read_dev_vars(out_file)["SESSION_SECRET_CLI_NOKEY"]).kids() == ["s1"]
    assert json.loads(out)["signed_out"] is True and len(_deploys(remote, before)) == 1


# ---- jwt: the Supabase project's signing keys through the Management API ------------------------

REF = "abcdefghijklmnopqrst"


@pytest.fixture
def management(remote: RemoteCli, supabase_stack: Any) -> Iterator[FakeSupabaseManagement]:
    with FakeSupabaseManagement(token="sbp-test-token", ref=REF, stack=supabase_stack) as api:
        remote.env.update(
            {
                "SUPABASE_ACCESS_TOKEN": "sbp-test-token",
                "SUPABASE_PROJECT_REF": REF,
                "SUPABASE_MANAGEMENT_API_URL": api.url,
            }
        )
        yield api


def test_remote_jwt_rotation_imports_promotes_probes_then_deploys(
    remote: RemoteCli, management: FakeSupabaseManagement, supabase_stack: Any, tmp_path: Path
) -> None:
    _add(remote, "cli-jwt")
    before, api_before = len(remote.commands()), len(management.requests)
    out_file = tmp_path / "keys.env"
    started = time.time()
    code, out, err = remote("keys", "rotate", "jwt", "--keyring-file", str(out_file), "--json")
    assert code == 0, err
    report = json.loads(out)
    ring = Keyring.parse(read_dev_vars(out_file)["SUPABASE_JWT_KEYS"])
    new = ring.active
    assert ring.kids() == [report["active"]] == [new.kid] and str(uuid.UUID(new.kid)) == new.kid
    # Supabase holds it (the secret the platform keeps), signs with it; the legacy key is only demoted.
    assert management.secrets[new.kid] == new.secret
    assert management.status_of(new.kid) == "in_use" and management.status_of(management.legacy_id) == "previously_used"
    calls = [(m, p.rsplit("/", 1)[-1] if m == "PATCH" else "", b) for m, p, b in management.requests[api_before:]]
    assert [c[0] for c in calls] == ["GET", "POST", "PATCH"]
    assert calls[1][2]["status"] == "standby" and calls[1][2]["private_jwk"]["kid"] == new.kid
    assert calls[2] == ("PATCH", new.kid, {"status": "in_use"})
    assert _accepted(supabase_stack, new)
    # Then (not before) the tenants sign with it.
    deploys = _deploys(remote, before)
    assert [d["argv"][len(TENANT_DEPLOY) + 1] for d in deploys] == ["cmgsite-cli-jwt"]
    assert "SUPABASE_JWT_SECRET" in deploys[0]["secret_keys"]
    for text in (out, err, remote.log.read_text(), json.dumps(management.requests)):
        assert new.secret not in text
    # The next rotation: the previous key of ours stays trusted until its tokens ran out ...
    remote.env["SUPABASE_JWT_KEYS"] = ring.format()
    code, out, err = remote("keys", "rotate", "jwt", "--keyring-file", str(out_file), "--json")
    assert code == 0, err
    second = Keyring.parse(read_dev_vars(out_file)["SUPABASE_JWT_KEYS"])
    assert second.kids() == [json.loads(out)["active"], new.kid] and json.loads(out)["revoked"] == []
    assert int(started) + 270 <= (second.keys[1].not_after or 0) <= time.time() + 271  # 180 s + 30 s + 60 s
    assert management.status_of(new.kid) == "previously_used" and _accepted(supabase_stack, new)
    # ... and is revoked by the rotation after that; the legacy key (it signed the API keys) never is.
    expired = Keyring((second.keys[0], Key(new.kid, new.secret, int(time.time()) - 1)))
    remote.env["SUPABASE_JWT_KEYS"] = expired.format()
    code, out, err = remote("keys", "rotate", "jwt", "--keyring-file", str(out_file), "--json")
    assert code == 0, err
    assert json.loads(out)["revoked"] == [new.kid] and management.status_of(new.kid) == "revoked"
    assert not _accepted(supabase_stack, new)
    assert management.status_of(management.legacy_id) == "previously_used"
    assert new.kid not in Keyring.parse(read_dev_vars(out_file)["SUPABASE_JWT_KEYS"]).kids()


def test_remote_jwt_rotation_refuses_a_keyring_of_another_project(
    remote: RemoteCli, management: FakeSupabaseManagement, tmp_path: Path
) -> None:
    remote.env["SUPABASE_JWT_KEYS"] = Keyring((Key(str(uuid.uuid4()), new_secret(48)),)).format()
    before, api_before = len(remote.commands()), len(management.requests)
    code, _, err = remote("keys", "rotate", "jwt", "--keyring-file", str(tmp_path / "keys.env"))
    assert code != 0 and "does not hold" in err
    assert [m for m, _, _ in management.requests[api_before:]] == ["GET"] and _deploys(remote, before) == []


def test_remote_jwt_rotation_needs_an_access_token_and_a_valid_one(
    remote: RemoteCli, management: FakeSupabaseManagement, tmp_path: Path
) -> None:
    del remote.env["SUPABASE_ACCESS_TOKEN"]
    code, _, err = remote("keys", "rotate", "jwt", "--keyring-file", str(tmp_path / "keys.env"))
    assert code != 0 and "SUPABASE_ACCESS_TOKEN" in err
    remote.env["SUPABASE_ACCESS_TOKEN"] = "sbp-wrong"
    before = len(remote.commands())
    code, _, err = remote("keys", "rotate", "jwt", "--keyring-file", str(tmp_path / "keys.env"))
    assert code != 0 and "HTTP 401" in err and "sbp-wrong" not in err
    assert _deploys(remote, before) == [] and set(management.secrets) == set()


def test_remote_rotation_needs_a_keyring_file_outside_git(remote: RemoteCli) -> None:
    remote.env["PLATFORM_DATA_KEYS"] = Keyring((Key("p1", new_secret()),)).format()
    inside = Path(__file__).resolve().parent / "keys.env"  # in the repo, not git-ignored
    code, _, err = remote("keys", "rotate", "data", "--keyring-file", str(inside))
    assert code == 2 and "git-ignored" in err and not inside.exists()


def test_the_project_ref_comes_only_from_a_hosted_supabase_url() -> None:
    assert project_ref("https://abcdefghijklmnopqrst.supabase.co") == "abcdefghijklmnopqrst"
    assert project_ref("http://127.0.0.1:54321") is None
    assert project_ref("https://abcdefghijklmnopqrst.supabase.co.attacker.example") is None
    assert project_ref("") is None


def test_session_keyring_names_are_one_per_tenant() -> None:
    assert session_secret_name("cli-sess") == "SESSION_SECRET_CLI_SESS"
    assert session_secret_name("a-b") != session_secret_name("ab")

"""`keys rotate data|context --remote`: Cloudflare's side through the wrangler stand-in and the fake
API (tests/test_tenant_cli_remote.py's fixture), Supabase real (the local PostgREST stack).

The current keyrings come from the environment, the new ones go to --keyring-file (0600) and
nowhere else: not to stdout, stderr or the recorded wrangler commands (secrets files are
recorded by key names only). `session` and `jwt` refuse --remote.
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from controlplane.aead import CryptographyAead
from localrt.devvars import read_dev_vars
from shared.envelope import decrypt_secret, encrypt_secret, new_data_key, unwrap_data_key, wrap_data_key
from shared.keys import Key, Keyring, new_secret
from tests.test_tenant_cli_remote import TENANT_DEPLOY, RemoteCli, W, remote  # noqa: F401  (the fixture)

AEAD = CryptographyAead()
MASTER = "master-secret-for-tests-0123456789"  # the fixture's CONTEXT_SIGNING_SECRET


def _add(remote: RemoteCli, tenant_id: str) -> None:
    code, _, err = remote("add", tenant_id, "--name", "Keys", "--type", "custom-domain", "--domain",
                          f"{tenant_id}.keys-remote.example", "--tier", "starter", "--json")
    assert code == 0, err


def _deploys(remote: RemoteCli, since: int = 0) -> list[dict[str, Any]]:
    return [c for c in remote.commands()[since:] if c["argv"][:3] == [*W, "deploy"]]


def test_remote_data_rotation_rewraps_and_hands_back_the_new_keyring(remote: RemoteCli, pg_cluster: Any,
                                                                      tmp_path: Path) -> None:
    old = Keyring((Key("p1", new_secret()),))
    remote.env.update({"PLATFORM_DATA_KEYS": old.format(), "CMGSITE_KEYS_SETTLE_SECONDS": "0"})
    _add(remote, "cli-keys")
    dek = new_data_key()

    async def seal() -> tuple[str, str]:
        wrapped = await wrap_data_key(AEAD, old, "cli-keys", "dk1", dek)
        return wrapped.wrapped, await encrypt_secret(AEAD, dek, "dk1", "cli-keys", "seo-tool", "remote-secret")

    wrapped, ciphertext = asyncio.run(seal())
    with pg_cluster.connect() as conn:
        conn.execute("insert into public.tenant_data_keys (tenant_id, key_id, wrapped_key, platform_key_id)"
                     " values ('cli-keys', 'dk1', %s, 'p1')", (wrapped,))
        conn.execute("insert into public.integration_credentials (tenant_id, name, key_id, ciphertext)"
                     " values ('cli-keys', 'seo-tool', 'dk1', %s)", (ciphertext,))
    before = len(remote.commands())
    out_file = tmp_path / "keys.env"
    code, out, err = remote("keys", "rotate", "data", "--keyring-file", str(out_file), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["active"] == "p2" and report["rewrapped"] == 1 and report["retired"] == ["p1"]
    ring = Keyring.parse(read_dev_vars(out_file)["PLATFORM_DATA_KEYS"])
    assert ring.kids() == ["p2"] and oct(out_file.stat().st_mode & 0o777) == "0o600"
    with pg_cluster.connect() as conn:
        row = conn.execute("select wrapped_key, platform_key_id from public.tenant_data_keys"
                           " where tenant_id = 'cli-keys'").fetchone()
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


def test_remote_context_rotation_stages_tenants_then_switches_the_dispatcher(remote: RemoteCli,
                                                                           tmp_path: Path) -> None:
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
    assert started + 90 <= (old.not_after or 0) <= time.time() + 100  # 30 s max age + 5 s skew + 60 s
    # Order: tenants accept the new key, then the dispatcher signs with it, then tenants get the expiry.
    deploys = _deploys(remote, before)
    kinds = ["dispatcher" if "wrangler.dispatcher.toml" in d["argv"] else "tenant" for d in deploys]
    assert kinds == ["tenant", "dispatcher", "tenant"], kinds
    assert "CONTEXT_SIGNING_SECRET" in deploys[1]["secret_keys"]  # with the dispatcher's other secrets
    assert all("TENANT_CONTEXT_KEY" in d["secret_keys"] for d in (deploys[0], deploys[2]))
    for text in (out, err, remote.log.read_text()):
        assert MASTER not in text and ring.active.secret not in text


@pytest.mark.parametrize("kind", ["session", "jwt"])
def test_remote_session_and_jwt_rotation_refuse_before_writing(remote: RemoteCli, kind: str) -> None:
    before = len(remote.commands())
    code, _, err = remote("keys", "rotate", kind)
    assert code == 2 and "not implemented" in err
    assert _deploys(remote, before) == []


def test_remote_rotation_needs_a_keyring_file_outside_git(remote: RemoteCli) -> None:
    remote.env["PLATFORM_DATA_KEYS"] = Keyring((Key("p1", new_secret()),)).format()
    inside = Path(__file__).resolve().parent / "keys.env"  # in the repo, not git-ignored
    code, _, err = remote("keys", "rotate", "data", "--keyring-file", str(inside))
    assert code == 2 and "git-ignored" in err and not inside.exists()

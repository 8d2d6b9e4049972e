"""Key rotation with an overlap window: one command per secret (`tenants.py keys rotate KIND`).

Every rotating secret is a keyring (shared.keys): the first key is active (signs, wraps), the
others are still accepted, until their not_after. A rotation adds the new key where it is
*verified* first, then makes it active where it is *used*, and lets the old one run out, so no
request in flight is refused at any point:

| kind | keyring (where) | steps |
|---|---|---|
| `data` | PLATFORM_DATA_KEYS (every tenant Worker; locally `.local/secrets/platform.dev.vars`) | 1. Workers hold new + old (new data keys wrapped under new, both unwrap), and the previous Worker versions have finished (SETTLE_SECONDS) 2. every tenant's data key re-wrapped under new (optimistic, row by row) 3. checked: no row left under an old key 4. old keys dropped from the Workers |
| `context` | CONTEXT_SIGNING_SECRET (the dispatcher) -> TENANT_CONTEXT_KEY (each tenant, derived) | 1. tenants accept new + old 2. the dispatcher signs with new 3. tenants keep old until MAX_AGE + skew after the switch (remote); locally the running dispatcher switches at its next start, so old stays until `keys retire context` |
| `session` | SESSION_SECRET (per tenant) | new active, old accepted until the sessions it signed have expired (SESSION_TTL_SECONDS) |
| `jwt` | SUPABASE_JWT_KEYS (PostgREST's JWKS; locally the platform file, applied by the run command) -> SUPABASE_JWT_SECRET (tenants: the active key) | 1. PostgREST accepts new (probed) 2. tenants sign with new 3. the previous key is accepted until the tokens it signed expired (3 min + leeway), then PostgREST drops it. The project's own secret stays accepted: it signed the anon and service-role API keys |

Locally each step that changes a Worker's secrets redeploys it (the platform host replaces it
without a gap) and the command waits until it serves again; the keyrings live in
`.local/secrets/`. With `--remote`, `data` and `context` read the current keyrings from the
environment (PLATFORM_DATA_KEYS, CONTEXT_SIGNING_SECRET: the operator's secret store), deploy with
wrangler, and write every new keyring to `--keyring-file` (0600, never inside the repo unless
git-ignored) as soon as it is in use, for the operator to put back into that store; the old
context key then expires by itself (MAX_AGE + skew + margin after the switch). `session` (a
tenant's secret cannot be read back from Cloudflare) and `jwt` (hosted Supabase takes new JWT
keys through its dashboard) refuse `--remote`. Keys and plaintexts are never printed or logged:
only key ids.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from controlplane.errors import BackendError, ConfigError, Refused
from controlplane.lifecycle import ControlPlane
from controlplane.model import TenantRecord
from controlplane.output import Reporter
from shared.context import MAX_AGE_SECONDS, MAX_CLOCK_SKEW_SECONDS
from shared.envelope import Aead, EnvelopeError, rewrap_data_key
from shared.jwt import HS256Signer
from shared.keys import Key, Keyring, KeyringError, new_secret
from shared.models import TenantStatus
from shared.session import SESSION_TTL_SECONDS

TENANT_JWT_TTL_SECONDS = 180  # tenant_worker.supabase_access.TENANT_JWT_TTL_SECONDS (not imported: a Worker module)
JWT_LEEWAY_SECONDS = 30  # PostgREST's clock skew allowance
MARGIN_SECONDS = 60
JWT_PROBE_SECONDS = 30.0
# After a deploy, instances of the previous Worker version may still be serving requests they had
# already taken (Cloudflare's old isolates finish theirs; the local host keeps a replaced Worker
# 60 s). Nothing is re-wrapped under the new key until those requests are done, since that version
# cannot open it: seconds under normal load. A request that still meets one answers 500
# `encryption_key_unknown`, and its retry reaches the new version.
SETTLE_SECONDS = 12.0


class KeyStore(Protocol):
    """Where the platform-wide keyrings are read from and written back to."""

    def read(self, name: str) -> str: ...
    def write(self, name: str, value: str) -> None: ...
    def changed_at(self, name: str) -> float | None: ...


@dataclass
class LocalKeyFiles:
    """The local platform's keyrings (`.local/secrets/`): the dispatcher's in its own file, the
    others in platform.dev.vars (what `python -m localrt run` hands every tenant, and PostgREST)."""

    secrets_dir: Path

    def path(self, name: str) -> Path:
        return self.secrets_dir / ("dispatcher.dev.vars" if name == "CONTEXT_SIGNING_SECRET" else "platform.dev.vars")

    def read(self, name: str) -> str:
        from localrt.devvars import read_dev_vars

        return read_dev_vars(self.path(name)).get(name, "")

    def write(self, name: str, value: str) -> None:
        from localrt.devvars import read_dev_vars, write_dev_vars

        values = read_dev_vars(self.path(name))
        values[name] = value
        write_dev_vars(self.path(name), values)

    def changed_at(self, name: str) -> float | None:
        try:
            return self.path(name).stat().st_mtime
        except OSError:
            return None


class RemoteKeyFile:
    """--remote: current keyrings from the environment (the operator's secret store); new ones
    written to `path` (0600 `NAME=value` lines) for the operator to store back."""

    def __init__(self, env: Mapping[str, str], path: Path | None) -> None:
        self.env, self.path = dict(env), path

    def read(self, name: str) -> str:
        return self.env.get(name, "")

    def write(self, name: str, value: str) -> None:
        from localrt.devvars import read_dev_vars, write_dev_vars

        if self.path is None:
            raise Refused("--remote rotation writes the new keyrings to --keyring-file: name one")
        values = read_dev_vars(self.path)
        values[name] = value
        write_dev_vars(self.path, values)
        self.env[name] = value

    def changed_at(self, name: str) -> float | None:
        return None


def check_keyring_file(path: Path, repo: Path) -> None:
    """A file that will hold keys: never one git could commit."""
    import subprocess

    resolved = path.resolve()
    if resolved.is_relative_to(repo):
        res = subprocess.run(["git", "check-ignore", "-q", str(resolved)], cwd=repo, capture_output=True)
        if res.returncode != 0:
            raise Refused(f"{path} is not git-ignored: a keyring file must never be committable")


def _ring(value: str, what: str) -> Keyring:
    try:
        return Keyring.parse(value)
    except KeyringError as exc:
        raise ConfigError(f"{what}: {exc}") from None


class KeyRotation:
    def __init__(self, cp: ControlPlane, store: KeyStore, reporter: Reporter, aead: Aead, *,
                 clock: Callable[[], float] = time.time,
                 host_started_at: Callable[[], float | None] = lambda: None,
                 settle_seconds: float = SETTLE_SECONDS) -> None:
        self.cp, self.store, self.reporter, self.aead, self.clock = cp, store, reporter, aead, clock
        self.host_started_at = host_started_at
        self.settle_seconds = settle_seconds

    def _local_only(self, kind: str, why: str) -> None:
        if not self.cp.local:
            raise Refused(f"keys rotate {kind} --remote is not implemented: {why}. See docs/encryption.md")

    # ---- helpers ------------------------------------------------------------------------
    async def served(self, tenant_id: str | None = None) -> list[TenantRecord]:
        """The tenants whose own Worker is deployed (others get the keys when they are deployed)."""
        tenants = [await self.cp.require(tenant_id)] if tenant_id else await self.cp.registry.tenants()
        return [t for t in tenants if t.status is not TenantStatus.INACTIVE and await self.cp.scripts.serves(t)]

    async def redeploy(self, tenants: list[TenantRecord], secrets: Callable[[TenantRecord], dict[str, str]]) -> None:
        """Deploy each tenant's Worker with these secrets and wait until all serve again."""
        for tenant in tenants:
            await self.cp._deploy(tenant, secrets(tenant))
        self.cp._changed()

    def _write(self, name: str, ring: Keyring) -> None:
        if self.cp.dry_run:
            self.reporter.plan("keys", f"store {name} = keyring {ring.kids()}")
            return
        self.store.write(name, ring.format())

    def _read(self, name: str) -> Keyring:
        value = self.store.read(name)
        if not value:
            where = "the environment" if not self.cp.local else "the local platform's secrets (run it once)"
            raise ConfigError(f"{name} is not set in {where}")
        return _ring(value, name)

    # ---- status -------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Key ids (never keys) of the platform-wide keyrings."""
        out: dict[str, Any] = {}
        for kind, name in (("context", "CONTEXT_SIGNING_SECRET"), ("data", "PLATFORM_DATA_KEYS"),
                           ("jwt", "SUPABASE_JWT_KEYS")):
            value = self.store.read(name)
            out[kind] = _describe(_ring(value, name)) if value else None
        return out

    # ---- data: PLATFORM_DATA_KEYS -------------------------------------------------------
    async def rotate_data(self, *, retire: bool = True) -> dict[str, Any]:
        current = self._read("PLATFORM_DATA_KEYS")
        if len(current.keys) > 1:  # an earlier rotation stopped part-way: finish it with its key
            ring, new = current, current.active
            self.reporter.step(f"data: resuming the rotation to {new.kid}")
        else:
            new = Key(current.next_kid("p"), new_secret())
            ring = Keyring((new, *current.keys))
        self._write("PLATFORM_DATA_KEYS", ring)
        tenants = await self.served()
        self.reporter.step(f"data: {len(tenants)} Worker(s) now read {ring.kids()} and wrap new data keys under {new.kid}")
        await self.redeploy(tenants, lambda t: {"PLATFORM_DATA_KEYS": ring.format()})
        if tenants and not self.cp.dry_run:
            self.reporter.step(f"data: waiting {self.settle_seconds:.0f} s for the previous Worker versions to finish")
            await _sleep(self.settle_seconds)
        rewrapped = await self.rewrap(ring)
        left = [r for r in await self.cp.registry.data_keys() if r["platform_key_id"] != new.kid]
        if left and not self.cp.dry_run:
            raise BackendError(f"data: {len(left)} data key(s) are still wrapped under old keys (written during "
                               "the rotation?): re-run `keys rotate data` to finish")
        retired: list[str] = []
        if retire and len(ring.keys) > 1:
            retired = [k.kid for k in ring.keys[1:]]
            final = ring.active_only()
            self._write("PLATFORM_DATA_KEYS", final)
            await self.redeploy(tenants, lambda t: {"PLATFORM_DATA_KEYS": final.format()})
        return {"kind": "data", "active": new.kid, "rewrapped": rewrapped, "retired": retired,
                "workers": [t.script_name for t in tenants]}

    async def rewrap(self, ring: Keyring) -> int:
        """Every data key not under the active platform key, re-wrapped under it (row by row; a row
        someone changed meanwhile is left for the next pass)."""
        done = 0
        for row in await self.cp.registry.data_keys():
            if row["platform_key_id"] == ring.active.kid:
                continue
            try:
                fresh = await rewrap_data_key(self.aead, ring, row["tenant_id"], row["key_id"], row["wrapped_key"])
            except EnvelopeError as exc:
                raise BackendError(f"data: the data key {row['key_id']} of {row['tenant_id']} does not open "
                                   f"({exc.code}): not re-wrapped") from None
            if fresh is None:
                continue
            if await self.cp.registry.rewrap_data_key(row["tenant_id"], row["key_id"], row["wrapped_key"],
                                                      fresh.wrapped, fresh.platform_key_id):
                done += 1
        self.reporter.step(f"data: {done} data key(s) re-wrapped under {ring.active.kid}")
        return done

    # ---- context: CONTEXT_SIGNING_SECRET -> TENANT_CONTEXT_KEY ----------------------------
    async def _deploy_context(self, tenants: list[TenantRecord], master: Keyring) -> None:
        """Tenants' TENANT_CONTEXT_KEY derived from `master` (not yet, or no longer, the dispatcher's)."""
        self.cp.scripts.context_master = master.format()  # type: ignore[attr-defined]
        try:
            await self.redeploy(tenants, lambda t: {})
        finally:
            self.cp.scripts.context_master = None  # type: ignore[attr-defined]

    async def rotate_context(self) -> dict[str, Any]:
        now = self.clock()
        current = self._read("CONTEXT_SIGNING_SECRET").without_expired(now)
        new = Key(current.next_kid("c"), new_secret(48))
        tenants = await self.served()
        staged = current.staged(new)
        self.reporter.step(f"context: {len(tenants)} tenant Worker(s) accept {staged.kids()}")
        await self._deploy_context(tenants, staged)
        switched = Keyring((new, *current.keys))
        if self.cp.local:
            # The running local dispatcher keeps its key until the platform restarts, so tenants keep
            # accepting the old one (no expiry) until `keys retire context`.
            self._write("CONTEXT_SIGNING_SECRET", switched)
            await self._deploy_context(tenants, switched)
            return {"kind": "context", "active": new.kid, "accepted": switched.kids(),
                    "workers": [t.script_name for t in tenants],
                    "note": f"the local dispatcher signs with {new.kid} from its next start (python -m localrt run); "
                            f"then `keys retire context` drops {[k.kid for k in current.keys]}"}
        if tenants and not self.cp.dry_run:  # every tenant version that only knew the old key is gone
            await _sleep(self.settle_seconds)
        self.cp.master_secret = switched.format()
        self.reporter.step(f"context: the dispatcher signs with {new.kid}")
        self.cp.deploy_dispatcher()
        retire_after = int(now) + MAX_AGE_SECONDS + MAX_CLOCK_SKEW_SECONDS + MARGIN_SECONDS
        expiring = Keyring((new, *(Key(k.kid, k.secret, k.not_after or retire_after) for k in current.keys)))
        self._write("CONTEXT_SIGNING_SECRET", expiring)
        await self._deploy_context(tenants, expiring)
        return {"kind": "context", "active": new.kid, "accepted": expiring.kids(), "old_accepted_until": retire_after,
                "workers": [t.script_name for t in tenants]}

    async def retire_context(self) -> dict[str, Any]:
        ring = self._read("CONTEXT_SIGNING_SECRET")
        if not self.cp.local:
            return {"kind": "context", "active": ring.active.kid, "retired": [],
                    "note": "on Cloudflare the old key expires by itself (its not_after); the next rotation drops it"}
        if len(ring.keys) == 1:
            return {"kind": "context", "active": ring.active.kid, "retired": []}
        started, changed = self.host_started_at(), self.store.changed_at("CONTEXT_SIGNING_SECRET")
        if started is not None and changed is not None and started < changed:
            raise Refused("context: the running platform's dispatcher started before the switch and still signs "
                          "with the old key: restart it (python -m localrt run), then retire")
        final = ring.active_only()
        tenants = await self.served()
        self._write("CONTEXT_SIGNING_SECRET", final)
        await self._deploy_context(tenants, final)
        return {"kind": "context", "active": final.active.kid, "retired": [k.kid for k in ring.keys[1:]]}

    # ---- session: SESSION_SECRET, per tenant --------------------------------------------
    async def rotate_session(self, tenant_id: str | None) -> dict[str, Any]:
        self._local_only("session", "a tenant's SESSION_SECRET cannot be read back from Cloudflare, and a new "
                                    "one alone would sign every user out")
        tenants = await self.served(tenant_id)
        if tenant_id and not tenants:
            raise Refused(f"tenant {tenant_id!r} has no Worker deployed: nothing to rotate")
        now = self.clock()
        retire_after = int(now) + SESSION_TTL_SECONDS + MARGIN_SECONDS
        rings: dict[str, Keyring] = {}
        for tenant in tenants:
            secrets = self.cp.scripts.secrets_of(tenant)  # type: ignore[attr-defined]
            current = _ring(secrets.get("SESSION_SECRET", ""), f"SESSION_SECRET of {tenant.tenant_id}")
            current = current.without_expired(now)
            rings[tenant.tenant_id] = current.rotated(Key(current.next_kid("s"), new_secret(48)),
                                                      retire_after=retire_after, now=now)
        await self.redeploy(tenants, lambda t: {"SESSION_SECRET": rings[t.tenant_id].format()})
        return {"kind": "session", "tenants": {tid: _describe(r) for tid, r in rings.items()},
                "old_accepted_until": retire_after}

    # ---- jwt: SUPABASE_JWT_KEYS (PostgREST) -> SUPABASE_JWT_SECRET (tenants) --------------
    async def rotate_jwt(self) -> dict[str, Any]:
        self._local_only("jwt", "hosted Supabase takes a new JWT signing key through its dashboard (add it as a "
                                "standby key, deploy the tenants with it, then rotate there)")
        value = self.store.read("SUPABASE_JWT_KEYS")
        now = self.clock()
        current = _ring(value, "SUPABASE_JWT_KEYS").without_expired(now) if value else None
        new = Key(current.next_kid("j") if current else "j1", new_secret(48))
        staged = current.staged(new) if current else Keyring((new,))
        self._write("SUPABASE_JWT_KEYS", staged)
        if not self.cp.dry_run:
            await self._await_accepted(new)
        self.reporter.step(f"jwt: the data API accepts {new.kid}")
        retire_after = int(now) + TENANT_JWT_TTL_SECONDS + JWT_LEEWAY_SECONDS + MARGIN_SECONDS
        previous = current.keys if current else ()
        switched = Keyring((new, *(Key(k.kid, k.secret, k.not_after or retire_after) for k in previous)))
        self._write("SUPABASE_JWT_KEYS", switched)
        tenants = await self.served()
        signing = switched.active_only().format()
        await self.redeploy(tenants, lambda t: {"SUPABASE_JWT_SECRET": signing})
        return {"kind": "jwt", "active": new.kid, "accepted": switched.kids(), "old_accepted_until": retire_after,
                "workers": [t.script_name for t in tenants]}

    async def _await_accepted(self, key: Key) -> None:
        deadline = time.monotonic() + JWT_PROBE_SECONDS
        while True:
            iat = int(self.clock())
            probe = HS256Signer(key.secret, kid=key.kid).sign({"role": "anon", "iat": iat, "exp": iat + 60})
            if await self.cp.registry.accepts_token(probe):
                return
            if time.monotonic() > deadline:
                raise BackendError(f"jwt: the data API did not start accepting {key.kid} within "
                                   f"{JWT_PROBE_SECONDS:.0f} s (is `python -m localrt run` running?); nothing "
                                   "was deployed: re-run `keys rotate jwt` once it is")
            await _sleep(0.25)


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def _describe(ring: Keyring) -> dict[str, Any]:
    return {"active": ring.active.kid,
            "keys": [{"kid": k.kid, **({"not_after": k.not_after} if k.not_after is not None else {})}
                     for k in ring.keys]}



def local_host_started_at(state_dir: Path) -> float | None:
    """When the running local platform host started (its config file is written at start); None if none runs."""
    from localrt.workerd import control_from_status

    if control_from_status(state_dir) is None:
        return None
    try:
        return (state_dir / "host-config.json").stat().st_mtime
    except OSError:
        return None

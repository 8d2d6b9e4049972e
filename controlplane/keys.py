"""Key rotation with an overlap window: one command per secret (`tenants.py keys rotate KIND`).

Every rotating secret is a keyring (shared.keys): the first key is active (signs, wraps), the
others are still accepted, until their not_after. A rotation adds the new key where it is
*verified* first, then makes it active where it is *used*, and lets the old one run out, so no
request in flight is refused at any point:

| kind | keyring (where) | steps |
|---|---|---|
| `data` | PLATFORM_DATA_KEYS (every tenant Worker; locally `.local/secrets/platform.dev.vars`) | 1. Workers hold new + old (new data keys wrapped under new, both unwrap), and the previous Worker versions have finished (SETTLE_SECONDS) 2. every tenant's data key re-wrapped under new (optimistic, row by row) 3. checked: no row left under an old key 4. old keys dropped from the Workers |
| `context` | CONTEXT_SIGNING_SECRET (the dispatcher) -> TENANT_CONTEXT_KEY (each tenant, derived) | 1. tenants accept new + old 2. the dispatcher signs with new (locally: the platform host starts a new dispatcher on the same public socket and drains the old one) 3. tenants keep old until MAX_AGE + skew + margin after the switch, or until `keys retire context` |
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
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from controlplane.errors import BackendError, ConfigError, Refused
from controlplane.lifecycle import ControlPlane
from controlplane.model import TenantRecord
from controlplane.output import Reporter
from controlplane.supabase_keys import SigningKeys
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


class RemoteKeyFile:
    """--remote: current keyrings from the environment (the operator's secret store), else from the
    CLI's own keyring file (`remote_keyring_path`: `add --remote` keeps each new tenant's session
    keyring there); new ones written to `path` (0600 `NAME=value` lines) for the operator to store
    back (by default that same file)."""

    def __init__(self, env: Mapping[str, str], path: Path | None, *, kept: Path | None = None) -> None:
        self.env, self.path, self.kept = dict(env), path, kept

    def read(self, name: str) -> str:
        from localrt.devvars import read_dev_vars

        if self.env.get(name):
            return self.env[name]
        return read_dev_vars(self.kept).get(name, "") if self.kept is not None and self.kept.exists() else ""

    def write(self, name: str, value: str) -> None:
        from localrt.devvars import read_dev_vars, write_dev_vars

        if self.path is None:
            raise Refused("--remote rotation writes the new keyrings to --keyring-file: name one")
        values = read_dev_vars(self.path) if self.path.exists() else {}
        values[name] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_dev_vars(self.path, values)
        self.env[name] = value


def remote_keyring_path(state_dir: Path) -> Path:
    """The CLI's file of remote keyrings it made (0600, in the git-ignored state directory)."""
    return state_dir / "secrets" / "remote-keyrings.dev.vars"


class LocalDispatcher(Protocol):
    """The running local platform's dispatcher (localrt/node/host.mjs), if one runs."""

    def restart(self) -> dict[str, Any] | None:
        """Start a dispatcher with the secrets file as it is now beside the running one (same public
        socket), drain the old one; returns once it has exited (None: no platform runs)."""
        ...

    def signing_kid(self) -> str | None:
        """The context key id the running dispatcher signs with (None: no platform runs)."""
        ...


class NoLocalPlatform:
    def restart(self) -> dict[str, Any] | None:
        return None

    def signing_kid(self) -> str | None:
        return None


@dataclass
class RunningLocalDispatcher:
    """The dispatcher of the local platform that uses `state_dir`, through its host's control port."""

    state_dir: Path

    def restart(self) -> dict[str, Any] | None:
        from localrt.workerd import restart_dispatcher_if_running

        return restart_dispatcher_if_running(self.state_dir)

    def signing_kid(self) -> str | None:
        from localrt.workerd import dispatcher_context_kid_if_running

        return dispatcher_context_kid_if_running(self.state_dir)


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
    def __init__(
        self,
        cp: ControlPlane,
        store: KeyStore,
        reporter: Reporter,
        aead: Aead,
        *,
        clock: Callable[[], float] = time.time,
        local_dispatcher: LocalDispatcher | None = None,
        signing_keys: Callable[[], SigningKeys] | None = None,
        settle_seconds: float = SETTLE_SECONDS,
    ) -> None:
        self.cp, self.store, self.reporter, self.aead, self.clock = cp, store, reporter, aead, clock
        self.local_dispatcher = local_dispatcher or NoLocalPlatform()
        self.signing_keys = signing_keys  # --remote jwt: the Supabase project's signing keys (Management API)
        self.settle_seconds = settle_seconds

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
        for kind, name in (
            ("context", "CONTEXT_SIGNING_SECRET"),
            ("data", "PLATFORM_DATA_KEYS"),
            ("jwt", "SUPABASE_JWT_KEYS"),
        ):
            value = self.store.read(name)
            out[kind] = _describe(_ring(value, name)) if value else None
        return out

    # ---- data: PLATFORM_DATA_KEYS -------------------------------------------------------
    async def rotate_data(self, *, retire: bool = True) -> dict[str, Any]:
        current = self._read("PLATFORM_DATA_KEYS")
        if len(current.keys) > 1:  # an earlier rotation stopped part-way: finish it with its key
            ring, new = current, current.active
            self.reporter.step(f"data: finish the earlier rotation to {new.kid}", read=True)
        else:
            new = Key(current.next_kid("p"), new_secret())
            ring = Keyring((new, *current.keys))
        self._write("PLATFORM_DATA_KEYS", ring)
        tenants = await self.served()
        self.reporter.step(
            f"data: deploy {len(tenants)} Worker(s) that read {ring.kids()} and wrap new data keys under {new.kid}"
        )
        await self.redeploy(tenants, lambda t: {"PLATFORM_DATA_KEYS": ring.format()})
        if tenants and not self.cp.dry_run:
            self.reporter.step(
                f"data: wait {self.settle_seconds:.0f} s for the previous Worker versions to finish", read=True
            )
            await _sleep(self.settle_seconds)
        rewrapped = await self.rewrap(ring)
        left = [r for r in await self.cp.registry.data_keys() if r["platform_key_id"] != new.kid]
        if left and not self.cp.dry_run:
            raise BackendError(
                f"data: {len(left)} data key(s) are still wrapped under old keys (written during "
                "the rotation?): re-run `keys rotate data` to finish"
            )
        retired: list[str] = []
        if retire and len(ring.keys) > 1:
            retired = [k.kid for k in ring.keys[1:]]
            final = ring.active_only()
            self._write("PLATFORM_DATA_KEYS", final)
            await self.redeploy(tenants, lambda t: {"PLATFORM_DATA_KEYS": final.format()})
        return {
            "kind": "data",
            "active": new.kid,
            "rewrapped": rewrapped,
            "retired": retired,
            "workers": [t.script_name for t in tenants],
        }

    async def rewrap(self, ring: Keyring) -> int:
        """Every data key not under the active platform key, re-wrapped under it (row by row; a row
        someone changed meanwhile is left for the next pass)."""
        done = 0
        todo = [row for row in await self.cp.registry.data_keys() if row["platform_key_id"] != ring.active.kid]
        self.reporter.step(f"data: re-wrap {len(todo)} data key(s) under {ring.active.kid}")
        for row in todo:
            try:
                fresh = await rewrap_data_key(self.aead, ring, row["tenant_id"], row["key_id"], row["wrapped_key"])
            except EnvelopeError as exc:
                raise BackendError(
                    f"data: the data key {row['key_id']} of {row['tenant_id']} does not open "
                    f"({exc.code}): not re-wrapped"
                ) from None
            if fresh is None:
                continue
            if await self.cp.registry.rewrap_data_key(
                row["tenant_id"], row["key_id"], row["wrapped_key"], fresh.wrapped, fresh.platform_key_id
            ):
                done += 1
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
        self.reporter.step(f"context: deploy {len(tenants)} tenant Worker(s) that accept {staged.kids()}")
        await self._deploy_context(tenants, staged)
        switched = Keyring((new, *current.keys))
        if self.cp.local:
            return await self._switch_local_dispatcher(current, new, switched, tenants)
        if tenants and not self.cp.dry_run:  # every tenant version that only knew the old key is gone
            await _sleep(self.settle_seconds)
        self.cp.master_secret = switched.format()
        self.reporter.step(f"context: deploy the dispatcher signing with {new.kid}")
        self.cp.deploy_dispatcher()
        return await self._expire_old_context_keys(current, new, tenants, switched_at=now)

    async def _expire_old_context_keys(
        self, current: Keyring, new: Key, tenants: list[TenantRecord], *, switched_at: float
    ) -> dict[str, Any]:
        """Once the dispatcher signs with `new`: the old keys expire after the longest a context
        signed with them can still arrive; tenants get the keyring with those expiries."""
        retire_after = int(switched_at) + MAX_AGE_SECONDS + MAX_CLOCK_SKEW_SECONDS + MARGIN_SECONDS
        expiring = Keyring((new, *(Key(k.kid, k.secret, k.not_after or retire_after) for k in current.keys)))
        self._write("CONTEXT_SIGNING_SECRET", expiring)
        await self._deploy_context(tenants, expiring)
        return {
            "kind": "context",
            "active": new.kid,
            "accepted": expiring.kids(),
            "old_accepted_until": retire_after,
            "workers": [t.script_name for t in tenants],
        }

    async def _switch_local_dispatcher(
        self, current: Keyring, new: Key, switched: Keyring, tenants: list[TenantRecord]
    ) -> dict[str, Any]:
        """Locally: the running dispatcher is replaced by one that signs with `new` (the platform
        host starts it on the same public socket and drains the old one: no request refused), and
        only then do the old keys get their expiry, counted from the moment the old dispatcher is gone."""
        import asyncio

        self._write("CONTEXT_SIGNING_SECRET", switched)
        self.reporter.step(f"context: restart the local dispatcher (if it runs) signing with {new.kid}")
        restarted = None if self.cp.dry_run else await asyncio.to_thread(self.local_dispatcher.restart)
        if restarted is not None:
            if restarted.get("context_kid") != new.kid:
                raise BackendError(
                    f"context: the restarted dispatcher signs with {restarted.get('context_kid')!r}, "
                    f"not {new.kid}: tenants still accept both; re-run `keys rotate context`"
                )
            self.reporter.step(
                f"context: the dispatcher signs with {new.kid} (the previous one drained in "
                f"{int(restarted.get('drain_ms', 0))} ms)",
                read=True,
            )
        elif not self.cp.dry_run:
            self.reporter.step(
                f"context: no local platform runs; the dispatcher signs with {new.kid} when it starts", read=True
            )
        report = await self._expire_old_context_keys(current, new, tenants, switched_at=self.clock())
        return {**report, "dispatcher": "restarted" if restarted is not None else "not running"}

    async def retire_context(self) -> dict[str, Any]:
        ring = self._read("CONTEXT_SIGNING_SECRET")
        if not self.cp.local:
            return {
                "kind": "context",
                "active": ring.active.kid,
                "retired": [],
                "note": "on Cloudflare the old key expires by itself (its not_after); the next rotation drops it",
            }
        if len(ring.keys) == 1:
            return {"kind": "context", "active": ring.active.kid, "retired": []}
        signing = self.local_dispatcher.signing_kid()
        if signing is not None and signing != ring.active.kid:
            raise Refused(
                f"context: the running dispatcher signs with {signing}, not {ring.active.kid}: "
                "finish the switch with `keys rotate context` (or restart the platform), then retire"
            )
        final = ring.active_only()
        tenants = await self.served()
        self._write("CONTEXT_SIGNING_SECRET", final)
        await self._deploy_context(tenants, final)
        return {"kind": "context", "active": final.active.kid, "retired": [k.kid for k in ring.keys[1:]]}

    # ---- session: SESSION_SECRET, per tenant --------------------------------------------
    async def rotate_session(self, tenant_id: str | None, *, sign_out: bool = False) -> dict[str, Any]:
        """A new session key per tenant, the current ones accepted until the sessions they signed have
        expired. Locally the current keyring is the tenant's secrets file; with --remote it is
        SESSION_SECRET_<TENANT> in the environment (the operator's secret store: Cloudflare never
        gives a secret back), and the new one goes to --keyring-file under that name. `sign_out`:
        the new key alone (every session of these tenants ends: after a leak, or when the current
        key is not known)."""
        tenants = await self.served(tenant_id)
        if tenant_id and not tenants:
            raise Refused(f"tenant {tenant_id!r} has no Worker deployed: nothing to rotate")
        now = self.clock()
        retire_after = int(now) + SESSION_TTL_SECONDS + MARGIN_SECONDS
        current: dict[str, Keyring | None] = {}
        missing: list[str] = []
        for tenant in tenants:
            if self.cp.local:
                text = self.cp.scripts.secrets_of(tenant).get("SESSION_SECRET", "")  # type: ignore[attr-defined]
            else:
                text = self.store.read(session_secret_name(tenant.tenant_id))
            if not text and self.cp.local:
                raise ConfigError(f"SESSION_SECRET of {tenant.tenant_id} is empty")
            if not text and not sign_out:
                missing.append(session_secret_name(tenant.tenant_id))
            current[tenant.tenant_id] = _ring(text, f"SESSION_SECRET of {tenant.tenant_id}") if text else None
        if missing:
            raise Refused(
                f"session: the current session keyring of {len(missing)} tenant(s) is not known: "
                f"export {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''} from your secret store "
                "(Cloudflare never gives a secret back), or add --sign-out to replace it by a new key "
                "alone (their users sign in again). Nothing was deployed"
            )
        rings: dict[str, Keyring] = {}
        for tenant in tenants:
            ring = current[tenant.tenant_id]
            new = Key(ring.next_kid("s") if ring else "s1", new_secret(48))
            rings[tenant.tenant_id] = (
                Keyring((new,)) if ring is None or sign_out else ring.rotated(new, retire_after=retire_after, now=now)
            )
        if not self.cp.local:  # stored before it is deployed: a key deployed but not kept would be lost
            for tid, ring in rings.items():
                self._write(session_secret_name(tid), ring)
        await self.redeploy(tenants, lambda t: {"SESSION_SECRET": rings[t.tenant_id].format()})
        return {
            "kind": "session",
            "tenants": {tid: _describe(r) for tid, r in rings.items()},
            "old_accepted_until": None if sign_out else retire_after,
            "signed_out": sign_out,
        }

    # ---- jwt: SUPABASE_JWT_KEYS (PostgREST) -> SUPABASE_JWT_SECRET (tenants) --------------
    async def rotate_jwt(self) -> dict[str, Any]:
        if not self.cp.local:
            return await self._rotate_jwt_remote()
        value = self.store.read("SUPABASE_JWT_KEYS")
        now = self.clock()
        current = _ring(value, "SUPABASE_JWT_KEYS").without_expired(now) if value else None
        new = Key(current.next_kid("j") if current else "j1", new_secret(48))
        staged = current.staged(new) if current else Keyring((new,))
        self._write("SUPABASE_JWT_KEYS", staged)
        self.reporter.step(f"jwt: wait until the data API accepts {new.kid}")
        if not self.cp.dry_run:
            await self._await_accepted(new)
        return await self._sign_with(new, current.keys if current else (), now)

    async def _sign_with(self, new: Key, previous: tuple[Key, ...], now: float) -> dict[str, Any]:
        """The data API accepts `new`: keep the previous keys until the tokens they signed have
        expired, and deploy the tenants signing with `new`."""
        retire_after = int(now) + TENANT_JWT_TTL_SECONDS + JWT_LEEWAY_SECONDS + MARGIN_SECONDS
        switched = Keyring((new, *(Key(k.kid, k.secret, k.not_after or retire_after) for k in previous)))
        self._write("SUPABASE_JWT_KEYS", switched)
        tenants = await self.served()
        self.reporter.step(f"jwt: deploy {len(tenants)} tenant Worker(s) signing with {new.kid}")
        signing = switched.active_only().format()
        await self.redeploy(tenants, lambda t: {"SUPABASE_JWT_SECRET": signing})
        return {
            "kind": "jwt",
            "active": new.kid,
            "accepted": switched.kids(),
            "old_accepted_until": retire_after,
            "workers": [t.script_name for t in tenants],
        }

    async def _rotate_jwt_remote(self) -> dict[str, Any]:
        """Hosted Supabase, through its Management API (controlplane.supabase_keys): the new HS256 key
        is imported as a standby key under a UUID key id, made the project's signing key (the previous
        one becomes `previously_used`, still trusted), probed on the data API, and only then do the
        tenants sign with it. SUPABASE_JWT_KEYS (the operator's store) lists the keys this command made,
        with their secrets: a key of ours past its not_after is revoked at the next rotation. Keys it
        did not make (the legacy JWT secret, which signed the API keys) are never touched."""
        if self.signing_keys is None:
            raise ConfigError(
                "keys rotate jwt --remote needs SUPABASE_ACCESS_TOKEN (a Supabase access token with "
                "secrets:write) and the project (SUPABASE_PROJECT_REF, or a hosted SUPABASE_URL)"
            )
        api = self.signing_keys()
        now = self.clock()
        value = self.store.read("SUPABASE_JWT_KEYS")
        ours = _ring(value, "SUPABASE_JWT_KEYS") if value else None
        held = {k.id: k for k in await api.list()}
        expired = [k for k in (ours.keys if ours else ()) if not k.usable(now)]
        current = tuple(k for k in (ours.keys if ours else ()) if k.usable(now))
        for key in current:
            if key.kid not in held or held[key.kid].status == "revoked":
                raise ConfigError(
                    f"SUPABASE_JWT_KEYS names the key {key.kid}, which the project does not hold "
                    "(or has revoked): is it this project's keyring?"
                )
        revoked: list[str] = []
        for key in expired:
            if key.kid in held and held[key.kid].status != "revoked":
                if self.cp.dry_run:
                    self.reporter.plan("supabase", f"revoke signing key {key.kid}")
                else:
                    await api.set_status(key.kid, "revoked")
                revoked.append(key.kid)
        if revoked:
            self.reporter.step(f"jwt: revoke {revoked} (their tokens have expired)")
        new = Key(str(uuid.uuid4()), new_secret(48))
        staged = Keyring((*current, new)) if current else Keyring((new,))
        self._write("SUPABASE_JWT_KEYS", staged)  # kept before Supabase holds it: a re-run finds it
        self.reporter.step(f"jwt: make {new.kid} the project's signing key and wait until the data API accepts it")
        if self.cp.dry_run:
            self.reporter.plan("supabase", f"import HS256 signing key {new.kid} (standby), then make it in_use")
        else:
            made = await api.create_hs256(new.kid, new.secret, "standby")
            if made.id != new.kid:
                raise BackendError(
                    f"jwt: Supabase named the imported key {made.id}, not {new.kid}: the tenants' "
                    "tokens would name a key it does not know; nothing was deployed"
                )
            await api.set_status(new.kid, "in_use")
            await self._await_accepted(new)
        return {**await self._sign_with(new, current, now), "revoked": revoked}

    async def _await_accepted(self, key: Key) -> None:
        deadline = time.monotonic() + JWT_PROBE_SECONDS
        while True:
            iat = int(self.clock())
            probe = HS256Signer(key.secret, kid=key.kid).sign({"role": "anon", "iat": iat, "exp": iat + 60})
            if await self.cp.registry.accepts_token(probe):
                return
            if time.monotonic() > deadline:
                raise BackendError(
                    f"jwt: the data API did not start accepting {key.kid} within "
                    f"{JWT_PROBE_SECONDS:.0f} s (is `python -m localrt run` running?); nothing "
                    "was deployed: re-run `keys rotate jwt` once it is"
                )
            await _sleep(0.25)


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def session_secret_name(tenant_id: str) -> str:
    """Where --remote keeps a tenant's session keyring in the operator's store (tenant ids are
    a-z 0-9 -, so this is one-to-one)."""
    return "SESSION_SECRET_" + tenant_id.upper().replace("-", "_")


def _describe(ring: Keyring) -> dict[str, Any]:
    return {
        "active": ring.active.kid,
        "keys": [{"kid": k.kid, **({"not_after": k.not_after} if k.not_after is not None else {})} for k in ring.keys],
    }

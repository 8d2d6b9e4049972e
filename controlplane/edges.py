"""The control plane's edges besides Supabase and D1: route cache, tenant scripts, custom hostnames.

Each has a local implementation (the local platform's files) and a Cloudflare one, chosen
in controlplane.wiring; the lifecycle code never knows which it has.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets as secrets_module
import tempfile
from pathlib import Path
from typing import Any, Mapping, Protocol

from controlplane.cloudflare import CloudflareApi, HostnameState
from controlplane.errors import BackendError, ConfigError
from controlplane.model import NAMESPACE, PRIMARY_TENANT_ID, TenantRecord
from controlplane.output import Reporter
from controlplane.wrangler import Runner, tenant_deploy_command
from dispatcher.routing import kv_key
from shared.context import derive_tenant_keyring


# Secrets every tenant Worker shares (the Supabase project's), added to each deploy when known.
PLATFORM_SECRETS = ("SUPABASE_URL", "SUPABASE_ANON_KEY", "SUPABASE_JWT_SECRET", "SUPABASE_SERVICE_ROLE_KEY",
                    "PLATFORM_DATA_KEYS")


def tenant_vars(tenant: TenantRecord) -> dict[str, str]:
    """The plain vars a tenant's Worker is deployed with (wrangler.tenant.toml names them)."""
    return {"TENANT_ID": tenant.tenant_id, "TENANT_TYPE": tenant.type.value, "PRIMARY_TENANT_ID": PRIMARY_TENANT_ID}


# ---- route cache (KV TENANT_CACHE) ----------------------------------------------------------
class RouteCache(Protocol):
    label: str
    async def get(self, host: str) -> str | None: ...
    async def purge(self, host: str) -> None: ...


class LocalRouteCache:
    """The running local platform's TENANT_CACHE (through its host); when none runs there is
    nothing to purge: the host empties the route cache when it starts."""

    def __init__(self, state_dir: Path, reporter: Reporter, *, dry_run: bool = False) -> None:
        self._state, self._reporter, self._dry = Path(state_dir), reporter, dry_run
        self.label = "kv (local platform)"

    async def get(self, host: str) -> str | None:
        from localrt.workerd import kv_get_if_running

        return kv_get_if_running(self._state, kv_key(host))

    async def purge(self, host: str) -> None:
        from localrt.workerd import HostError, purge_kv_if_running

        if self._dry:
            self._reporter.plan(self.label, f"DELETE {kv_key(host)}")
            return
        try:
            purge_kv_if_running(self._state, kv_key(host))
        except HostError as exc:
            raise BackendError(f"KV purge failed: {exc}") from None


class CloudflareRouteCache:
    def __init__(self, api: CloudflareApi, namespace_id: str) -> None:
        self._api, self._ns = api, namespace_id
        self.label = f"kv (remote {namespace_id})"

    async def get(self, host: str) -> str | None:
        return await self._api.kv_get(self._ns, kv_key(host))

    async def purge(self, host: str) -> None:
        await self._api.kv_delete(self._ns, kv_key(host))


# ---- tenant Worker scripts in the dispatch namespace ----------------------------------------
class TenantScripts(Protocol):
    label: str
    async def exists(self, script: str) -> bool: ...
    async def serves(self, tenant: TenantRecord) -> bool: ...
    async def deploy(self, tenant: TenantRecord, secrets: Mapping[str, str]) -> None: ...
    async def remove(self, script: str) -> None: ...
    async def forget_secrets(self, script: str) -> None: ...


class LocalScripts:
    """The local namespace (localrt.namespace.NamespaceRegistry): a spec file and a .dev.vars per script;
    the running platform host starts, restarts or stops the script's Worker when they change."""

    def __init__(self, namespace: Any, master_secret_file: Path, reporter: Reporter, *, dry_run: bool = False,
                 platform_secrets: Mapping[str, str] | None = None) -> None:
        self._ns, self._master_file, self._reporter, self._dry = namespace, master_secret_file, reporter, dry_run
        self._platform = dict(platform_secrets or {})
        self.label = f"namespace (local {namespace.registry_dir})"
        # Key rotation: the master keyring tenants' context keys are derived from, when it is not
        # (yet) the dispatcher's (a staged key, controlplane.keys).
        self.context_master: str | None = None

    def _master(self) -> str:
        from localrt.devvars import read_dev_vars

        if self.context_master:
            return self.context_master
        secret = read_dev_vars(self._master_file).get("CONTEXT_SIGNING_SECRET")
        if not secret:
            raise ConfigError(f"no CONTEXT_SIGNING_SECRET in {self._master_file}: start the local platform once "
                              "(python -m localrt run) so it creates the dispatcher's secret")
        return secret

    async def exists(self, script: str) -> bool:
        return script in self._ns.names()

    async def serves(self, tenant: TenantRecord) -> bool:
        """The tenant's Worker is deployed and is this tenant's (scripts are named per tenant)."""
        spec = self._ns.get(tenant.script_name)
        return spec is not None and spec.vars.get("TENANT_ID") == tenant.tenant_id

    def secrets_of(self, tenant: TenantRecord) -> dict[str, str]:
        return self._ns.secrets_of(tenant.script_name)

    async def deploy(self, tenant: TenantRecord, secrets: Mapping[str, str]) -> None:
        from localrt.devvars import read_dev_vars, write_dev_vars
        from localrt.namespace import ScriptSpec

        spec = ScriptSpec(tenant.script_name, vars=tenant_vars(tenant))
        if self._dry:
            self._reporter.plan(self.label, f"deploy {spec.to_json()}")
            self._reporter.plan(self.label, f"write {self._ns.secrets_path(tenant.script_name)} keys "
                                f"{sorted({'TENANT_CONTEXT_KEY', *secrets})}")
            return
        path = self._ns.secrets_path(tenant.script_name)
        values = read_dev_vars(path)
        values.setdefault("SESSION_SECRET", secrets_module.token_urlsafe(48))  # per tenant, kept across deploys
        values.update(self._platform)
        values.update(secrets)
        values["TENANT_CONTEXT_KEY"] = derive_tenant_keyring(self._master(), tenant.tenant_id).format()
        write_dev_vars(path, values)  # secrets first: the spec's appearance is what makes it routable
        existing = self._ns.get(tenant.script_name)
        if existing is not None:  # keep vars an operator or a test added (SUPABASE_URL …); ours win
            spec.vars = {**existing.vars, **spec.vars}
        self._ns.deploy(spec)

    async def remove(self, script: str) -> None:
        if self._dry:
            self._reporter.plan(self.label, f"remove {script}")
            return
        self._ns.remove(script)

    async def forget_secrets(self, script: str) -> None:
        path = self._ns.secrets_path(script)
        if self._dry:
            self._reporter.plan(self.label, f"delete {path}")
            return
        path.unlink(missing_ok=True)


class CloudflareScripts:
    """Scripts in the `cmgsite-tenants` namespace: wrangler deploys, the API checks and deletes."""

    def __init__(self, api: CloudflareApi, runner: Runner, master_secret: str | None, *, dry_run: bool = False,
                 platform_secrets: Mapping[str, str] | None = None) -> None:
        self._api, self._runner, self._master, self._dry = api, runner, master_secret, dry_run
        self._platform = dict(platform_secrets or {})
        self.label = f"namespace (remote {NAMESPACE})"
        self.context_master: str | None = None  # see LocalScripts

    async def exists(self, script: str) -> bool:
        return await self._api.script_exists(NAMESPACE, script)

    async def serves(self, tenant: TenantRecord) -> bool:
        return await self.exists(tenant.script_name)

    async def deploy(self, tenant: TenantRecord, secrets: Mapping[str, str]) -> None:
        master = self.context_master or self._master
        if not master:
            raise ConfigError("CONTEXT_SIGNING_SECRET (the dispatcher's master secret) is needed to derive "
                              "the tenant's TENANT_CONTEXT_KEY: export it before deploying")
        values = {**self._platform, **secrets,
                  "TENANT_CONTEXT_KEY": derive_tenant_keyring(master, tenant.tenant_id).format()}
        if self._dry:
            shown = f"<temporary JSON file with {', '.join(sorted(values))}>"
            self._runner.run(tenant_deploy_command(tenant.script_name, tenant_vars(tenant), secrets_file=shown))
            return
        fd, path = tempfile.mkstemp(prefix="cmgsite-secrets-", suffix=".json")  # 0600
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(values, f)
            self._runner.run(tenant_deploy_command(tenant.script_name, tenant_vars(tenant), secrets_file=path))
        finally:
            os.unlink(path)

    async def remove(self, script: str) -> None:
        await self._api.delete_script(NAMESPACE, script)

    async def forget_secrets(self, script: str) -> None:
        return None  # a script's secrets go with the script on Cloudflare


# ---- custom hostnames (Cloudflare for SaaS) ---------------------------------------------------
class Hostnames(Protocol):
    label: str
    async def find(self, hostname: str) -> HostnameState | None: ...
    async def create(self, hostname: str) -> HostnameState: ...
    async def delete(self, hostname: str) -> None: ...


class LocalHostnames:
    """Locally there is no TLS edge: a custom domain answers as soon as it is routed."""

    label = "custom hostnames (local: none needed)"

    async def find(self, hostname: str) -> HostnameState | None:
        return HostnameState(hostname, "local", "active", True, "active", "active")

    async def create(self, hostname: str) -> HostnameState:
        return HostnameState(hostname, "local", "active", True, "active", "active")

    async def delete(self, hostname: str) -> None:
        return None


class CloudflareHostnames:
    def __init__(self, api: CloudflareApi) -> None:
        self._api = api
        self.label = f"custom hostnames (zone {api.zone_id})"

    async def find(self, hostname: str) -> HostnameState | None:
        return await self._api.find_custom_hostname(hostname)

    async def create(self, hostname: str) -> HostnameState:
        existing = await self._api.find_custom_hostname(hostname)  # re-run after a failure: reuse it
        return existing or await self._api.create_custom_hostname(hostname)

    async def delete(self, hostname: str) -> None:
        existing = await self._api.find_custom_hostname(hostname)
        if existing is not None:
            await self._api.delete_custom_hostname(existing.id)


# ---- a tenant's runtime data outside Supabase (AUTH_KV keys, Durable Object storage) ---------
class TenantRuntimeData(Protocol):
    label: str
    async def describe(self, tenant_id: str, script: str) -> dict[str, Any]: ...
    async def erase(self, tenant_id: str, script: str) -> dict[str, int]: ...


def auth_kv_prefix(tenant_id: str) -> str:
    """tenant_worker.auth_store keys every AUTH_KV entry `<tenant_id>:...`."""
    return f"{tenant_id}:"


def miniflare_object_id(unique_key: str, name: str) -> str:
    """workerd's `idFromName` (server/actor-id-impl.c++): the file name Miniflare stores an
    object's SQLite under. Miniflare keeps each KV namespace in the object named by its id."""
    key = hashlib.sha256(unique_key.encode()).digest()
    base = hmac.new(key, name.encode(), hashlib.sha256).digest()[:16]
    return (base + hmac.new(key, base, hashlib.sha256).digest()[:16]).hex()


class LocalRuntimeData:
    """Where Miniflare keeps a local script's runtime data (under wrangler's --persist-to, v3/):
    its AUTH_KV namespace `auth-kv-<script>` (the keys in kv/miniflare-KVNamespaceObject/<id>.sqlite,
    large values under kv/auth-kv-<script>/) and its UsageMeter Durable Objects (do/<script>-UsageMeter/).
    Erased once the script's Worker is stopped (delete syncs the platform first), so nothing holds them open."""

    def __init__(self, wrangler_state: Path, reporter: Reporter, *, dry_run: bool = False) -> None:
        self._root, self._reporter, self._dry = Path(wrangler_state) / "v3", reporter, dry_run
        self.label = f"runtime data (local {self._root})"

    def _auth_kv_db(self, script: str) -> Path:
        object_id = miniflare_object_id("miniflare-KVNamespaceObject", f"auth-kv-{script}")
        return self._root / "kv" / "miniflare-KVNamespaceObject" / f"{object_id}.sqlite"

    def _paths(self, script: str) -> list[Path]:
        db = self._auth_kv_db(script)
        found = [db.with_name(db.name + suffix) for suffix in ("", "-wal", "-shm")]
        found += [self._root / "kv" / f"auth-kv-{script}", self._root / "do" / f"{script}-UsageMeter"]
        return [p for p in found if p.exists()]

    def _auth_kv_keys(self, tenant_id: str, script: str) -> int:
        import sqlite3

        db = self._auth_kv_db(script)
        if not db.exists():
            return 0
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
                return int(conn.execute("SELECT count(*) FROM _mf_entries WHERE substr(key, 1, ?) = ?",
                                        (len(auth_kv_prefix(tenant_id)), auth_kv_prefix(tenant_id))).fetchone()[0])
        except sqlite3.Error:
            return 0

    async def describe(self, tenant_id: str, script: str) -> dict[str, Any]:
        objects = self._root / "do" / f"{script}-UsageMeter"
        files = sorted(p.name for p in objects.glob("*.sqlite") if p.name != "metadata.sqlite") if objects.exists() else []
        return {"auth_kv_keys": self._auth_kv_keys(tenant_id, script), "durable_object_files": files}

    async def erase(self, tenant_id: str, script: str) -> dict[str, int]:
        import shutil

        counts = await self.describe(tenant_id, script)
        for path in self._paths(script):
            if self._dry:
                self._reporter.plan(self.label, f"rm -r {path}")
            elif path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        return {"auth_kv": counts["auth_kv_keys"], "durable_object_files": len(counts["durable_object_files"])}


class CloudflareRuntimeData:
    """AUTH_KV through the API; Durable Object storage goes with the tenant's script when it is deleted."""

    def __init__(self, api: CloudflareApi, auth_kv_namespace_id: str) -> None:
        self._api, self._ns = api, auth_kv_namespace_id
        self.label = f"runtime data (AUTH_KV {auth_kv_namespace_id})"

    async def describe(self, tenant_id: str, script: str) -> dict[str, Any]:
        keys = await self._api.kv_keys(self._ns, auth_kv_prefix(tenant_id))
        return {"auth_kv_keys": len(keys), "durable_objects": f"deleted with {script}"}

    async def erase(self, tenant_id: str, script: str) -> dict[str, int]:
        keys = await self._api.kv_keys(self._ns, auth_kv_prefix(tenant_id))
        for key in keys:
            await self._api.kv_delete(self._ns, key)
        return {"auth_kv": len(keys)}

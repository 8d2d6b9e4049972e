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

from pydantic import BaseModel, ConfigDict

from controlplane.cloudflare import CloudflareApi, HostnameState
from controlplane.errors import BackendError, ConfigError
from controlplane.model import NAMESPACE, TenantRecord
from controlplane.output import Reporter
from controlplane.wrangler import Runner, tenant_deploy_command
from dispatcher.routing import kv_key
from shared.context import derive_tenant_keyring
from shared.file_keys import tenant_root
from shared.outbound_http import HttpClient, HttpError, HttpResponse

# Secrets every tenant Worker shares (the Supabase project's), added to each deploy when known.
PLATFORM_SECRETS = (
    "SUPABASE_URL",
    "SUPABASE_ANON_KEY",
    "SUPABASE_JWT_SECRET",
    "SUPABASE_SERVICE_ROLE_KEY",
    "PLATFORM_DATA_KEYS",
)


# What a tenant Worker refuses to start without besides what each deploy adds itself
# (TENANT_ID, TENANT_CONTEXT_KEY, SESSION_SECRET): tenant_worker/config.py's REQUIRED.
PLATFORM_REQUIRED = ("SUPABASE_URL", "SUPABASE_ANON_KEY", "SUPABASE_JWT_SECRET", "SUPABASE_SERVICE_ROLE_KEY")


def missing_platform_secrets(values: Mapping[str, str]) -> list[str]:
    return [name for name in PLATFORM_REQUIRED if not values.get(name)]


def require_platform_secrets(missing: list[str], tenant_id: str) -> None:
    """Refuse a deploy whose Worker would not start (503 on every route) for want of these."""
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} not known for {tenant_id}'s Worker: export them (the Supabase project's "
            "values; `python -m localrt run` writes the local ones to <state>/secrets/supabase.dev.vars) and re-run"
        )


def tenant_vars(tenant: TenantRecord) -> dict[str, str]:
    """The plain vars a tenant's Worker is deployed with (wrangler.tenant.toml names them)."""
    return {"TENANT_ID": tenant.tenant_id}  # type and primary-ness travel in the signed context


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
    def missing_platform_secrets(self) -> list[str]:
        """What a new tenant Worker needs from the platform (PLATFORM_REQUIRED) and this side lacks."""
        ...


class LocalScripts:
    """The local namespace (localrt.namespace.NamespaceRegistry): a spec file and a .dev.vars per script;
    the running platform host starts, restarts or stops the script's Worker when they change."""

    def __init__(
        self,
        namespace: Any,
        master_secret_file: Path,
        reporter: Reporter,
        *,
        dry_run: bool = False,
        platform_secrets: Mapping[str, str] | None = None,
    ) -> None:
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
            raise ConfigError(
                f"no CONTEXT_SIGNING_SECRET in {self._master_file}: start the local platform once "
                "(python -m localrt run) so it creates the dispatcher's secret"
            )
        return secret

    async def exists(self, script: str) -> bool:
        return script in self._ns.names()

    async def serves(self, tenant: TenantRecord) -> bool:
        """The tenant's Worker is deployed and is this tenant's (scripts are named per tenant)."""
        spec = self._ns.get(tenant.script_name)
        return spec is not None and spec.vars.get("TENANT_ID") == tenant.tenant_id

    def missing_platform_secrets(self) -> list[str]:
        return missing_platform_secrets(self._platform)

    def secrets_of(self, tenant: TenantRecord) -> dict[str, str]:
        return self._ns.secrets_of(tenant.script_name)

    async def deploy(self, tenant: TenantRecord, secrets: Mapping[str, str]) -> None:
        from localrt.devvars import read_dev_vars, write_dev_vars
        from localrt.namespace import ScriptSpec

        spec = ScriptSpec(tenant.script_name, vars=tenant_vars(tenant))
        if self._dry:
            self._reporter.plan(self.label, f"deploy {spec.to_json()}")
            self._reporter.plan(
                self.label,
                f"write {self._ns.secrets_path(tenant.script_name)} keys {sorted({'TENANT_CONTEXT_KEY', *secrets})}",
            )
            return
        path = self._ns.secrets_path(tenant.script_name)
        values = read_dev_vars(path)
        values.setdefault("SESSION_SECRET", secrets_module.token_urlsafe(48))  # per tenant, kept across deploys
        values.update(self._platform)
        values.update(secrets)
        values["TENANT_CONTEXT_KEY"] = derive_tenant_keyring(self._master(), tenant.tenant_id).format()
        require_platform_secrets(missing_platform_secrets(values), tenant.tenant_id)
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

    def __init__(
        self,
        api: CloudflareApi,
        runner: Runner,
        master_secret: str | None,
        *,
        dry_run: bool = False,
        platform_secrets: Mapping[str, str] | None = None,
    ) -> None:
        self._api, self._runner, self._master, self._dry = api, runner, master_secret, dry_run
        self._platform = dict(platform_secrets or {})
        self.label = f"namespace (remote {NAMESPACE})"
        self.context_master: str | None = None  # see LocalScripts

    def missing_platform_secrets(self) -> list[str]:
        # Secrets a deploy does not name are kept on Cloudflare: only a new Worker needs them all.
        return missing_platform_secrets(self._platform)

    async def exists(self, script: str) -> bool:
        return await self._api.script_exists(NAMESPACE, script)

    async def serves(self, tenant: TenantRecord) -> bool:
        return await self.exists(tenant.script_name)

    async def deploy(self, tenant: TenantRecord, secrets: Mapping[str, str]) -> None:
        master = self.context_master or self._master
        if not master:
            raise ConfigError(
                "CONTEXT_SIGNING_SECRET (the dispatcher's master secret) is needed to derive "
                "the tenant's TENANT_CONTEXT_KEY: export it before deploying"
            )
        values = {
            **self._platform,
            **secrets,
            "TENANT_CONTEXT_KEY": derive_tenant_keyring(master, tenant.tenant_id).format(),
        }
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


# The tenants' one R2 bucket (wrangler.tenant.toml: FILES): a tenant's objects are tenants/<id>/...
R2_BUCKET = "cmgsite-files"


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
    Erased once the script's Worker is stopped (delete syncs the platform first), so nothing holds them open.
    Its files: the rows under `tenants/<id>/` of the shared bucket's object table
    (r2/miniflare-R2BucketObject/<id>.sqlite, `_mf_objects`) and their blobs (r2/<bucket>/blobs/);
    the bucket is shared, so only those rows and blobs go (SQLite's locking keeps a running
    platform's writes and these apart)."""

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
                return int(
                    conn.execute(
                        "SELECT count(*) FROM _mf_entries WHERE substr(key, 1, ?) = ?",
                        (len(auth_kv_prefix(tenant_id)), auth_kv_prefix(tenant_id)),
                    ).fetchone()[0]
                )
        except sqlite3.Error:
            return 0

    def _r2_db(self) -> Path:
        object_id = miniflare_object_id("miniflare-R2BucketObject", R2_BUCKET)
        return self._root / "r2" / "miniflare-R2BucketObject" / f"{object_id}.sqlite"

    def _r2_objects(self, tenant_id: str, *, erase: bool = False) -> int:
        """How many objects the tenant holds in the shared bucket (deleting them, and their blobs, if asked)."""
        import sqlite3

        db, prefix = self._r2_db(), tenant_root(tenant_id)
        if not db.exists():
            return 0
        select = "SELECT key, blob_id FROM _mf_objects WHERE substr(key, 1, ?) = ?"
        try:
            with contextlib.closing(
                sqlite3.connect(db if erase else f"file:{db}?mode=ro", uri=not erase, timeout=30)
            ) as conn:
                rows = conn.execute(select, (len(prefix), prefix)).fetchall()
                if erase and rows:
                    with conn:
                        conn.execute("DELETE FROM _mf_objects WHERE substr(key, 1, ?) = ?", (len(prefix), prefix))
        except sqlite3.Error as exc:
            if erase:
                raise BackendError(f"local R2 bucket: {exc}") from None
            return 0
        if erase:
            blobs = self._root / "r2" / R2_BUCKET / "blobs"
            for _, blob_id in rows:
                if blob_id and "/" not in blob_id:
                    (blobs / blob_id).unlink(missing_ok=True)
        return len(rows)

    async def describe(self, tenant_id: str, script: str) -> dict[str, Any]:
        objects = self._root / "do" / f"{script}-UsageMeter"
        files = (
            sorted(p.name for p in objects.glob("*.sqlite") if p.name != "metadata.sqlite") if objects.exists() else []
        )
        return {
            "auth_kv_keys": self._auth_kv_keys(tenant_id, script),
            "durable_object_files": files,
            "r2_objects": self._r2_objects(tenant_id),
        }

    async def erase(self, tenant_id: str, script: str) -> dict[str, int]:
        import shutil

        counts = await self.describe(tenant_id, script)
        if self._dry:
            self._reporter.plan(
                self.label, f"delete the R2 objects under {tenant_root(tenant_id)} ({counts['r2_objects']})"
            )
        else:
            counts["r2_objects"] = self._r2_objects(tenant_id, erase=True)
        for path in self._paths(script):
            if self._dry:
                self._reporter.plan(self.label, f"rm -r {path}")
            elif path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        return {
            "auth_kv": counts["auth_kv_keys"],
            "durable_object_files": len(counts["durable_object_files"]),
            "r2_objects": counts["r2_objects"],
        }


class CloudflareRuntimeData:
    """AUTH_KV and the tenant's R2 objects (tenants/<id>/ in the shared bucket) through the API;
    Durable Object storage goes with the tenant's script when it is deleted."""

    def __init__(self, api: CloudflareApi, auth_kv_namespace_id: str, r2_bucket: str = R2_BUCKET) -> None:
        self._api, self._ns, self._bucket = api, auth_kv_namespace_id, r2_bucket
        self.label = f"runtime data (AUTH_KV {auth_kv_namespace_id}, R2 {r2_bucket})"

    async def _r2_keys(self, tenant_id: str) -> list[str]:
        """Every key under tenants/<id>/ in the files bucket."""
        return await self._api.r2_keys(self._bucket, tenant_root(tenant_id))

    async def describe(self, tenant_id: str, script: str) -> dict[str, Any]:
        keys = await self._api.kv_keys(self._ns, auth_kv_prefix(tenant_id))
        return {
            "auth_kv_keys": len(keys),
            "durable_objects": f"deleted with {script}",
            "r2_objects": len(await self._r2_keys(tenant_id)),
        }

    async def erase(self, tenant_id: str, script: str) -> dict[str, int]:
        keys = await self._api.kv_keys(self._ns, auth_kv_prefix(tenant_id))
        for key in keys:
            await self._api.kv_delete(self._ns, key)
        objects = await self._r2_keys(tenant_id)
        for key in objects:
            await self._api.r2_delete(self._bucket, key)
        return {"auth_kv": len(keys), "r2_objects": len(objects)}


# ---- a tenant's R2 objects (tenant files), for backup and restore ------------------------------
# tenant_worker/api_files.py TOMBSTONE: the custom metadata of a file being deleted (invisible,
# empty, refunded already); never backed up (tests/test_backup_units.py keeps the two equal).
TOMBSTONE_METADATA = "cmgsite-deleted"
MAX_OBJECT_BYTES = 256 * 1024 * 1024  # an archive member's limit (controlplane.archive)


class ObjectInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    size: int
    content_type: str | None = None
    metadata: dict[str, str] = {}

    @property
    def tombstone(self) -> bool:
        return TOMBSTONE_METADATA in self.metadata


class ObjectData(BaseModel):
    model_config = ConfigDict(frozen=True)

    data: bytes
    content_type: str | None = None
    metadata: dict[str, str] = {}


class TenantObjects(Protocol):
    """A tenant's objects under `tenants/<id>/` in the files bucket, for backup and restore.
    Every call names the tenant, and refuses a key outside its prefix (object_key_error)."""

    label: str

    async def list(self, tenant_id: str) -> list[ObjectInfo]: ...
    async def get(self, tenant_id: str, key: str) -> ObjectData | None: ...
    async def put(
        self, tenant_id: str, key: str, data: bytes, content_type: str | None, metadata: Mapping[str, str]
    ) -> None: ...


def object_prefix(tenant_id: str) -> str:
    return tenant_root(tenant_id)


def object_key_error(tenant_id: str, key: object) -> str | None:
    """Why `key` is not one of the tenant's object keys, or None. R2 keys are opaque strings, but
    one that a tool could read as a path out of `tenants/<id>/` is refused anyway."""
    root = object_prefix(tenant_id)
    if not isinstance(key, str) or len(key.encode("utf-8")) > 1024:
        return "not a key of at most 1024 bytes"
    if not key.startswith(root) or key == root:
        return f"not under {root}"
    if any(ord(c) < 0x20 or ord(c) == 0x7F or c == "\\" for c in key):
        return "holds a control character or a backslash"
    if any(seg in ("", ".", "..") for seg in key[len(root) :].split("/")):
        return "holds an empty, . or .. segment"
    return None


def _confined(tenant_id: str, key: str) -> None:
    why = object_key_error(tenant_id, key)
    if why is not None:
        raise BackendError(f"R2 key {key!r} refused for tenant {tenant_id}: {why}")


class LocalObjects:
    """The running local platform's bucket, through its host (localrt/node/host.mjs /r2/*: loopback,
    the host's token, confined to `tenants/<id>/` there too). Not Miniflare's files directly: a
    write would have to forge Miniflare's object rows (etags, versions, checksums, blob ids)
    under the running storage owner; so with no platform running this refuses, clearly."""

    def __init__(self, state_dir: Path, reporter: Reporter, *, dry_run: bool = False) -> None:
        self._state, self._reporter, self._dry = Path(state_dir), reporter, dry_run
        self.label = "r2 (local platform)"

    def _host(self) -> tuple[str, str]:
        from localrt.workerd import control_from_status

        found = control_from_status(self._state)
        if found is None:
            raise ConfigError(
                "the local platform is not running: tenant files (R2) are read and written through "
                "it. Start it (bash scripts/run.sh, same state directory) and re-run"
            )
        return found

    def _post(
        self,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        import httpx

        directory, token = self._host()
        try:
            r = httpx.post(
                f"http://{directory}{path}",
                json=json_body,
                content=content,
                timeout=300,
                headers={"x-cmgsite-host-token": token, **(headers or {})},
            )
        except httpx.HTTPError as exc:
            raise BackendError(f"local R2 {path}: the platform host did not answer ({type(exc).__name__})") from None
        if r.status_code not in (200, 404):
            raise BackendError(f"local R2 {path}: {r.status_code} {r.text[:200]}")
        return r

    async def list(self, tenant_id: str) -> list[ObjectInfo]:
        prefix, out, cursor = object_prefix(tenant_id), [], None
        while True:
            page = self._post("/r2/list", json_body={"tenant": tenant_id, "prefix": prefix, "cursor": cursor}).json()
            out += [
                ObjectInfo(
                    key=o["key"],
                    size=int(o["size"]),
                    content_type=o.get("contentType"),
                    metadata=o.get("customMetadata") or {},
                )
                for o in page["objects"]
                if str(o.get("key", "")).startswith(prefix)
            ]
            cursor = page.get("cursor")
            if not page.get("truncated") or not cursor:
                return out

    async def get(self, tenant_id: str, key: str) -> ObjectData | None:
        from urllib.parse import unquote

        _confined(tenant_id, key)
        r = self._post("/r2/get", json_body={"tenant": tenant_id, "key": key})
        if r.status_code == 404:
            return None
        meta = json.loads(unquote(r.headers["x-cmgsite-r2-object"]))
        if meta.get("key") != key or int(meta.get("size", -1)) != len(r.content):
            raise BackendError(f"local R2: {key} came back cut short or under another key")
        return ObjectData(
            data=r.content, content_type=meta.get("contentType"), metadata=meta.get("customMetadata") or {}
        )

    async def put(
        self, tenant_id: str, key: str, data: bytes, content_type: str | None, metadata: Mapping[str, str]
    ) -> None:
        from urllib.parse import quote

        _confined(tenant_id, key)
        if self._dry:
            self._reporter.plan(self.label, f"PUT {key} ({len(data)} bytes, {content_type or 'no content type'})")
            return
        meta = {"tenant": tenant_id, "key": key, "contentType": content_type, "customMetadata": dict(metadata)}
        r = self._post(
            "/r2/put",
            content=data,
            headers={
                "x-cmgsite-r2-object": quote(json.dumps(meta), safe=""),
                "content-type": "application/octet-stream",
            },
        )
        if r.status_code != 200 or r.json().get("size") != len(data):
            raise BackendError(f"local R2: {key} was not stored whole")


class CloudflareR2Objects:
    """The tenants' bucket over Cloudflare's R2 object API, every call in this one class (to port):
        GET    /accounts/<acct>/r2/buckets/<bucket>/objects?prefix=&per_page=&cursor=   (the envelope)
        GET    /accounts/<acct>/r2/buckets/<bucket>/objects/<key>                      (the bytes)
        PUT    /accounts/<acct>/r2/buckets/<bucket>/objects/<key>  Content-Type: <the object's>
    The API sets no custom metadata on a PUT, so a restored file loses its `uploaded-by` there
    (the archive keeps it). Under --dry-run a PUT is printed (size and type, never the bytes)."""

    def __init__(
        self,
        http: HttpClient,
        *,
        token: str,
        account_id: str,
        base_url: str,
        reporter: Reporter,
        bucket: str = R2_BUCKET,
        dry_run: bool = False,
    ) -> None:
        self._http, self._token, self._reporter, self._dry = http, token, reporter, dry_run
        self._base = f"{base_url.rstrip('/')}/accounts/{account_id}/r2/buckets/{bucket}/objects"
        self.label = f"r2 (remote bucket {bucket})"

    async def _send(
        self, method: str, url: str, body: bytes | None = None, content_type: str | None = None
    ) -> HttpResponse:
        headers = {"authorization": f"Bearer {self._token}"}
        if content_type:
            headers["content-type"] = content_type
        try:
            resp = await self._http.request(method, url, headers=headers, body=body, timeout=300)
        except HttpError as exc:
            raise BackendError(f"Cloudflare R2 API unreachable: {exc}") from None
        if not resp.ok and resp.status != 404:
            try:
                errors = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in resp.json().get("errors") or [])
            except (ValueError, AttributeError, UnicodeDecodeError):
                errors = ""
            raise BackendError(f"Cloudflare R2 API error (HTTP {resp.status}): {errors or 'no detail'}")
        return resp

    def _object_url(self, key: str) -> str:
        from urllib.parse import quote

        return f"{self._base}/{quote(key, safe='')}"

    async def list(self, tenant_id: str) -> list[ObjectInfo]:
        from urllib.parse import quote

        prefix, out, cursor = object_prefix(tenant_id), [], ""
        while True:
            query = f"prefix={quote(prefix, safe='')}&per_page=1000"
            if cursor:
                query += f"&cursor={quote(cursor, safe='')}"
            resp = await self._send("GET", f"{self._base}?{query}")
            data = resp.json() if resp.ok else {}
            for o in data.get("result") or []:
                key = str(o.get("key", ""))
                if not key.startswith(prefix):  # another tenant's: never passed on
                    continue
                http_meta = o.get("http_metadata") if isinstance(o.get("http_metadata"), dict) else {}
                custom = o.get("custom_metadata") if isinstance(o.get("custom_metadata"), dict) else {}
                out.append(
                    ObjectInfo(
                        key=key,
                        size=int(o.get("size") or 0),
                        content_type=http_meta.get("contentType"),
                        metadata={str(k): str(v) for k, v in custom.items()},
                    )
                )
            info = data.get("result_info") or {}
            cursor = str(info.get("cursor") or "")
            if not cursor or info.get("is_truncated") is False:
                return out

    async def get(self, tenant_id: str, key: str) -> ObjectData | None:
        _confined(tenant_id, key)
        resp = await self._send("GET", self._object_url(key))
        if resp.status == 404:
            return None
        return ObjectData(data=resp.body, content_type=resp.headers.get("content-type"))

    async def put(
        self, tenant_id: str, key: str, data: bytes, content_type: str | None, metadata: Mapping[str, str]
    ) -> None:
        _confined(tenant_id, key)
        if self._dry:
            self._reporter.plan(
                self.label, f"PUT {self._object_url(key)} ({len(data)} bytes, {content_type or 'no content type'})"
            )
            return
        resp = await self._send("PUT", self._object_url(key), data, content_type or "application/octet-stream")
        if resp.status == 404:
            raise BackendError(f"Cloudflare R2: the bucket of {key} does not exist")

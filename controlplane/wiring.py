"""Choose the backends: the local platform (default) or Cloudflare + a real Supabase, and dry-run.

Local: D1 is the SQLite file `wrangler d1 ... --local` keeps under .wrangler/state, KV and
the namespace are the local runtime's files under .local/, Supabase is the local stack
(SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY, or .local/secrets/supabase.dev.vars, which
`python -m localrt run` writes). Remote: everything from the environment (see REMOTE_ENV);
Cloudflare's API (custom hostnames, KV, namespace scripts, D1) through the official SDK
(controlplane.cloudflare), wrangler only for deploys and the namespace.

A local command never talks to a Supabase that is not on this machine: an operator with
production credentials exported must not write to production from a `--local` command, so
a non-loopback SUPABASE_URL in the environment is refused there (use --remote).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Mapping
from urllib.parse import urlsplit

from controlplane.cloudflare import API_BASE, CloudflareApi, connect
from controlplane.dryrun import DryRunHttp, DryRunTransport
from controlplane.edges import (
    PLATFORM_SECRETS,
    R2_BUCKET,
    CloudflareHostnames,
    CloudflareR2Objects,
    CloudflareRouteCache,
    CloudflareRuntimeData,
    CloudflareScripts,
    LocalHostnames,
    LocalObjects,
    LocalRouteCache,
    LocalRuntimeData,
    LocalScripts,
)
from controlplane.errors import ConfigError
from controlplane.lifecycle import ControlPlane, OwnershipChecker
from controlplane.meter import PlatformMeter, local_dispatcher_url
from controlplane.output import Reporter
from controlplane.registry import SupabaseRegistry
from controlplane.replica import ApiD1, DryRunD1, LocalD1, RoutingReplica
from controlplane.wrangler import ROOT, DryRunRunner, Runner, SubprocessRunner
from shared.domains import DEFAULT_DOH_URL, OwnershipResult, check_ownership
from shared.keys import Keyring
from shared.outbound_http import HttpClient

REMOTE_ENV = (
    "CLOUDFLARE_API_TOKEN",
    "CLOUDFLARE_ACCOUNT_ID",
    "CLOUDFLARE_ZONE_ID",
    "SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
)


@dataclass
class Settings:
    remote: bool = False
    dry_run: bool = False
    state_dir: Path = ROOT / ".local"
    wrangler_state: Path = ROOT / ".wrangler" / "state"
    d1_file: Path | None = None
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


def _local_supabase_file(settings: Settings) -> dict[str, str]:
    """What `python -m localrt run` writes for the CLI: the local stack's URL and keys."""
    from localrt.devvars import read_dev_vars

    return read_dev_vars(settings.state_dir / "secrets" / "supabase.dev.vars")


def is_loopback_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _local_guard(settings: Settings) -> None:
    url = settings.env.get("SUPABASE_URL")
    if not settings.remote and url and not is_loopback_url(url):
        raise ConfigError(
            f"SUPABASE_URL in the environment points at {urlsplit(url).hostname or url!r}, not at "
            "this machine: a --local command only uses the local Supabase. Unset SUPABASE_URL "
            "(the local stack's values are read from .local/secrets/supabase.dev.vars) or use --remote"
        )


def _supabase_settings(settings: Settings) -> tuple[str, str]:
    _local_guard(settings)
    url, key = settings.env.get("SUPABASE_URL"), settings.env.get("SUPABASE_SERVICE_ROLE_KEY")
    if url and key:
        return url, key
    if not settings.remote:
        local = _local_supabase_file(settings)
        if local.get("SUPABASE_URL") and local.get("SUPABASE_SERVICE_ROLE_KEY"):
            return local["SUPABASE_URL"], local["SUPABASE_SERVICE_ROLE_KEY"]
    raise ConfigError(
        "Supabase is not configured: export SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY "
        "(locally, `python -m localrt run` writes them to .local/secrets/supabase.dev.vars)"
    )


def _local_platform_file(settings: Settings) -> dict[str, str]:
    """The platform's local keyrings (`python -m localrt run` creates it; `keys rotate` changes it)."""
    from localrt.devvars import read_dev_vars

    return read_dev_vars(settings.state_dir / "secrets" / "platform.dev.vars")


def platform_secrets(settings: Settings) -> dict[str, str]:
    """The Supabase project's values and the platform keyrings every tenant Worker gets
    (environment first, then the local files). After a local JWT key rotation the tenants sign
    with the rotation keyring's active key (SUPABASE_JWT_KEYS), not the project secret."""
    _local_guard(settings)
    local = {} if settings.remote else {**_local_supabase_file(settings), **_local_platform_file(settings)}
    if local.get("SUPABASE_JWT_KEYS"):
        local["SUPABASE_JWT_SECRET"] = Keyring.parse(local["SUPABASE_JWT_KEYS"]).active_only().format()
    source = {**local, **settings.env}
    return {k: source[k] for k in PLATFORM_SECRETS if source.get(k)}


# What the dispatcher's cron handler needs besides its master key (dispatcher/health.py).
DISPATCHER_SECRETS = ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "ALERT_WEBHOOK_SECRET")


def dispatcher_secrets(settings: Settings) -> dict[str, str]:
    return {k: settings.env[k] for k in DISPATCHER_SECRETS if settings.env.get(k)}


def kv_namespace_id(
    env: Mapping[str, str],
    *,
    config: str = "wrangler.dispatcher.toml",
    binding: str = "TENANT_CACHE",
    override: str = "CLOUDFLARE_KV_NAMESPACE_ID",
) -> str:
    """A KV namespace's id: from the environment, else from the wrangler config that binds it."""
    if env.get(override):
        return env[override]
    parsed = tomllib.loads((ROOT / config).read_text())
    for ns in parsed.get("kv_namespaces", []):
        if ns.get("binding") == binding:
            return str(ns["id"])
    raise ConfigError(f"no {binding} KV namespace id ({config} or {override})")


def r2_bucket_name(
    env: Mapping[str, str],
    *,
    config: str = "wrangler.tenant.toml",
    binding: str = "FILES",
    override: str = "CLOUDFLARE_R2_BUCKET",
) -> str:
    """The tenants' files bucket: from the environment, else from the wrangler config that binds it."""
    if env.get(override):
        return env[override]
    parsed = tomllib.loads((ROOT / config).read_text())
    for bucket in parsed.get("r2_buckets", []):
        if bucket.get("binding") == binding:
            return str(bucket["bucket_name"])
    return R2_BUCKET


def ownership_checker(http: HttpClient, env: Mapping[str, str]) -> OwnershipChecker:
    """The operator's ownership check: the same as the tenant Worker's (shared.domains), over httpx.
    DOH_RESOLVER_URL picks the DNS-over-HTTPS resolver (default Cloudflare's); the HTTP token URL
    is fetched only when the name resolves to public addresses alone (the operator's network is
    not the tenant's to point at)."""
    resolver = env.get("DOH_RESOLVER_URL") or DEFAULT_DOH_URL

    async def check(domain: str, token: str) -> OwnershipResult:
        return await check_ownership(http, domain, token, resolver_url=resolver, public_only=True)

    return check


def d1_database_id(env: Mapping[str, str], *, config: str = "wrangler.dispatcher.toml", binding: str = "DB") -> str:
    """The routing replica's D1 database id: CLOUDFLARE_D1_DATABASE_ID, else the dispatcher's config."""
    if env.get("CLOUDFLARE_D1_DATABASE_ID"):
        return env["CLOUDFLARE_D1_DATABASE_ID"]
    parsed = tomllib.loads((ROOT / config).read_text())
    for db in parsed.get("d1_databases", []):
        if db.get("binding") == binding and db.get("database_id"):
            return str(db["database_id"])
    raise ConfigError(f"no D1 database id for {binding} ({config} or CLOUDFLARE_D1_DATABASE_ID)")


def cloudflare_api(settings: Settings, reporter: Reporter) -> CloudflareApi:
    """The official SDK's client for --remote; in a dry run its transport prints the writes."""
    import httpx

    transport: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport()
    if settings.dry_run:
        transport = DryRunTransport(transport, reporter)
    client = connect(
        token=settings.env["CLOUDFLARE_API_TOKEN"],
        transport=transport,
        base_url=settings.env.get("CLOUDFLARE_API_BASE_URL") or API_BASE,
    )
    return CloudflareApi(
        client, account_id=settings.env["CLOUDFLARE_ACCOUNT_ID"], zone_id=settings.env["CLOUDFLARE_ZONE_ID"]
    )


def build(
    settings: Settings, reporter: Reporter, *, http: HttpClient | None = None, runner: Runner | None = None
) -> ControlPlane:
    """The control plane for these settings. `http` and `runner` are injectable for tests."""
    closers: list[Callable[[], Awaitable[None]]] = []
    if http is None:
        from localrt.http_client import HttpxClient

        client = HttpxClient()
        http, closers = client, [client.aclose]
    real_runner = runner or SubprocessRunner(reporter, env=dict(settings.env))
    run: Runner = DryRunRunner(real_runner, reporter) if settings.dry_run else real_runner

    url, key = _supabase_settings(settings)
    sb_http: HttpClient = DryRunHttp(http, reporter, "supabase") if settings.dry_run else http
    registry = SupabaseRegistry(sb_http, url=url, service_role_key=key, dry_run=settings.dry_run, read_http=http)

    if settings.remote:
        missing = [k for k in REMOTE_ENV if not settings.env.get(k)]
        if missing:
            raise ConfigError(f"--remote needs {', '.join(missing)} in the environment")
        d1_id, cache_id = d1_database_id(settings.env), kv_namespace_id(settings.env)
        auth_kv_id = kv_namespace_id(
            settings.env, config="wrangler.tenant.toml", binding="AUTH_KV", override="CLOUDFLARE_AUTH_KV_NAMESPACE_ID"
        )
        api = cloudflare_api(settings, reporter)
        closers.append(api.aclose)
        cp = ControlPlane(
            registry,
            RoutingReplica(ApiD1(api, d1_id)),
            CloudflareRouteCache(api, cache_id),
            CloudflareScripts(
                api,
                run,
                settings.env.get("CONTEXT_SIGNING_SECRET"),
                dry_run=settings.dry_run,
                platform_secrets=platform_secrets(settings),
            ),
            CloudflareHostnames(api),
            reporter,
            local=False,
            dry_run=settings.dry_run,
            runner=run,
            master_secret=settings.env.get("CONTEXT_SIGNING_SECRET"),
            closers=closers,
            dispatcher_secrets=dispatcher_secrets(settings),
            ownership=ownership_checker(http, settings.env),
            runtime_data=CloudflareRuntimeData(api, auth_kv_id),
            meter=PlatformMeter(
                http,
                base_url=lambda t: f"https://{t.domain}",
                master_secret=lambda: settings.env.get("CONTEXT_SIGNING_SECRET"),
                label="usage meter (through the dispatcher)",
                dry_run=settings.dry_run,
            ),
            # the real client: a dry run's PUTs are printed by the class itself (never the bytes)
            objects=CloudflareR2Objects(
                http,
                token=settings.env["CLOUDFLARE_API_TOKEN"],
                account_id=settings.env["CLOUDFLARE_ACCOUNT_ID"],
                base_url=settings.env.get("CLOUDFLARE_API_BASE_URL") or API_BASE,
                reporter=reporter,
                bucket=r2_bucket_name(settings.env),
                dry_run=settings.dry_run,
            ),
        )
        return cp

    from localrt.d1 import D1Database, wrangler_d1_file
    from localrt.platform import StatePaths
    from localrt.workerd import sync_if_running

    d1_path = settings.d1_file or wrangler_d1_file(settings.wrangler_state)
    if d1_path is None or not Path(d1_path).exists():
        raise ConfigError(
            f"no local D1 database under {settings.wrangler_state}: run `python -m localrt run` "
            "once (it applies the D1 migrations with wrangler), or pass --d1-file"
        )
    paths = StatePaths(settings.state_dir)
    d1 = LocalD1(D1Database(d1_path))
    replica = RoutingReplica(DryRunD1(d1, reporter) if settings.dry_run else d1)
    cache = LocalRouteCache(paths.root, reporter, dry_run=settings.dry_run)
    scripts = LocalScripts(
        paths.registry(),
        paths.dispatcher_secrets,
        reporter,
        dry_run=settings.dry_run,
        platform_secrets=platform_secrets(settings),
    )

    def local_master() -> str | None:
        from localrt.devvars import read_dev_vars

        return read_dev_vars(paths.dispatcher_secrets).get("CONTEXT_SIGNING_SECRET")

    meter = PlatformMeter(
        http,
        base_url=lambda t: local_dispatcher_url(paths.root),
        master_secret=local_master,
        label="usage meter (local platform)",
        dry_run=settings.dry_run,
    )
    cp = ControlPlane(
        registry,
        replica,
        cache,
        scripts,
        LocalHostnames(),
        reporter,
        local=True,
        dry_run=settings.dry_run,
        on_change=lambda: sync_if_running(paths.root),
        runner=run,
        closers=closers,
        ownership=ownership_checker(http, settings.env),
        runtime_data=LocalRuntimeData(settings.wrangler_state, reporter, dry_run=settings.dry_run),
        meter=meter,
        objects=LocalObjects(paths.root, reporter, dry_run=settings.dry_run),
    )
    return cp

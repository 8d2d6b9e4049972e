"""Choose the backends: the local platform (default) or Cloudflare + a real Supabase, and dry-run.

Local: D1 is the SQLite file `wrangler d1 ... --local` keeps under .wrangler/state, KV and
the namespace are the local runtime's files under .local/, Supabase is the local stack
(SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY, or .local/secrets/supabase.dev.vars, which
`python -m localrt run` writes). Remote: everything from the environment (see REMOTE_ENV).

A local command never talks to a Supabase that is not on this machine: an operator with
production credentials exported must not write to production from a `--local` command, so
a non-loopback SUPABASE_URL in the environment is refused there (use --remote).
"""
from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from controlplane.cloudflare import API_BASE, CloudflareApi
from controlplane.dryrun import DryRunHttp
from controlplane.edges import (PLATFORM_SECRETS, CloudflareHostnames, CloudflareRouteCache, CloudflareRuntimeData,
                                CloudflareScripts, LocalHostnames, LocalRouteCache, LocalRuntimeData, LocalScripts)
from controlplane.errors import ConfigError
from controlplane.lifecycle import ControlPlane, OwnershipChecker
from controlplane.output import Reporter
from controlplane.registry import SupabaseRegistry
from controlplane.replica import DryRunD1, LocalD1, RoutingReplica, WranglerD1
from controlplane.wrangler import ROOT, DryRunRunner, Runner, SubprocessRunner
from shared.domains import DEFAULT_DOH_URL, OwnershipResult, check_ownership
from shared.http import HttpClient, HttpResponse
from shared.keys import Keyring

REMOTE_ENV = ("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_ZONE_ID", "SUPABASE_URL",
              "SUPABASE_SERVICE_ROLE_KEY")


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
        raise ConfigError(f"SUPABASE_URL in the environment points at {urlsplit(url).hostname or url!r}, not at "
                          "this machine: a --local command only uses the local Supabase. Unset SUPABASE_URL "
                          "(the local stack's values are read from .local/secrets/supabase.dev.vars) or use --remote")


def _supabase_settings(settings: Settings) -> tuple[str, str]:
    _local_guard(settings)
    url, key = settings.env.get("SUPABASE_URL"), settings.env.get("SUPABASE_SERVICE_ROLE_KEY")
    if url and key:
        return url, key
    if not settings.remote:
        local = _local_supabase_file(settings)
        if local.get("SUPABASE_URL") and local.get("SUPABASE_SERVICE_ROLE_KEY"):
            return local["SUPABASE_URL"], local["SUPABASE_SERVICE_ROLE_KEY"]
    raise ConfigError("Supabase is not configured: export SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY "
                      "(locally, `python -m localrt run` writes them to .local/secrets/supabase.dev.vars)")


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


def kv_namespace_id(env: Mapping[str, str], *, config: str = "wrangler.dispatcher.toml", binding: str = "TENANT_CACHE",
                    override: str = "CLOUDFLARE_KV_NAMESPACE_ID") -> str:
    """A KV namespace's id: from the environment, else from the wrangler config that binds it."""
    if env.get(override):
        return env[override]
    parsed = tomllib.loads((ROOT / config).read_text())
    for ns in parsed.get("kv_namespaces", []):
        if ns.get("binding") == binding:
            return str(ns["id"])
    raise ConfigError(f"no {binding} KV namespace id ({config} or {override})")


def ownership_checker(http: HttpClient, env: Mapping[str, str]) -> OwnershipChecker:
    """The operator's ownership check: the same as the tenant Worker's (shared.domains), over httpx.
    DOH_RESOLVER_URL picks the DNS-over-HTTPS resolver (default Cloudflare's); the HTTP token URL
    is fetched only when the name resolves to public addresses alone (the operator's network is
    not the tenant's to point at)."""
    resolver = env.get("DOH_RESOLVER_URL") or DEFAULT_DOH_URL

    async def check(domain: str, token: str) -> OwnershipResult:
        return await check_ownership(http, domain, token, resolver_url=resolver, public_only=True)

    return check


def _cloudflare_reply(method: str, url: str, body: bytes | None) -> HttpResponse:
    """What Cloudflare's API would answer a dry-run write with (its envelope, a pending result)."""
    result: object = {}
    if body and method == "POST" and "/custom_hostnames" in url:
        result = {**json.loads(body), "id": "dry-run", "status": "pending", "ssl": {"status": "initializing"}}
    envelope = {"success": True, "errors": [], "messages": [], "result": result}
    return HttpResponse(200, {"content-type": "application/json"}, json.dumps(envelope).encode())


def build(settings: Settings, reporter: Reporter, *, http: HttpClient | None = None,
          runner: Runner | None = None) -> ControlPlane:
    """The control plane for these settings. `http` and `runner` are injectable for tests."""
    closers = []
    if http is None:
        from localrt.http_client import HttpxClient

        client = HttpxClient()
        http, closers = client, [client.aclose]
    real_runner = runner or SubprocessRunner(reporter, env=dict(settings.env))
    run: Runner = DryRunRunner(real_runner, reporter) if settings.dry_run else real_runner

    url, key = _supabase_settings(settings)
    sb_http: HttpClient = DryRunHttp(http, reporter, "supabase") if settings.dry_run else http
    registry = SupabaseRegistry(sb_http, url=url, service_role_key=key, dry_run=settings.dry_run)

    if settings.remote:
        missing = [k for k in REMOTE_ENV if not settings.env.get(k)]
        if missing:
            raise ConfigError(f"--remote needs {', '.join(missing)} in the environment")
        cf_http: HttpClient = (DryRunHttp(http, reporter, "cloudflare api", _cloudflare_reply)
                               if settings.dry_run else http)
        api = CloudflareApi(cf_http, token=settings.env["CLOUDFLARE_API_TOKEN"],
                            account_id=settings.env["CLOUDFLARE_ACCOUNT_ID"], zone_id=settings.env["CLOUDFLARE_ZONE_ID"],
                            base_url=settings.env.get("CLOUDFLARE_API_BASE_URL") or API_BASE)
        replica = RoutingReplica(WranglerD1(run))
        cp = ControlPlane(registry, replica, CloudflareRouteCache(api, kv_namespace_id(settings.env)),
                          CloudflareScripts(api, run, settings.env.get("CONTEXT_SIGNING_SECRET"), dry_run=settings.dry_run,
                                            platform_secrets=platform_secrets(settings)),
                          CloudflareHostnames(api), reporter, local=False, dry_run=settings.dry_run, runner=run,
                          master_secret=settings.env.get("CONTEXT_SIGNING_SECRET"), closers=closers,
                          ownership=ownership_checker(http, settings.env),
                          runtime_data=CloudflareRuntimeData(api, kv_namespace_id(
                              settings.env, config="wrangler.tenant.toml", binding="AUTH_KV",
                              override="CLOUDFLARE_AUTH_KV_NAMESPACE_ID")))
        return cp

    from localrt.d1 import D1Database, wrangler_d1_file
    from localrt.platform import StatePaths
    from localrt.workerd import sync_if_running

    d1_path = settings.d1_file or wrangler_d1_file(settings.wrangler_state)
    if d1_path is None or not Path(d1_path).exists():
        raise ConfigError(f"no local D1 database under {settings.wrangler_state}: run `python -m localrt run` "
                          "once (it applies the D1 migrations with wrangler), or pass --d1-file")
    paths = StatePaths(settings.state_dir)
    d1 = LocalD1(D1Database(d1_path))
    replica = RoutingReplica(DryRunD1(d1, reporter) if settings.dry_run else d1)
    cache = LocalRouteCache(paths.root, reporter, dry_run=settings.dry_run)
    scripts = LocalScripts(paths.registry(), paths.dispatcher_secrets, reporter, dry_run=settings.dry_run,
                           platform_secrets=platform_secrets(settings))
    cp = ControlPlane(registry, replica, cache, scripts, LocalHostnames(), reporter, local=True,
                      dry_run=settings.dry_run, on_change=lambda: sync_if_running(paths.root), runner=run,
                      closers=closers, ownership=ownership_checker(http, settings.env), runtime_data=LocalRuntimeData(settings.wrangler_state, reporter,
                                                                     dry_run=settings.dry_run))
    return cp

"""The tenant Worker's settings, typed and read once per isolate (shared.config)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from shared.config import Reader, http_url, in_range, keyring, matching
from shared.domains import DEFAULT_DOH_URL
from shared.isolate import PerIsolate, read_vars
from shared.keys import Keyring
from shared.models import TENANT_ID_PATTERN
from shared.oauth import PROVIDERS

WORKER_VERSION = "0.1.0"
DEFAULT_AI_MODEL = "@cf/meta/llama-3.1-8b-instruct"
SESSION_SECRET_MIN_LENGTH = 32
FLUSH_DELAY_MS = 10_000
FLUSH_RETRY_BASE_MS = 2_000
FLUSH_RETRY_CAP_MS = 10 * 60_000

# Everything sign-in reads (shared.oauth.provider_config): per provider its client and, for the
# tests' fake provider, its URLs; one timeout.
OAUTH_NAMES: tuple[str, ...] = (
    *(f"{p.upper()}_{k}" for p in PROVIDERS for k in ("CLIENT_ID", "CLIENT_SECRET")),
    *(f"OAUTH_{p.upper()}_{u}_URL" for p in PROVIDERS for u in ("AUTHORIZE", "TOKEN", "API", "JWKS")),
    "OAUTH_TIMEOUT_SECONDS",
)


@dataclass(frozen=True)
class FlushTiming:
    """The UsageMeter's flush timing when the Worker's configuration is unusable (the defaults)."""

    usage_flush_delay_ms: int = FLUSH_DELAY_MS
    usage_flush_retry_base_ms: int = FLUSH_RETRY_BASE_MS
    usage_flush_retry_cap_ms: int = FLUSH_RETRY_CAP_MS


@dataclass(frozen=True)
class TenantConfig:
    """A tenant Worker's settings: its identity and keys, Supabase, sign-in, optional features.

    Required (the Worker refuses to start without them): TENANT_ID, TENANT_CONTEXT_KEY, the four
    Supabase secrets and SESSION_SECRET: without them no request can be verified, no session read
    and no data reached. Optional features answer 503 "not set up" on their own routes when their
    settings are absent: sign-in per provider, metrics, secret storage (PLATFORM_DATA_KEYS).
    """

    tenant_id: str
    context_key: Keyring  # TENANT_CONTEXT_KEY = HMAC(dispatcher master, tenant_id), a keyring
    supabase_url: str
    supabase_anon_key: str
    supabase_jwt_secret: str  # a keyring (shared.keys); tokens carry its active key id
    supabase_service_role_key: str
    session_secret: str  # a keyring, at least SESSION_SECRET_MIN_LENGTH characters
    oauth: Mapping[str, str] = field(default_factory=dict)  # OAUTH_NAMES that are set
    platform_data_keys: str = ""  # PLATFORM_DATA_KEYS; parsed where used (unset: secret storage is off)
    analytics_sql_url: str = ""  # ANALYTICS_SQL_URL, else Cloudflare's for ANALYTICS_ACCOUNT_ID
    analytics_account_id: str = ""
    analytics_api_token: str = ""
    doh_resolver_url: str = DEFAULT_DOH_URL  # DOH_RESOLVER_URL
    ai_model: str = DEFAULT_AI_MODEL  # AI_MODEL
    worker_version: str = WORKER_VERSION  # WORKER_VERSION
    usage_flush_delay_ms: int = FLUSH_DELAY_MS  # USAGE_FLUSH_DELAY_MS
    usage_flush_retry_base_ms: int = FLUSH_RETRY_BASE_MS  # USAGE_FLUSH_RETRY_BASE_MS
    usage_flush_retry_cap_ms: int = FLUSH_RETRY_CAP_MS  # USAGE_FLUSH_RETRY_CAP_MS

    REQUIRED = (
        "TENANT_ID",
        "TENANT_CONTEXT_KEY",
        "SUPABASE_URL",
        "SUPABASE_ANON_KEY",
        "SUPABASE_JWT_SECRET",
        "SUPABASE_SERVICE_ROLE_KEY",
        "SESSION_SECRET",
    )
    NAMES = (
        *REQUIRED,
        *OAUTH_NAMES,
        "PLATFORM_DATA_KEYS",
        "ANALYTICS_SQL_URL",
        "ANALYTICS_ACCOUNT_ID",
        "ANALYTICS_API_TOKEN",
        "DOH_RESOLVER_URL",
        "AI_MODEL",
        "WORKER_VERSION",
        "USAGE_FLUSH_DELAY_MS",
        "USAGE_FLUSH_RETRY_BASE_MS",
        "USAGE_FLUSH_RETRY_CAP_MS",
    )

    @classmethod
    def parse(cls, values: Mapping[str, str]) -> "TenantConfig":
        r = Reader(values)
        got = {name: r.required(name) for name in cls.REQUIRED}
        tenant_id = r.check("TENANT_ID", got["TENANT_ID"], lambda v: matching(re.compile(TENANT_ID_PATTERN), v), "")
        context_key = r.check("TENANT_CONTEXT_KEY", got["TENANT_CONTEXT_KEY"], keyring, None)
        r.check("SUPABASE_JWT_SECRET", got["SUPABASE_JWT_SECRET"], keyring, None)
        r.check("SUPABASE_URL", got["SUPABASE_URL"], http_url, "")
        r.check(
            "SESSION_SECRET", got["SESSION_SECRET"], lambda v: in_range(len(v), SESSION_SECRET_MIN_LENGTH, 1 << 20), 0
        )
        doh = r.check("DOH_RESOLVER_URL", r.raw("DOH_RESOLVER_URL"), http_url, DEFAULT_DOH_URL)
        sql_url = r.check("ANALYTICS_SQL_URL", r.raw("ANALYTICS_SQL_URL"), http_url, "")
        delay = r.int_in("USAGE_FLUSH_DELAY_MS", FLUSH_DELAY_MS, 0, 24 * 3600_000)
        base = r.int_in("USAGE_FLUSH_RETRY_BASE_MS", FLUSH_RETRY_BASE_MS, 1, 24 * 3600_000)
        cap = r.int_in("USAGE_FLUSH_RETRY_CAP_MS", FLUSH_RETRY_CAP_MS, 1, 24 * 3600_000)
        r.fail_if_any("tenant")
        assert context_key is not None
        return cls(
            tenant_id=tenant_id,
            context_key=context_key,
            supabase_url=got["SUPABASE_URL"],
            supabase_anon_key=got["SUPABASE_ANON_KEY"],
            supabase_jwt_secret=got["SUPABASE_JWT_SECRET"],
            supabase_service_role_key=got["SUPABASE_SERVICE_ROLE_KEY"],
            session_secret=got["SESSION_SECRET"],
            oauth={n: r.raw(n) for n in OAUTH_NAMES if r.raw(n)},
            platform_data_keys=r.raw("PLATFORM_DATA_KEYS"),
            analytics_sql_url=sql_url,
            analytics_account_id=r.raw("ANALYTICS_ACCOUNT_ID"),
            analytics_api_token=r.raw("ANALYTICS_API_TOKEN"),
            doh_resolver_url=doh,
            ai_model=r.raw("AI_MODEL") or DEFAULT_AI_MODEL,
            worker_version=r.raw("WORKER_VERSION") or WORKER_VERSION,
            usage_flush_delay_ms=delay,
            usage_flush_retry_base_ms=base,
            usage_flush_retry_cap_ms=cap,
        )

    def oauth_setting(self, name: str) -> str:
        """shared.oauth.provider_config's reader: one OAuth setting, "" when unset."""
        return self.oauth.get(name, "")


_configs: PerIsolate[TenantConfig] = PerIsolate(
    "tenant_config", lambda env: TenantConfig.parse(read_vars(env, TenantConfig.NAMES))
)


def config_for(env: Any) -> TenantConfig:
    """The isolate's configuration, read from `env` once (the app and the UsageMeter Durable
    Object share it); ConfigError when a required secret is missing or a setting unusable."""
    return _configs.get(env)

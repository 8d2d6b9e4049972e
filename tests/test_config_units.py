"""The typed configs (dispatcher.config, tenant_worker.config) on CPython: what a Worker refuses
to start with, and that a refusal names variables, never values."""

from __future__ import annotations

from typing import Any

import pytest

from dispatcher.config import DispatcherConfig
from shared.config import ConfigError
from shared.isolate import PerIsolate, read_vars
from shared.keys import Key, Keyring, new_secret
from tenant_worker.config import SESSION_SECRET_MIN_LENGTH, TenantConfig

RING = Keyring((Key("k1", new_secret()),)).format()
TENANT = {
    "TENANT_ID": "acme",
    "TENANT_CONTEXT_KEY": RING,
    "SUPABASE_URL": "https://db.example",
    "SUPABASE_ANON_KEY": "anon-key-value",
    "SUPABASE_JWT_SECRET": "jwt-secret-value-" + "x" * 32,
    "SUPABASE_SERVICE_ROLE_KEY": "service-role-value",
    "SESSION_SECRET": "s" * 48,
}


def refusal(parse: Any, values: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse(values)
    err = caught.value
    for value in values.values():  # the message and the log line carry names only
        if len(value) >= 8:
            assert value not in str(err) and value not in str(err.log_fields())
    return err


def test_a_complete_tenant_config_parses_with_its_defaults() -> None:
    cfg = TenantConfig.parse({**TENANT, "GITHUB_CLIENT_ID": "cid", "UNRELATED": "x"})
    assert cfg.tenant_id == "acme" and cfg.context_key.active.kid == "k1"
    assert cfg.oauth_setting("GITHUB_CLIENT_ID") == "cid" and cfg.oauth_setting("GOOGLE_CLIENT_ID") == ""
    assert cfg.doh_resolver_url.startswith("https://") and cfg.platform_data_keys == ""
    assert cfg.usage_flush_delay_ms > 0


@pytest.mark.parametrize("name", TenantConfig.REQUIRED)
def test_each_missing_required_tenant_secret_is_named(name: str) -> None:
    err = refusal(TenantConfig.parse, {k: v for k, v in TENANT.items() if k != name})
    assert err.missing == [name] and err.invalid == [] and name in str(err)


def test_every_missing_and_unusable_setting_is_named_at_once() -> None:
    err = refusal(
        TenantConfig.parse,
        {
            **TENANT,
            "SUPABASE_URL": "",
            "SESSION_SECRET": "short-secret",
            "TENANT_CONTEXT_KEY": "k1:not base64!",
            "TENANT_ID": "Not An Id",
            "DOH_RESOLVER_URL": "ftp://dns.example",
            "USAGE_FLUSH_DELAY_MS": "soon",
        },
    )
    assert err.missing == ["SUPABASE_URL"]
    assert err.invalid == [
        "DOH_RESOLVER_URL",
        "SESSION_SECRET",
        "TENANT_CONTEXT_KEY",
        "TENANT_ID",
        "USAGE_FLUSH_DELAY_MS",
    ]
    assert "short-secret" not in str(err)


def test_a_session_secret_of_exactly_the_minimum_length_is_accepted() -> None:
    assert TenantConfig.parse({**TENANT, "SESSION_SECRET": "s" * SESSION_SECRET_MIN_LENGTH}).session_secret
    refusal(TenantConfig.parse, {**TENANT, "SESSION_SECRET": "s" * (SESSION_SECRET_MIN_LENGTH - 1)})


def test_the_dispatcher_needs_only_its_master_key() -> None:
    cfg = DispatcherConfig.parse({"CONTEXT_SIGNING_SECRET": RING})
    assert cfg.context_master.kid == "k1" and not cfg.records_health and cfg.alert_webhook_url == ""
    assert (
        DispatcherConfig.parse({"CONTEXT_SIGNING_SECRET": RING, "ROUTE_ISOLATE_TTL_SECONDS": "0"}).route_isolate_ttl
        == 0
    )
    assert refusal(DispatcherConfig.parse, {}).missing == ["CONTEXT_SIGNING_SECRET"]
    err = refusal(
        DispatcherConfig.parse,
        {"CONTEXT_SIGNING_SECRET": "k1:", "ROUTE_ISOLATE_TTL_SECONDS": "3600", "ALERT_WEBHOOK_URL": "hooks.example"},
    )
    assert err.invalid == ["ALERT_WEBHOOK_URL", "CONTEXT_SIGNING_SECRET", "ROUTE_ISOLATE_TTL_SECONDS"]


def test_the_health_alert_threshold_reads_as_the_cli_reads_it() -> None:
    base = {"CONTEXT_SIGNING_SECRET": RING}
    assert [DispatcherConfig.parse({**base, "HEALTH_ALERT_AFTER": v}).health_alert_after for v in ("5", "0", "x")] == [
        5,
        3,
        3,
    ]


class Env:
    """An env as the SDK hands it: attributes; a binding is not a str."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


def test_read_vars_takes_strings_only() -> None:
    assert read_vars(Env(A="1", DB=object()), ["A", "DB", "MISSING"]) == {"A": "1", "DB": "", "MISSING": ""}


def test_a_failed_start_is_logged_once_and_never_rebuilt(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def build(env: Any) -> TenantConfig:
        calls.append(env)
        return TenantConfig.parse(read_vars(env, TenantConfig.NAMES))

    state: PerIsolate[TenantConfig] = PerIsolate("tenant_config", build)
    env = Env(**{k: v for k, v in TENANT.items() if k != "SESSION_SECRET"})
    for _ in range(3):
        with pytest.raises(ConfigError):
            state.get(env)
    assert len(calls) == 1
    lines = [r.getMessage() for r in caplog.records if "config_invalid" in r.getMessage()]
    assert len(lines) == 1 and "SESSION_SECRET" in lines[0] and TENANT["SUPABASE_ANON_KEY"] not in lines[0]

"""The dispatch Worker's settings, typed and read once per isolate (shared.config)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from dispatcher.routing import ISOLATE_TTL_SECONDS
from shared.config import DEFAULT_ALERT_AFTER, Reader, alert_after, http_url, in_range, keyring
from shared.keys import Key


@dataclass(frozen=True)
class DispatcherConfig:
    """The dispatch Worker's settings (wrangler.dispatcher.toml [vars] and its secrets)."""

    context_master: Key  # CONTEXT_SIGNING_SECRET's active key: each tenant's context key derives from it
    route_isolate_ttl: float = float(ISOLATE_TTL_SECONDS)  # ROUTE_ISOLATE_TTL_SECONDS, 0–60 (tests: 0)
    supabase_url: str = ""  # the cron records health checks there; unset: checks run, nothing recorded
    supabase_service_role_key: str = ""
    health_alert_after: int = DEFAULT_ALERT_AFTER  # HEALTH_ALERT_AFTER, 1–100 (else the default, as the CLI reads it)
    alert_webhook_url: str = ""  # ALERT_WEBHOOK_URL; unset: no webhook
    alert_webhook_secret: str = ""  # ALERT_WEBHOOK_SECRET; signs the webhook when set

    NAMES = (
        "CONTEXT_SIGNING_SECRET",
        "ROUTE_ISOLATE_TTL_SECONDS",
        "SUPABASE_URL",
        "SUPABASE_SERVICE_ROLE_KEY",
        "HEALTH_ALERT_AFTER",
        "ALERT_WEBHOOK_URL",
        "ALERT_WEBHOOK_SECRET",
    )

    @classmethod
    def parse(cls, values: Mapping[str, str]) -> "DispatcherConfig":
        r = Reader(values)
        ring = r.check("CONTEXT_SIGNING_SECRET", r.required("CONTEXT_SIGNING_SECRET"), keyring, None)
        ttl = r.check(
            "ROUTE_ISOLATE_TTL_SECONDS",
            r.raw("ROUTE_ISOLATE_TTL_SECONDS"),
            lambda v: in_range(float(v), 0.0, 60.0),
            float(ISOLATE_TTL_SECONDS),
        )
        n = alert_after(r.raw("HEALTH_ALERT_AFTER"))  # the CLI's rule too: out of range or unset -> the default
        hook = r.check("ALERT_WEBHOOK_URL", r.raw("ALERT_WEBHOOK_URL"), http_url, "")
        r.fail_if_any("dispatcher")
        assert ring is not None
        return cls(
            context_master=ring.active,
            route_isolate_ttl=ttl,
            supabase_url=r.raw("SUPABASE_URL"),
            supabase_service_role_key=r.raw("SUPABASE_SERVICE_ROLE_KEY"),
            health_alert_after=n,
            alert_webhook_url=hook,
            alert_webhook_secret=r.raw("ALERT_WEBHOOK_SECRET"),
        )

    @property
    def records_health(self) -> bool:
        return bool(self.supabase_url and self.supabase_service_role_key)

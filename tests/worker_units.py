"""Per-request services for unit tests of tenant Worker handlers on CPython: a real typed config
(tenant_worker.config) and a Supabase that cannot be reached (every call fails as a network
error would, so audit writes are the logged gaps the handlers promise)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from shared.keys import Key, Keyring, new_secret
from shared.outbound_http import HttpError, HttpResponse
from tenant_worker.config import TenantConfig


class UnreachableHttp:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def request(self, method: str, url: str, **_: Any) -> HttpResponse:
        self.calls.append((method, url))
        raise HttpError("connection refused (unit test: no Supabase)")


def offline_services(tenant_id: str = "acme") -> SimpleNamespace:
    config = TenantConfig.parse(
        {
            "TENANT_ID": tenant_id,
            "TENANT_CONTEXT_KEY": Keyring((Key("k1", new_secret()),)).format(),
            "SUPABASE_URL": "https://db.invalid",
            "SUPABASE_ANON_KEY": "anon",
            "SUPABASE_JWT_SECRET": "j" * 48,
            "SUPABASE_SERVICE_ROLE_KEY": "service",
            "SESSION_SECRET": "s" * 48,
        }
    )
    return SimpleNamespace(clock=time.time, http=UnreachableHttp(), config=config)

"""A tenant's UsageMeter (its Durable Object), read and restored through the running platform.

The meter's state lives only inside the tenant's Durable Object. The control plane reaches it
the way traffic does: the dispatcher, by the tenant's host, to the tenant's own Worker, whose
control endpoint (tenant_worker/api_control.py) answers only a short-lived token for that
tenant and operation (shared.control_token), derived from the dispatcher's master secret.
No other credential is added, and no other tenant's meter is reachable this way.

    meter = PlatformMeter(http, base_url=..., master_secret=...)
    await meter.read(tenant)             # MeterRead(available, snapshot | reason)
    await meter.restore(tenant, {"storage": 1234})

Locally the base URL is the running platform's dispatcher (host-status.json in the state
directory); on Cloudflare `https://<tenant domain>`. A tenant that is suspended or removed
is not served by the dispatcher, so its meter cannot be read: the backup says so, and its
flushed history (Supabase `tenant_usage`) is in the archive anyway.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Protocol

from pydantic import BaseModel, ConfigDict

from controlplane.model import TenantRecord
from shared.context import derive_tenant_keyring
from shared.control_token import issue
from shared.models import TenantStatus
from shared.outbound_http import HttpClient, HttpError

METER_PATH = "/api/control/usage-meter"


class MeterRead(BaseModel):
    model_config = ConfigDict(frozen=True)

    available: bool
    snapshot: dict[str, Any] | None = None
    reason: str | None = None


class MeterControl(Protocol):
    label: str

    async def read(self, tenant: TenantRecord) -> MeterRead: ...
    async def restore(self, tenant: TenantRecord, levels: dict[str, int]) -> MeterRead: ...


class PlatformMeter:
    """The meter through the dispatcher and the tenant's Worker (local platform or Cloudflare)."""

    def __init__(
        self,
        http: HttpClient,
        *,
        base_url: Callable[[TenantRecord], str | None],
        master_secret: Callable[[], str | None],
        label: str,
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http, self._base, self._master, self._dry, self._clock = http, base_url, master_secret, dry_run, clock
        self.label = label

    def _target(self, tenant: TenantRecord, op: str) -> tuple[str, dict[str, str]] | str:
        if tenant.status is not TenantStatus.ACTIVE:
            return f"the tenant is {tenant.status.value}: the dispatcher does not serve it"
        base = self._base(tenant)
        if base is None:
            return "the platform is not running"
        master = self._master()
        if not master:
            return "the dispatcher's master secret (CONTEXT_SIGNING_SECRET) is not available"
        key = derive_tenant_keyring(master, tenant.tenant_id).active.secret  # master: a keyring since rotation
        token = issue(key, tenant.tenant_id, op, now=self._clock())
        headers = {"host": tenant.domain, "authorization": f"Bearer {token}", "accept": "application/json"}
        return base.rstrip("/") + METER_PATH, headers

    async def _send(self, method: str, url: str, headers: dict[str, str], body: bytes | None) -> MeterRead:
        try:
            resp = await self._http.request(method, url, headers=headers, body=body, timeout=30.0)
        except HttpError as exc:
            return MeterRead(available=False, reason=f"unreachable: {type(exc).__name__}")
        if resp.status != 200:
            return MeterRead(available=False, reason=f"the tenant's Worker answered {resp.status}")
        try:
            data = resp.json()
            snapshot = data["meter"]
        except (ValueError, KeyError, TypeError):
            return MeterRead(available=False, reason="the tenant's Worker sent an unreadable answer")
        return MeterRead(available=True, snapshot=snapshot if isinstance(snapshot, dict) else None)

    async def read(self, tenant: TenantRecord) -> MeterRead:
        target = self._target(tenant, "meter.read")
        if isinstance(target, str):
            return MeterRead(available=False, reason=target)
        return await self._send("GET", target[0], target[1], None)

    async def restore(self, tenant: TenantRecord, levels: dict[str, int]) -> MeterRead:
        target = self._target(tenant, "meter.restore")
        if isinstance(target, str):
            return MeterRead(available=False, reason=target)
        url, headers = target
        if self._dry:
            return MeterRead(available=True, reason=f"dry-run: POST {url} {json.dumps({'levels': levels})}")
        body = json.dumps({"levels": levels}).encode()
        return await self._send("POST", url, {**headers, "content-type": "application/json"}, body)


def local_dispatcher_url(state_dir: Path) -> str | None:
    """The running local platform's dispatcher (host-status.json), or None when none runs."""
    from localrt.workerd import control_from_status

    if control_from_status(state_dir) is None:
        return None
    try:
        status = json.loads((state_dir / "host-status.json").read_text())
        return f"http://127.0.0.1:{int(status['port'])}"
    except (OSError, ValueError, KeyError, TypeError):
        return None

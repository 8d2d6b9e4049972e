"""Cloudflare's v4 API, the parts the control plane needs, over shared.http.HttpClient.

Every answer is the API's envelope: {"success", "errors": [{"code", "message"}],
"messages", "result", "result_info"}; a false `success` becomes CloudflareError.
Custom hostnames (Cloudflare for SaaS) live on the primary zone; KV and dispatch-namespace
scripts on the account.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from controlplane.errors import BackendError
from shared.http import HttpClient, HttpError, HttpResponse

API_BASE = "https://api.cloudflare.com/client/v4"
SCRIPT_NOT_FOUND = 10007  # workers.api.error.script_not_found


class CloudflareError(BackendError):
    def __init__(self, status: int, errors: list[dict[str, Any]]) -> None:
        self.status, self.errors = status, errors
        codes = {e.get("code") for e in errors if isinstance(e, dict)}
        self.codes = codes
        text = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict)) or "no detail"
        super().__init__(f"Cloudflare API error (HTTP {status}): {text}")


@dataclass(frozen=True)
class HostnameState:
    """A custom hostname as the registry records it."""

    hostname: str
    id: str
    ssl_status: str  # pending | active | failed (the registry's vocabulary)
    dns_configured: bool
    cloudflare_status: str
    cloudflare_ssl_status: str


def registry_ssl_status(cloudflare_ssl: str) -> str:
    """Cloudflare's many certificate states, in the three the registry keeps."""
    if cloudflare_ssl == "active":
        return "active"
    if cloudflare_ssl in ("expired", "deleted") or cloudflare_ssl.endswith("timed_out") or "fail" in cloudflare_ssl:
        return "failed"
    return "pending"


def hostname_state(result: dict[str, Any]) -> HostnameState:
    ssl = (result.get("ssl") or {}).get("status") or "initializing"
    status = result.get("status") or "pending"
    return HostnameState(hostname=result.get("hostname", ""), id=str(result.get("id", "")),
                         ssl_status=registry_ssl_status(ssl), dns_configured=status == "active",
                         cloudflare_status=status, cloudflare_ssl_status=ssl)


class CloudflareApi:
    def __init__(self, http: HttpClient, *, token: str, account_id: str, zone_id: str,
                 base_url: str = API_BASE) -> None:
        self._http, self._token = http, token
        self.account_id, self.zone_id, self.base_url = account_id, zone_id, base_url.rstrip("/")

    async def _send(self, method: str, path: str, body: Any = None, *, raw: bool = False) -> Any:
        headers = {"authorization": f"Bearer {self._token}", "accept": "application/json"}
        payload = None
        if body is not None:
            headers["content-type"] = "application/json"
            payload = json.dumps(body, separators=(",", ":")).encode()
        try:
            resp = await self._http.request(method, self.base_url + path, headers=headers, body=payload, timeout=30)
        except HttpError as exc:
            raise BackendError(f"Cloudflare API unreachable: {exc}") from None
        if raw and resp.ok:
            return resp
        return self._envelope(resp)

    @staticmethod
    def _envelope(resp: HttpResponse) -> Any:
        try:
            data = resp.json()
        except (ValueError, UnicodeDecodeError):
            raise CloudflareError(resp.status, [{"code": 0, "message": "response is not the API's JSON envelope"}]) from None
        if not isinstance(data, dict) or not data.get("success") or not resp.ok:
            errors = data.get("errors") if isinstance(data, dict) else None
            raise CloudflareError(resp.status, errors if isinstance(errors, list) else [])
        return data.get("result")

    # ---- custom hostnames (Cloudflare for SaaS) -----------------------------------------
    async def find_custom_hostname(self, hostname: str) -> HostnameState | None:
        result = await self._send("GET", f"/zones/{self.zone_id}/custom_hostnames?hostname={quote(hostname, safe='')}")
        for item in result or []:
            if item.get("hostname") == hostname:
                return hostname_state(item)
        return None

    async def create_custom_hostname(self, hostname: str) -> HostnameState:
        body = {"hostname": hostname, "ssl": {"method": "http", "type": "dv", "settings": {"min_tls_version": "1.2"}}}
        return hostname_state(await self._send("POST", f"/zones/{self.zone_id}/custom_hostnames", body))

    async def delete_custom_hostname(self, hostname_id: str) -> None:
        await self._send("DELETE", f"/zones/{self.zone_id}/custom_hostnames/{quote(hostname_id, safe='')}")

    # ---- Workers KV ---------------------------------------------------------------------
    def _kv_path(self, namespace_id: str, key: str) -> str:
        return f"/accounts/{self.account_id}/storage/kv/namespaces/{namespace_id}/values/{quote(key, safe='')}"

    async def kv_delete(self, namespace_id: str, key: str) -> None:
        await self._send("DELETE", self._kv_path(namespace_id, key))

    async def kv_keys(self, namespace_id: str, prefix: str) -> list[str]:
        """Every key name under a prefix (the API pages with a cursor, 1000 names at a time)."""
        names: list[str] = []
        cursor = ""
        while True:
            query = f"prefix={quote(prefix, safe='')}&limit=1000" + (f"&cursor={quote(cursor, safe='')}" if cursor else "")
            resp = await self._send("GET", f"/accounts/{self.account_id}/storage/kv/namespaces/{namespace_id}/keys?{query}",
                                    raw=True)
            data = resp.json()
            names += [item["name"] for item in data.get("result") or []]
            cursor = ((data.get("result_info") or {}).get("cursor")) or ""
            if not cursor:
                return names

    async def kv_get(self, namespace_id: str, key: str) -> str | None:
        try:
            resp = await self._send("GET", self._kv_path(namespace_id, key), raw=True)
        except CloudflareError as exc:
            if exc.status == 404:
                return None
            raise
        return resp.body.decode("utf-8")

    # ---- scripts in a dispatch namespace ------------------------------------------------
    def _script_path(self, namespace: str, script: str) -> str:
        return f"/accounts/{self.account_id}/workers/dispatch/namespaces/{namespace}/scripts/{quote(script, safe='')}"

    async def script_exists(self, namespace: str, script: str) -> bool:
        try:
            await self._send("GET", self._script_path(namespace, script))
        except CloudflareError as exc:
            if exc.status == 404 or SCRIPT_NOT_FOUND in exc.codes:
                return False
            raise
        return True

    async def delete_script(self, namespace: str, script: str) -> None:
        try:
            await self._send("DELETE", self._script_path(namespace, script) + "?force=true")
        except CloudflareError as exc:
            if not (exc.status == 404 or SCRIPT_NOT_FOUND in exc.codes):
                raise

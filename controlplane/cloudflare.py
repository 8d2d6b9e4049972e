"""Cloudflare's v4 API, the parts the control plane needs, through the official SDK (`cloudflare`,
pinned in pyproject.toml).

This module is the SDK's one adapter: the rest of the control plane sees `CloudflareApi`'s
plain methods, `HostnameState` and two errors. An answer the API refuses (4xx/5xx with its
envelope's `errors`) becomes `CloudflareError` (its HTTP status and error codes); an API that
cannot be reached becomes `BackendError`. The SDK retries what it deems transient (connection
errors, 408, 409, 429, 5xx) `MAX_RETRIES` times with backoff before either is raised.
Custom hostnames (Cloudflare for SaaS) live on the primary zone; KV, dispatch-namespace
scripts and D1 on the account.

Every request goes through one httpx transport, so dry-run can stand at that edge
(controlplane.dryrun.DryRunTransport) and print the requests exactly as the SDK builds them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, AsyncGenerator, Iterator, Mapping, Sequence
from urllib.parse import quote

import cloudflare
import httpx

from controlplane.errors import BackendError

API_BASE = "https://api.cloudflare.com/client/v4"
SCRIPT_NOT_FOUND = 10007  # workers.api.error.script_not_found
KV_KEY_NOT_FOUND = 10009
MAX_RETRIES = 2  # the SDK's default, stated: a command fails (exit 1, re-run) only after these
TIMEOUT_SECONDS = 30.0
CUSTOM_HOSTNAME_SSL = {"method": "http", "type": "dv", "settings": {"min_tls_version": "1.2"}}


class CloudflareError(BackendError):
    """The API answered with an error: `status` (HTTP), `errors` ([{"code", "message"}]), `codes`."""

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


def hostname_state(result: Mapping[str, Any]) -> HostnameState:
    ssl = (result.get("ssl") or {}).get("status") or "initializing"
    status = result.get("status") or "pending"
    return HostnameState(
        hostname=result.get("hostname") or "",
        id=str(result.get("id") or ""),
        ssl_status=registry_ssl_status(ssl),
        dns_configured=status == "active",
        cloudflare_status=status,
        cloudflare_ssl_status=ssl,
    )


def _as_dict(model: Any) -> dict[str, Any]:
    """An SDK model (pydantic) as the plain JSON object the API sent."""
    if model is None:
        return {}
    if isinstance(model, dict):
        return model
    return dict(model.to_dict(mode="json"))


def _errors_of(exc: cloudflare.APIError) -> list[dict[str, Any]]:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        return [e for e in body["errors"] if isinstance(e, dict)]
    return [{"code": 0, "message": "response is not the API's JSON envelope"}]


@contextlib.contextmanager
def sdk_errors() -> Iterator[None]:
    """The SDK's exceptions as the control plane's: CloudflareError (with codes) or BackendError."""
    try:
        yield
    except cloudflare.APIStatusError as exc:
        raise CloudflareError(exc.status_code, _errors_of(exc)) from None
    except cloudflare.APIResponseValidationError as exc:
        raise CloudflareError(exc.status_code, _errors_of(exc)) from None
    except cloudflare.APIConnectionError as exc:  # includes APITimeoutError
        cause = exc.__cause__
        detail = f"{type(cause).__name__}: {cause}" if cause is not None and str(cause) else exc.message
        raise BackendError(f"Cloudflare API unreachable: {detail}") from None


def connect(
    *,
    token: str,
    base_url: str = API_BASE,
    transport: httpx.AsyncBaseTransport | None = None,
    max_retries: int = MAX_RETRIES,
) -> cloudflare.AsyncCloudflare:
    """The SDK's client with this token only, over `transport` (httpx's own when None)."""
    http = cloudflare.DefaultAsyncHttpxClient(transport=transport) if transport is not None else None
    client = cloudflare.AsyncCloudflare(
        api_token=token, base_url=base_url, timeout=TIMEOUT_SECONDS, max_retries=max_retries, http_client=http
    )
    # The SDK also reads CLOUDFLARE_EMAIL / CLOUDFLARE_API_KEY / CLOUDFLARE_API_USER_SERVICE_KEY from the
    # process environment and would send those *instead of* the token: the control plane uses the token only.
    client.api_key = client.api_email = client.user_service_key = None
    return client


class CloudflareApi:
    def __init__(self, client: cloudflare.AsyncCloudflare, *, account_id: str, zone_id: str) -> None:
        self._cf = client
        self.account_id, self.zone_id = account_id, zone_id
        self.base_url = str(client.base_url).rstrip("/")

    async def aclose(self) -> None:
        await self._cf.close()

    # ---- custom hostnames (Cloudflare for SaaS) -----------------------------------------
    async def custom_hostnames(
        self, *, exact: str | None = None, per_page: int = 50
    ) -> AsyncGenerator[HostnameState, None]:
        """Every custom hostname on the zone (or the one named `exact`), page after page."""
        query: dict[str, Any] = {"per_page": per_page}
        if exact is not None:
            query["hostname"] = {"exact": exact}
        with sdk_errors():
            async for item in self._cf.custom_hostnames.list(zone_id=self.zone_id, **query):
                yield hostname_state(_as_dict(item))

    async def find_custom_hostname(self, hostname: str) -> HostnameState | None:
        async with contextlib.aclosing(self.custom_hostnames(exact=hostname)) as states:
            async for state in states:
                if state.hostname == hostname:
                    return state
        return None

    async def create_custom_hostname(self, hostname: str) -> HostnameState:
        with sdk_errors():
            created = await self._cf.custom_hostnames.create(
                zone_id=self.zone_id,
                hostname=hostname,
                ssl=CUSTOM_HOSTNAME_SSL,  # type: ignore[arg-type]
            )
        state = hostname_state(_as_dict(created))
        if not state.id:
            raise CloudflareError(200, [{"code": 0, "message": f"no custom hostname in the answer for {hostname}"}])
        return state

    async def delete_custom_hostname(self, hostname_id: str) -> None:
        with sdk_errors():
            await self._cf.custom_hostnames.delete(hostname_id, zone_id=self.zone_id)

    # ---- R2 objects (the files bucket) -----------------------------------------------------
    # The SDK models R2 buckets, not their objects: these use its raw request methods on the
    # account's object endpoint (`/accounts/<id>/r2/buckets/<bucket>/objects`, as wrangler's
    # `r2 object` does), still with the SDK's auth, retries and error mapping.
    def _r2_objects_path(self, bucket: str) -> str:
        return f"/accounts/{self.account_id}/r2/buckets/{quote(bucket, safe='')}/objects"

    async def r2_keys(self, bucket: str, prefix: str) -> list[str]:
        """Every object key under `prefix` (cursor pages of 1000)."""
        keys: list[str] = []
        cursor = ""
        while True:
            params: dict[str, Any] = {"prefix": prefix, "per_page": 1000}
            if cursor:
                params["cursor"] = cursor
            with sdk_errors():
                data = await self._cf.get(self._r2_objects_path(bucket), cast_to=object, options={"params": params})
            body = data if isinstance(data, dict) else {}
            keys += [str(o["key"]) for o in body.get("result") or [] if str(o.get("key", "")).startswith(prefix)]
            info = body.get("result_info") or {}
            cursor = str(info.get("cursor") or "")
            if not cursor or info.get("is_truncated") is False:
                return keys

    async def r2_delete(self, bucket: str, key: str) -> None:
        with sdk_errors():
            await self._cf.delete(f"{self._r2_objects_path(bucket)}/{quote(key, safe='')}", cast_to=object)

    # ---- Workers KV ---------------------------------------------------------------------
    async def kv_delete(self, namespace_id: str, key: str) -> None:
        with sdk_errors():
            await self._cf.kv.namespaces.values.delete(key, account_id=self.account_id, namespace_id=namespace_id)

    async def kv_keys(self, namespace_id: str, prefix: str) -> list[str]:
        """Every key name under a prefix (the API pages with a cursor, 1000 names at a time)."""
        with sdk_errors():
            return [
                key.name
                async for key in self._cf.kv.namespaces.keys.list(
                    namespace_id, account_id=self.account_id, prefix=prefix, limit=1000
                )
            ]

    async def kv_get(self, namespace_id: str, key: str) -> str | None:
        try:
            with sdk_errors():
                value = await self._cf.kv.namespaces.values.get(
                    key, account_id=self.account_id, namespace_id=namespace_id
                )
                return (await value.read()).decode("utf-8")
        except CloudflareError as exc:
            if exc.status == 404 or KV_KEY_NOT_FOUND in exc.codes:
                return None
            raise

    # ---- scripts in a dispatch namespace ------------------------------------------------
    async def script_exists(self, namespace: str, script: str) -> bool:
        try:
            with sdk_errors():
                await self._cf.workers_for_platforms.dispatch.namespaces.scripts.get(
                    script, account_id=self.account_id, dispatch_namespace=namespace
                )
        except CloudflareError as exc:
            if exc.status == 404 or SCRIPT_NOT_FOUND in exc.codes:
                return False
            raise
        return True

    async def delete_script(self, namespace: str, script: str) -> None:
        try:
            with sdk_errors():
                await self._cf.workers_for_platforms.dispatch.namespaces.scripts.delete(
                    script, account_id=self.account_id, dispatch_namespace=namespace, force=True
                )
        except CloudflareError as exc:
            if not (exc.status == 404 or SCRIPT_NOT_FOUND in exc.codes):
                raise

    # ---- D1 (the query API, bound parameters) --------------------------------------------
    async def d1_query(self, database_id: str, sql: str, params: Sequence[str]) -> list[dict[str, Any]]:
        """One statement; its rows. `params` are bound by D1 (`?1`, `?2`, … in `sql`)."""
        with sdk_errors():
            page = await self._cf.d1.database.query(
                database_id,
                account_id=self.account_id,
                sql=sql,  # type: ignore[call-overload]
                **({"params": list(params)} if params else {}),
            )
        results = page.result or []
        if results and results[0].success is False:
            raise CloudflareError(200, [{"code": 0, "message": "the D1 statement did not succeed"}])
        return [dict(r) for r in (results[0].results or [])] if results else []

    async def d1_batch(self, database_id: str, statements: Sequence[tuple[str, Sequence[str]]]) -> None:
        """Several statements in one request, run by D1 as one batch (all of it lands or none of it)."""
        batch = [{"sql": sql, **({"params": list(params)} if params else {})} for sql, params in statements]
        with sdk_errors():
            page = await self._cf.d1.database.query(database_id, account_id=self.account_id, batch=batch)  # type: ignore[arg-type]
        failed = [r for r in page.result or [] if r.success is False]
        if failed:
            raise CloudflareError(200, [{"code": 0, "message": f"{len(failed)} D1 statement(s) did not succeed"}])

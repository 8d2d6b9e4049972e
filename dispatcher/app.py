"""The dispatcher's request path: normalise Host, resolve, guard, sign, forward."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from workers import Request, Response

from dispatcher.config import DispatcherConfig
from dispatcher.namespace import (
    JsResponse,
    ScriptNotFound,
    UserWorkerFailed,
    WorkerLimitExceeded,
    dispatch_fetch,
    incoming_headers,
)
from dispatcher.routing import Defer, RouteResolver, RouteUnavailable
from shared.context import H_REQUEST_ID, context_headers, derive_tenant_key, is_client_controlled
from shared.hosts import InvalidHost, normalize_host
from shared.isolate import PerIsolate, read_vars
from shared.keys import Key
from shared.metrics import NO_TENANT, SOURCE_DISPATCHER, MetricsRecorder, RequestPoint, path_class
from shared.models import TenantContext, TenantRoute, TenantStatus
from shared.security_headers import BASELINE
from shared.tiers import Tier, plan_for

log = logging.getLogger("cmgsite.dispatcher")

MAX_REMEMBERED_HOSTS = 1024


def new_request_id() -> str:
    return os.urandom(16).hex()  # what secrets.token_hex(16) does, without importing `secrets` (and `random`)


class _Outcome:
    """What the request path learned, for its metrics point: the tenant and the error code."""

    __slots__ = ("tenant_id", "code", "path")

    def __init__(self) -> None:
        self.tenant_id, self.code, self.path = NO_TENANT, "", "/"


def _error(
    path: str,
    status: int,
    code: str,
    message: str,
    rid: str,
    route: TenantRoute | None = None,
    headers: dict[str, str] | None = None,
    *,
    note: _Outcome | None = None,
) -> tuple[int, JsResponse]:
    if note is not None:
        note.code = code
    # Imported on the first error, not at start: the hot path never renders one (and `html`,
    # which it needs, is a large module to compile).
    from shared.branding import Brand
    from shared.error_pages import error_reply

    brand = Brand(route.brand_name) if route is not None and route.brand_name else None
    reply = error_reply(path, status, code, message, rid, branding=brand, headers=headers)
    return reply.status, Response(reply.body, status=reply.status, headers=reply.headers).js_object


def _log(event: str, rid: str, **fields: Any) -> None:
    log.warning(json.dumps({"event": event, "request_id": rid, **fields}, sort_keys=True))


class Dispatcher:
    """One per isolate: keeps the route cache and derived keys between requests."""

    def __init__(self, env: Any, config: DispatcherConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._env = env
        self.config = config
        self._clock = clock
        # Only the master's active key signs: the others are for the tenants' keyrings, which the CLI derives.
        self._master = config.context_master
        self._resolver = RouteResolver(env.DB, getattr(env, "TENANT_CACHE", None), isolate_ttl=config.route_isolate_ttl)
        self._keys: dict[str, Key] = {}
        self.metrics = MetricsRecorder(getattr(env, "METRICS", None))
        # Read from env once: the SDK's env wrapper probes a binding's JS type on every access.
        self._namespace: Any = None
        self._limits: dict[str, dict[str, int]] = {}  # tier -> the namespace's `limits` for it
        self._hosts: dict[str, str] = {}  # raw Host header -> normalised host (valid ones only)

    def _normalize_host(self, raw: str | None) -> str:
        """shared.hosts.normalize_host, remembered for the Host values this isolate has seen
        (bounded: anyone can send a new Host with every request)."""
        if raw is None:
            return normalize_host(raw)  # raises InvalidHost
        found = self._hosts.get(raw)
        if found is None:
            found = normalize_host(raw)  # raises InvalidHost; invalid values are not kept
            if len(self._hosts) >= MAX_REMEMBERED_HOSTS:
                self._hosts.clear()
            self._hosts[raw] = found
        return found

    def _worker_limits(self, tier: Tier) -> dict[str, int]:
        limits = self._limits.get(tier)
        if limits is None:
            limits = self._limits[tier] = plan_for(tier).worker_limits()
        return limits

    def _tenant_key(self, tenant_id: str) -> Key:
        key = self._keys.get(tenant_id)
        if key is None:
            derived = derive_tenant_key(self._master.secret, tenant_id)
            key = self._keys[tenant_id] = Key(self._master.kid, derived)
        return key

    async def handle(
        self, request: Request, defer: Defer | None = None, *, source: str = SOURCE_DISPATCHER
    ) -> Response:
        """`serve` as the SDK's Response (the cron's probes read its status, headers and body)."""
        return Response(await self.serve(request, defer, source=source))

    async def serve(
        self, request: Request, defer: Defer | None = None, *, source: str = SOURCE_DISPATCHER
    ) -> JsResponse:
        """Serve one request; the runtime's Response goes back to the runtime as is (wrapping it
        in the SDK's Response costs type probes across the JS boundary on every request). Its
        metrics point is written in `defer` (ctx.waitUntil), never inline."""
        started = self._clock()
        note = _Outcome()
        method = str(request.js_object.method)  # read from JS once per request
        status, response = await self._serve(request, method, defer, note)
        if self.metrics.enabled:
            self.metrics.record(
                RequestPoint(
                    note.tenant_id,
                    source,
                    path_class(note.path),
                    method,
                    status,
                    (self._clock() - started) * 1000,
                    note.code,
                ),
                defer,
            )
        return response

    async def _serve(
        self, request: Request, method: str, defer: Defer | None, note: _Outcome
    ) -> tuple[int, JsResponse]:
        rid = new_request_id()
        url = urlsplit(request.url)
        path = note.path = url.path or "/"
        incoming = incoming_headers(request)  # converted from JS once per request
        try:
            host = self._normalize_host(incoming.get("host"))
        except InvalidHost as exc:
            return _error(path, 400, "bad_host", f"Bad request: {exc}.", rid, note=note)
        try:
            route = await self._resolver.resolve(host, defer)
        except RouteUnavailable as exc:
            _log("route_unavailable", rid, host=host, reason=str(exc))
            return _error(
                path,
                503,
                "routing_unavailable",
                "The service is temporarily unavailable. Please retry shortly.",
                rid,
                headers={"retry-after": "5"},
                note=note,
            )
        if route is None:
            return _error(path, 404, "not_found", "There is nothing here.", rid, note=note)
        note.tenant_id = route.tenant_id
        if route.status is TenantStatus.SUSPENDED:
            return _error(path, 403, "tenant_suspended", "This site is suspended.", rid, route, note=note)
        if route.status is TenantStatus.INACTIVE:
            return _error(path, 410, "tenant_inactive", "This site is no longer available.", rid, route, note=note)

        ctx = TenantContext(route.tenant_id, route.tenant_type, route.tier, host, rid, int(self._clock()))
        headers = [(k, v) for k, v in incoming.items() if not is_client_controlled(k)]
        headers.extend(context_headers(ctx, self._tenant_key(route.tenant_id)).items())
        # The tenant sees the host it was routed by, never a URL a proxy in front rewrote.
        routed_url = urlunsplit((url.scheme, host, path, url.query, ""))
        try:
            # The baseline security headers on every answer, whatever the tenant's Worker sent
            # (its own CSP, which depends on the content, stays its own).
            if self._namespace is None:
                self._namespace = self._env.DISPATCHER
            return await dispatch_fetch(
                self._namespace,
                route.script_name,
                self._worker_limits(route.tier),
                request,
                method,
                routed_url,
                headers,
                {H_REQUEST_ID: rid, **BASELINE},
            )
        except ScriptNotFound:
            _log("script_not_found", rid, tenant_id=route.tenant_id, script=route.script_name)
            return _error(
                path, 502, "tenant_worker_missing", "This site is not available right now.", rid, route, note=note
            )
        except WorkerLimitExceeded as exc:
            _log("worker_limit_exceeded", rid, tenant_id=route.tenant_id, limit=exc.kind)
            if exc.kind == "cpu":
                return _error(
                    path,
                    503,
                    "worker_cpu_limit",
                    "The site is over its compute limit. Please retry shortly.",
                    rid,
                    route,
                    headers={"retry-after": "1"},
                    note=note,
                )
            return _error(
                path,
                429,
                "worker_subrequest_limit",
                "The site made too many requests. Please retry.",
                rid,
                route,
                headers={"retry-after": "1"},
                note=note,
            )
        except UserWorkerFailed as exc:
            _log("tenant_worker_failed", rid, tenant_id=route.tenant_id, error=str(exc)[:200])
            return _error(path, 502, "tenant_worker_error", "This site could not answer.", rid, route, note=note)


def misconfigured(request: Request) -> JsResponse:
    """The answer of a dispatcher that could not start (shared.isolate logged which variable):
    the same words for every host, naming no variable and no value."""
    return _error(
        urlsplit(request.url).path or "/",
        503,
        "misconfigured",
        "The service is temporarily unavailable.",
        new_request_id(),
        headers={"retry-after": "30"},
    )[1]


def _build(env: Any) -> Dispatcher:
    return Dispatcher(env, DispatcherConfig.parse(read_vars(env, DispatcherConfig.NAMES)))


_dispatchers: PerIsolate[Dispatcher] = PerIsolate("dispatcher", _build)


def dispatcher_for(env: Any) -> Dispatcher:
    """The isolate's Dispatcher for this env; ConfigError when its configuration is unusable."""
    return _dispatchers.get(env)

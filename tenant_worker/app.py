"""The tenant Worker's request path: verify the tenant context, route, answer."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any, Awaitable, Callable
from urllib.parse import SplitResult, unquote, urlsplit

from workers import Request, Response

from shared.branding import Brand
from shared.context import H_REQUEST_ID, ContextError, verify_context
from shared.error_pages import error_reply, wants_json
from shared.fetch_client import FetchClient
from shared.isolate import PerIsolate
from shared.metrics import Defer, MetricsRecorder
from shared.outbound_http import HttpClient
from shared.security_headers import with_security_headers
from tenant_worker import (
    api_control,
    api_data,
    api_domains,
    api_files,
    api_health,
    api_integrations,
    api_metrics,
    api_support,
    api_usage,
    auth,
    branding,
    dashboards,
    pages,
    request_rules,
    sessions,
)
from tenant_worker.config import TenantConfig, config_for
from tenant_worker.inbound_http import ApiError, Call, Reply, Route, StreamBody, error_to_reply, parse_query
from tenant_worker.metrics_adapter import request_point

log = logging.getLogger("cmgsite.tenant")

# Feature modules each export ROUTES; the table is data you can print.
ROUTE_MODULES = [
    api_health,
    api_usage,
    api_domains,
    api_integrations,
    auth,
    api_data,
    api_files,
    api_control,
    api_metrics,
    api_support,
    branding,
    dashboards,
    pages,
]

# Run before every handler, in order; each may fill call.state or raise ApiError.
Middleware = Callable[[Call], Awaitable[None]]
# request_rules first: a cross-site or non-JSON state change is refused before any session work.
MIDDLEWARE: list[Middleware] = [request_rules.request_rules, sessions.session_middleware]


def route_table() -> list[Route]:
    return [r for module in ROUTE_MODULES for r in module.ROUTES]


class Services:
    """Per-isolate edges handed to handlers: the typed configuration, outbound HTTP and the clock.

    Feature modules build what they need (Supabase clients, the usage meter) from these and
    the bindings on `call.env`, so tests can swap the edges without touching the logic.
    """

    def __init__(self, config: TenantConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self.http: HttpClient = FetchClient()


def request_method(request: Request) -> str:
    """The method as the runtime received it, as a str. The SDK's `request.method` builds an
    http.HTTPMethod and raises KeyError for any method that enum lacks (PROPFIND, MKCOL, ...)."""
    return str(request.js_object.method)


def request_headers(request: Request) -> dict[str, str]:
    """The request's headers as a plain dict with lower-case names, in one JS call and one
    conversion. (The SDK's `request.headers` builds an email-style HTTPMessage pair by pair,
    a third of this Worker's own time per request; the JS Headers object already joins repeated
    headers and trims values, so the dict holds the same.)"""
    import js  # the runtime's module (imported here: the route table is read on CPython too)

    converted = js.Object.fromEntries(request.js_object.headers).to_py()
    return {str(k): str(v) for k, v in converted.items()}


JsResponse = Any  # the runtime's Response object (a JsProxy), handed back to the runtime as is


def js_response(status: int, headers: list[tuple[str, str]], body: Any) -> JsResponse:
    """The runtime's Response, built with one conversion of its init and one constructor call;
    `body` is bytes (copied once into a Uint8Array, as the SDK's constructor passes it) or the
    runtime's stream. Not wrapped in the SDK's Response: its constructor probes the object's type
    across the JS boundary, and the runtime takes the JS object as it is."""
    import js
    from pyodide.ffi import to_js

    init = to_js({"status": status, "headers": headers}, dict_converter=js.Object.fromEntries)
    return js.Response.new(to_js(body) if isinstance(body, bytes) else body, init)


# Nothing this Worker answers is public: every answer depends on the session or names the
# request, so none may sit in a shared cache unless its handler says otherwise.
DEFAULT_CACHE_CONTROL = "private, no-store"


def response_headers(reply_headers: dict[str, str]) -> dict[str, str]:
    """A reply's headers plus the security headers (shared.security_headers) and the default
    Cache-Control, for every answer this Worker gives (errors included)."""
    out = with_security_headers(reply_headers)
    if "no-store" in out.get("cache-control", "no-store"):  # nothing said, or not storable: private too
        out["cache-control"] = DEFAULT_CACHE_CONTROL
    return out


def _to_response(reply: Reply, request_id: str) -> JsResponse:
    headers = list(response_headers(reply.headers).items())
    headers.append((H_REQUEST_ID, request_id))
    headers.extend(("set-cookie", c) for c in reply.cookies)
    body = reply.body.handle if isinstance(reply.body, StreamBody) else reply.body  # a stream goes out as is
    return js_response(reply.status, headers, body)


class TenantApp:
    def __init__(self, env: Any, config: TenantConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.env = env
        self.clock = clock
        self.tenant_id = config.tenant_id
        self._key = config.context_key
        self.services = Services(config, clock)
        self._routes = [(r, r.compile()) for r in route_table()]
        self._methods = {r.method for r, _ in self._routes} | {"HEAD"}  # methods some route serves
        self.metrics = MetricsRecorder(getattr(env, "METRICS", None))

    async def handle(self, request: Request, defer: Defer | None = None) -> JsResponse:
        """Serve one request; its metrics point is written in `defer` (ctx.waitUntil), never inline."""
        started = self.clock()
        note: dict[str, Any] = {}
        method = request_method(request)  # read from JS once per request
        status, response = await self._handle(request, method, note)
        if self.metrics.enabled:
            call = note.get("call")
            self.metrics.record(
                request_point(
                    self.tenant_id,
                    method,
                    note.get("route"),
                    status,
                    (self.clock() - started) * 1000,
                    str(note.get("code", "")),
                    call.state if isinstance(call, Call) else None,
                ),
                defer,
            )
        return response

    async def _handle(self, request: Request, method: str, note: dict[str, Any]) -> tuple[int, JsResponse]:
        url = urlsplit(request.url)
        path = url.path or "/"
        headers = request_headers(request)
        try:
            tenant = verify_context(headers, key=self._key, tenant_id=self.tenant_id, now=int(self.clock()))
        except ContextError as exc:
            log.warning(json.dumps({"event": "context_refused", "reason": str(exc)}))
            note["code"] = "context_refused"
            r = error_reply("/api/", 403, "forbidden", "Request did not come through the platform.", "unverified")
            return r.status, js_response(r.status, list(response_headers(r.headers).items()), r.body)
        rid = tenant.request_id
        try:
            reply = await self._route(request, method, url, tenant, path, headers, note)
        except ApiError as err:
            note["code"] = err.code
            reply = error_to_reply(path, err, rid, await self._branding(tenant, path, headers))
        except Exception:
            log.exception("unhandled error request_id=%s", rid)
            failure = ApiError(500, "internal_error", "Something went wrong on our side.")
            note["code"] = failure.code
            reply = error_to_reply(path, failure, rid, await self._branding(tenant, path, headers))
        return reply.status, _to_response(reply, rid)

    async def _branding(self, tenant: Any, path: str, headers: dict[str, str]) -> Brand | None:
        """A white-label tenant's error pages carry its own brand, never the platform's."""
        if wants_json(path):
            return None

        async def no_body() -> bytes:
            return b""

        try:
            call = Call(tenant, "GET", path, {}, headers, {}, self.env, self.services, no_body)
            return await branding.tenant_branding(call)
        except Exception:
            return Brand(tenant.host)

    async def _route(
        self,
        request: Request,
        method: str,
        url: SplitResult,
        tenant: Any,
        path: str,
        headers: dict[str, str],
        note: dict[str, Any],
    ) -> Reply:
        decoded = unquote(path)
        if ".." in decoded.split("/") or "\\" in decoded or "\x00" in decoded:
            raise ApiError(400, "bad_path", "Malformed path.")
        allowed: list[str] = []
        for route, regex in self._routes:
            m = regex.match(path)
            if m is None:
                continue
            if route.method != method and not (method == "HEAD" and route.method == "GET"):
                allowed.append(route.method)
                continue

            async def read_body() -> bytes:
                return await request.bytes()

            call = Call(
                tenant,
                method,
                path,
                parse_query(url.query),
                headers,
                {k: unquote(v) for k, v in m.groupdict().items()},
                self.env,
                self.services,
                read_body,
                scheme=url.scheme or "https",
                body_kind=route.body,
                raw_body=StreamBody(request.js_object.body) if route.body == "raw" else None,
            )
            note["route"], note["call"] = route.name, call
            for middleware in MIDDLEWARE:
                await middleware(call)
            reply = await route.handler(call)
            reply.cookies.extend(call.cookies)  # e.g. a session rotated by middleware
            return reply
        if allowed:
            if "GET" in allowed:
                allowed.append("HEAD")
            raise ApiError(
                405, "method_not_allowed", "Method not allowed.", headers={"allow": ", ".join(sorted(set(allowed)))}
            )
        if method not in self._methods:
            raise ApiError(501, "not_implemented", "This method is not served here.")
        raise ApiError(404, "not_found", "There is nothing here.")


def misconfigured(request: Request) -> Response:
    """The answer of a tenant Worker that could not start (shared.isolate logged which variable
    is missing or unusable): 503, naming no variable and no value. The page carries the host the
    visitor asked for, never the platform's brand (a white-label tenant's visitors see no platform)."""
    path = urlsplit(request.url).path or "/"
    rid = str(request.headers.get(H_REQUEST_ID) or "")
    rid = rid if _REQUEST_ID.fullmatch(rid) else "unavailable"  # the dispatcher's id, when it is one
    host = urlsplit(request.url).hostname or ""  # the dispatcher routes to the host it matched
    brand = None if wants_json(path) or not _HOST.fullmatch(host) else Brand(host)
    r = error_reply(
        path,
        503,
        "misconfigured",
        "This site is not available right now. Please try again later.",
        rid,
        branding=brand,
        headers={"retry-after": "30"},
    )
    return Response(r.body, status=r.status, headers=response_headers(r.headers))


_REQUEST_ID = re.compile(r"[0-9a-f]{32}")
_HOST = re.compile(r"[a-z0-9.-]{1,253}")
_apps: PerIsolate[TenantApp] = PerIsolate("tenant_app", lambda env: TenantApp(env, config_for(env)))


def app_for(env: Any) -> TenantApp:
    """The isolate's TenantApp for this env; ConfigError when its configuration is unusable."""
    return _apps.get(env)

"""The one JS-boundary call of the dispatcher: forwarding into the dispatch namespace.

The Python Workers SDK wraps KV, D1, Durable Objects and service bindings, but not
dispatch-namespace bindings, so `env.DISPATCHER` is the raw JS object. This module is the
only place that speaks to it. The JS it implements:

    const worker = env.DISPATCHER.get(scriptName, {}, { limits: { cpuMs, subRequests } });
    // One copy of the request: the routed host's URL, the filtered and signed headers.
    const upstream = await worker.fetch(new Request(url, { method: request.method, headers,
                                                           body: request.body, redirect: request.redirect }));
    const response = new Response(upstream.body, upstream);  // mutable headers
    response.headers.set("x-request-id", requestId);

`incoming_headers(request)` reads the client's headers into a plain dict in one conversion
(lower-case names, as the Headers object iterates them).

Errors the runtime throws (Cloudflare's docs): "Worker not found" when the script is not
in the namespace; "exceeded CPU" / "subrequests" when a custom limit is hit.
"""

from __future__ import annotations

from typing import Any

import js
from pyodide.ffi import JsException, to_js
from workers import Request

JsResponse = Any  # the runtime's Response object (a JsProxy), handed back to the runtime as is


class ScriptNotFound(Exception):
    """The route names a script the dispatch namespace does not hold."""


class WorkerLimitExceeded(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind  # "cpu" or "subrequests"


class UserWorkerFailed(Exception):
    """The tenant's Worker threw instead of answering."""


def _js_object(value: dict[str, Any]) -> Any:
    return to_js(value, dict_converter=js.Object.fromEntries)


_options: dict[tuple[tuple[str, int], ...], tuple[Any, Any]] = {}


def _get_arguments(limits: dict[str, int]) -> tuple[Any, Any]:
    """`get()`'s args and options as JS objects, made once per tier's limits (hot path)."""
    key = tuple(sorted(limits.items()))
    found = _options.get(key)
    if found is None:
        found = _options[key] = (_js_object({}), _js_object({"limits": limits}))
    return found


def _classify(message: str) -> Exception:
    text = message.lower()
    if text.startswith("worker not found"):
        return ScriptNotFound(message)
    if "cpu" in text and ("exceeded" in text or "limit" in text):
        return WorkerLimitExceeded("cpu")
    if "subrequest" in text:
        return WorkerLimitExceeded("subrequests")
    return UserWorkerFailed(message)


def incoming_headers(request: Request) -> dict[str, str]:
    """The request's headers as a plain dict (one JS call and one conversion, lower-case names)."""
    converted: dict[str, str] = js.Object.fromEntries(request.js_object.headers).to_py()  # JS strings -> str
    return converted


_NO_BODY = frozenset({"GET", "HEAD"})


async def dispatch_fetch(
    namespace: Any,
    script_name: str,
    limits: dict[str, int],
    request: Request,
    method: str,
    url: str,
    headers: list[tuple[str, str]],
    response_headers: dict[str, str],
) -> tuple[int, JsResponse]:
    """Forward `request` (its `method`, read once by the caller) to `script_name` at `url` (its
    URL on the routed host) with `headers` instead of its own and per-tier `limits`; stamp
    `response_headers`. Returns the status and the runtime's Response, not wrapped in the SDK's."""
    original = request.js_object
    init: dict[str, Any] = {"method": method, "headers": headers, "redirect": original.redirect}  # pairs -> arrays
    if method not in _NO_BODY:
        init["body"] = original.body
    try:
        worker = namespace.get(script_name, *_get_arguments(limits))
        upstream = await worker.fetch(js.Request.new(url, _js_object(init)))
    except JsException as exc:
        raise _classify(str(getattr(exc, "message", exc))) from None
    response = js.Response.new(upstream.body, upstream)
    stamped = response.headers
    for name, value in response_headers.items():
        stamped.set(name, value)
    return int(upstream.status), response

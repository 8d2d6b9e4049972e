"""Stand-in for the Python Workers SDK (`workers-runtime-sdk`) under CPython.

Same public names and call shapes as the real package (tests/test_sdk_shapes.py holds
them against its source); bodies are local: JS objects are the `js` stand-in's classes.
"""
from __future__ import annotations

import json
from http import HTTPMethod, HTTPStatus
from http.client import HTTPMessage
from collections.abc import Mapping
from typing import Any

import js
from pyodide.ffi import JsException

__all__ = [
    "DurableObject", "FetchResponse", "Request", "Response", "WorkerEntrypoint", "fetch",
    "handler", "python_from_rpc", "python_to_rpc",
]


class HTTPMessageMapping(HTTPMessage, Mapping):  # the SDK's headers type
    pass


def _to_message(headers: js.Headers) -> HTTPMessageMapping:
    result = HTTPMessageMapping()
    for key, val in headers:
        result[key] = val.strip()
    return result


def _to_js_headers(headers: Any) -> js.Headers:
    if isinstance(headers, list):
        return js.Headers.new(headers)
    if isinstance(headers, dict):
        return js.Headers.new(headers.items())
    if isinstance(headers, js.Headers):
        return headers
    raise TypeError("Received unexpected type for headers argument")


class Request:
    def __init__(self, input: "Request | str | js.Request", **other_options: Any) -> None:
        if isinstance(input, js.Request):
            if other_options:
                raise ValueError("Expected no options when constructing Request from a js.Request")
            self._js_request = input
            return
        if isinstance(other_options.get("method"), HTTPMethod):
            other_options["method"] = other_options["method"].value
        if "headers" in other_options:
            other_options["headers"] = _to_js_headers(other_options["headers"])
        self._js_request = js.Request.new(input._js_request if isinstance(input, Request) else input, **other_options)

    def __repr__(self) -> str:
        return f"Request(method={self._js_request.method!r}, url={self._js_request.url!r})"

    @property
    def js_object(self) -> js.Request:
        return self._js_request

    @property
    def body(self) -> Any:
        return self._js_request.body

    @property
    def body_used(self) -> bool:
        return self._js_request.bodyUsed

    @property
    def cf(self) -> Any:
        return self._js_request.cf

    @property
    def headers(self) -> HTTPMessageMapping:
        return _to_message(self._js_request.headers)

    @property
    def method(self) -> HTTPMethod:
        return HTTPMethod[self._js_request.method]

    @property
    def url(self) -> str:
        return self._js_request.url

    def _raise_if_failed(self) -> None:
        if self.body_used:
            raise OSError("Body already used")

    async def bytes(self) -> bytes:
        self._raise_if_failed()
        return (await self._js_request.arrayBuffer()).to_bytes()

    async def text(self) -> str:
        self._raise_if_failed()
        return await self._js_request.text()

    async def json(self, **kwargs: Any) -> Any:
        return json.loads(await self.text(), **kwargs)

    def clone(self) -> "Request":
        if self.body_used:
            raise OSError("Body already used")
        return Request(self._js_request.clone())


class FetchResponse:
    """pyodide.http.FetchResponse's surface over a js.Response."""

    def __init__(self, url: str, js_response: js.Response) -> None:
        self._url = url
        self.js_response = js_response

    @property
    def body(self) -> Any:
        return self.js_response.body

    @property
    def js_object(self) -> js.Response:
        return self.js_response

    @property
    def headers(self) -> HTTPMessageMapping:
        return _to_message(self.js_response.headers)

    @property
    def status(self) -> int:
        return self.js_response.status

    @property
    def status_text(self) -> str:
        return self.js_response.statusText

    @property
    def ok(self) -> bool:
        return self.js_response.ok

    @property
    def url(self) -> str:
        return self.js_response.url

    @property
    def body_used(self) -> bool:
        return self.js_response.bodyUsed

    def _raise_if_failed(self) -> None:
        if self.js_response.bodyUsed:
            raise OSError("Body already used")

    async def text(self) -> str:
        self._raise_if_failed()
        return await self.js_response.text()

    async def bytes(self) -> bytes:
        self._raise_if_failed()
        return (await self.js_response.arrayBuffer()).to_bytes()

    async def buffer(self) -> js.ArrayBuffer:
        self._raise_if_failed()
        return await self.js_response.arrayBuffer()

    def json(self, *args: Any, **kwargs: Any) -> Any:
        if isinstance(self, FetchResponse):
            return self._json()
        # Static use, as in the SDK: Response.json(data) means Response.from_json(data).
        return Response.from_json(self, *args, **kwargs)

    async def _json(self) -> Any:
        return json.loads(await self.text())

    @staticmethod
    def redirect(url: str, status: HTTPStatus | int = HTTPStatus.FOUND) -> "Response":
        code = status.value if isinstance(status, HTTPStatus) else status
        return Response(js.Response.new(None, {"status": code, "headers": {"location": url}}))

    @staticmethod
    def from_json(data: Any, status: HTTPStatus | int = HTTPStatus.OK, status_text: str = "",
                  headers: Any = None) -> "Response":
        options = Response._create_options(status, status_text, headers)
        if "headers" not in options:
            options["headers"] = _to_js_headers({"content-type": "application/json"})
        elif not options["headers"].has("content-type"):
            options["headers"].set("content-type", "application/json")
        return Response(js.Response.new(json.dumps(data), **options))

    def replace_body(self, body: Any) -> "Response":
        return Response(js.Response.new(body, self.js_response))


class Response(FetchResponse):
    def __init__(self, body: Any = None, status: HTTPStatus | int | None = None, status_text: str = "",
                 headers: Any = None, web_socket: Any = None) -> None:
        if isinstance(body, js.Response):
            if status is not None or status_text or headers is not None:
                raise ValueError("Expected no options when constructing Response from a js.Response")
            super().__init__(body.url, body)
            return
        if not isinstance(body, (str, bytes)) and body is not None:
            raise TypeError(f"Unsupported type in Response: {type(body).__name__}")
        js_resp = js.Response.new(body, **self._create_options(status, status_text, headers))
        super().__init__(js_resp.url, js_resp)

    def __repr__(self) -> str:
        return f"Response(status={self.status})"

    @staticmethod
    def _create_options(status: HTTPStatus | int | None = HTTPStatus.OK, status_text: str = "",
                        headers: Any = None, web_socket: Any = None) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if status:
            options["status"] = status.value if isinstance(status, HTTPStatus) else status
        if status_text:
            options["statusText"] = status_text
        if headers:
            options["headers"] = _to_js_headers(headers)
        return options


async def fetch(resource: "str | Request | js.Request", **other_options: Any) -> Response:
    """The runtime's fetch; locally, real HTTP through localrt.outbound (httpx)."""
    from localrt.outbound import outbound_fetch

    if isinstance(resource, Request):
        resource = resource.js_object
    if isinstance(other_options.get("method"), HTTPMethod):
        other_options["method"] = other_options["method"].value
    fetcher = other_options.pop("fetcher", None)
    if "headers" in other_options:
        other_options["headers"] = _to_js_headers(other_options["headers"])
    request = resource if isinstance(resource, js.Request) and not other_options else js.Request.new(resource, **other_options)
    try:
        js_resp = await (fetcher(request) if fetcher is not None else outbound_fetch(request))
    except JsException as exc:
        raise OSError(exc.message) from None
    return Response(js_resp)


def python_to_rpc(value: Any) -> Any:
    return value


def python_from_rpc(value: Any) -> Any:
    return value


def handler(func: Any) -> Any:
    return func


class WorkerEntrypoint:
    def __init__(self, ctx: Any, env: Any) -> None:
        self.ctx = ctx
        self.env = env


class DurableObject:
    def __init__(self, ctx: Any, env: Any) -> None:
        self.ctx = ctx
        self.env = env

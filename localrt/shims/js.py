"""Stand-in for the JS globals a Python Worker reaches through `import js`.

Only what this project's Workers and the `workers` stand-in use: Object.fromEntries,
Headers, Request, Response (each with the JS constructor spelled `.new(...)` as in Pyodide).
"""
from __future__ import annotations

import re
from typing import Any, Iterable

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE = re.compile(r"[\r\n\x00]")


class Object:
    @staticmethod
    def fromEntries(entries: Iterable[tuple[str, Any]]) -> dict[str, Any]:
        return dict(entries)


class Headers:
    """Case-insensitive, ordered, multi-valued, like the Fetch API's Headers."""

    def __init__(self, init: Any = None) -> None:
        self._items: list[tuple[str, str]] = []
        if init is None:
            return
        if isinstance(init, Headers):
            self._items = list(init._items)  # already validated
            return
        if isinstance(init, dict):
            init = init.items()
        for name, value in init:
            self.append(name, value)

    @classmethod
    def new(cls, init: Any = None) -> "Headers":
        return cls(init)

    @staticmethod
    def _check(name: str, value: str) -> tuple[str, str]:
        name, value = str(name), str(value)
        if not _TOKEN.match(name) or _BAD_VALUE.search(value):
            raise TypeError(f"Invalid header: {name!r}")
        return name.lower(), value.strip()

    def append(self, name: str, value: str) -> None:
        self._items.append(self._check(name, value))

    def set(self, name: str, value: str) -> None:
        name, value = self._check(name, value)
        self._items = [(k, v) for k, v in self._items if k != name] + [(name, value)]

    def get(self, name: str) -> str | None:
        values = [v for k, v in self._items if k == name.lower()]
        return ", ".join(values) if values else None

    def has(self, name: str) -> bool:
        return any(k == name.lower() for k, _ in self._items)

    def delete(self, name: str) -> None:
        self._items = [(k, v) for k, v in self._items if k != name.lower()]

    def getSetCookie(self) -> list[str]:
        return [v for k, v in self._items if k == "set-cookie"]

    def __iter__(self):
        # Fetch's iteration combines repeats, except Set-Cookie.
        seen: dict[str, list[str]] = {}
        for k, v in self._items:
            seen.setdefault(k, []).append(v)
        for k, vs in sorted(seen.items()):
            if k == "set-cookie":
                for v in vs:
                    yield (k, v)
            else:
                yield (k, ", ".join(vs))

    def raw_items(self) -> list[tuple[str, str]]:
        return list(self._items)


def _body_bytes(body: Any) -> bytes | None:
    if body is None:
        return None
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    raise TypeError(f"Unsupported body type: {type(body).__name__}")


class _Body:
    _body: bytes | None
    bodyUsed: bool = False

    @property
    def body(self) -> bytes | None:
        return self._body

    def _take(self) -> bytes:
        if self.bodyUsed:
            raise TypeError("Body has already been used")
        self.bodyUsed = True
        return self._body or b""

    async def text(self) -> str:
        return self._take().decode("utf-8", errors="replace")

    async def arrayBuffer(self) -> "ArrayBuffer":
        return ArrayBuffer(self._take())


class ArrayBuffer:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def to_bytes(self) -> bytes:
        return self._data


class Request(_Body):
    def __init__(self, input: Any, init: dict[str, Any] | None = None, **kwargs: Any) -> None:
        init = {**(init or {}), **kwargs}
        if isinstance(input, Request):
            self.url, self.method = input.url, input.method
            self.headers = Headers(input.headers)
            self._body = input._body
            self.cf = input.cf
        else:
            self.url, self.method, self.headers, self._body, self.cf = str(input), "GET", Headers(), None, None
        if "method" in init:
            self.method = str(init["method"]).upper()
        if "headers" in init:
            self.headers = Headers(init["headers"])
        if "body" in init:
            self._body = _body_bytes(init["body"])
        self.bodyUsed = False

    @classmethod
    def new(cls, input: Any, init: dict[str, Any] | None = None, **kwargs: Any) -> "Request":
        return cls(input, init, **kwargs)

    def clone(self) -> "Request":
        return Request(self)


class Response(_Body):
    def __init__(self, body: Any = None, init: Any = None, **kwargs: Any) -> None:
        if isinstance(init, Response):
            init = {"status": init.status, "statusText": init.statusText, "headers": Headers(init.headers)}
        init = {**(init or {}), **kwargs}
        self._body = _body_bytes(body)
        self.status = int(init.get("status") or 200)
        if not 200 <= self.status <= 599:
            raise ValueError(f"Invalid status {self.status}")
        self.statusText = str(init.get("statusText", ""))
        self.headers = Headers(init.get("headers"))
        if isinstance(body, str) and not self.headers.has("content-type"):
            self.headers.set("content-type", "text/plain;charset=UTF-8")
        self.url = ""
        self.type = "default"
        self.bodyUsed = False

    @classmethod
    def new(cls, body: Any = None, init: Any = None, **kwargs: Any) -> "Response":
        return cls(body, init, **kwargs)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

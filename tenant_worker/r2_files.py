"""The tenant Worker's R2 bucket (binding `FILES`): the one module that touches its JS objects.

Everything else sees `StoredObject` (plain Python) and `StreamBody` (an opaque stream it only
passes along). The JS it implements:

    await env.FILES.head(key)                                -> R2Object | null
    await env.FILES.put(key, body, {httpMetadata: {contentType}, customMetadata,
                                    onlyIf: {etagDoesNotMatch: "*"} | {etagMatches: etag}})
                                                             -> R2Object | null (precondition failed)
    await env.FILES.get(key)                                 -> R2ObjectBody | null (.body: ReadableStream)
    await env.FILES.delete(key)
    await env.FILES.list({prefix, startAfter, limit, include: ["httpMetadata", "customMetadata"]})
                                                             -> {objects: R2Object[], truncated}

`body` for put is the request's own ReadableStream (known length: its Content-Length), so an
upload goes from the client to R2 without Python holding it. R2 refuses a stream of unknown
length, and a stream that ends early makes put throw (nothing is stored).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from tenant_worker.inbound_http import StreamBody


class BucketError(Exception):
    """R2 refused or failed an operation (or the request body broke off mid-upload)."""


class BucketMissing(BucketError):
    """The Worker has no FILES binding."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    etag: str
    uploaded: datetime
    content_type: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class Bucket(Protocol):
    async def head(self, key: str) -> StoredObject | None: ...

    async def put(
        self,
        key: str,
        body: StreamBody | bytes,
        *,
        content_type: str,
        metadata: dict[str, str],
        if_absent: bool = False,
        if_etag: str | None = None,
    ) -> StoredObject | None: ...

    async def get(self, key: str) -> tuple[StoredObject, StreamBody] | None: ...

    async def delete(self, key: str) -> None: ...

    async def list(
        self, prefix: str, *, start_after: str | None = None, limit: int = 1000
    ) -> tuple[list[StoredObject], bool]: ...


def _absent(value: Any) -> bool:
    return value is None or type(value).__name__ in ("JsNull", "JsUndefined")


def _py(value: Any) -> Any:
    to_py = getattr(value, "to_py", None)
    return to_py() if callable(to_py) else value


def _stored(obj: Any) -> StoredObject:
    """A JS R2Object as plain Python (no JsProxy leaves this module)."""
    http = getattr(obj, "httpMetadata", None)
    content_type = None if _absent(http) else getattr(http, "contentType", None)
    custom = getattr(obj, "customMetadata", None)
    metadata = {} if _absent(custom) else {str(k): str(v) for k, v in dict(_py(custom)).items()}
    uploaded = getattr(obj, "uploaded", None)
    millis = float(uploaded.getTime()) if uploaded is not None and not _absent(uploaded) else 0.0
    return StoredObject(
        key=str(obj.key),
        size=int(obj.size),
        etag=str(obj.etag),
        uploaded=datetime.fromtimestamp(millis / 1000, tz=timezone.utc),
        content_type=None if _absent(content_type) else str(content_type),
        metadata=metadata,
    )


class R2Bucket:
    """Bucket over the runtime's R2 binding."""

    def __init__(self, binding: Any) -> None:
        from workers.rpc import python_to_rpc  # the SDK's wrapper -> the raw JS binding

        self._b = python_to_rpc(binding)

    @classmethod
    def of(cls, env: Any) -> "R2Bucket":
        binding = getattr(env, "FILES", None)
        if binding is None:
            raise BucketMissing("FILES binding missing")
        return cls(binding)

    @staticmethod
    def _js(value: dict[str, Any]) -> Any:
        import js
        from pyodide.ffi import to_js

        return to_js(value, dict_converter=js.Object.fromEntries)

    async def _call(self, op: str, *args: Any) -> Any:
        from pyodide.ffi import JsException

        try:
            return await getattr(self._b, op)(*args)
        except JsException as exc:
            raise BucketError(f"R2 {op} failed: {str(getattr(exc, 'message', exc))[:200]}") from None

    async def head(self, key: str) -> StoredObject | None:
        obj = await self._call("head", key)
        return None if _absent(obj) else _stored(obj)

    async def put(
        self,
        key: str,
        body: StreamBody | bytes,
        *,
        content_type: str,
        metadata: dict[str, str],
        if_absent: bool = False,
        if_etag: str | None = None,
    ) -> StoredObject | None:
        options: dict[str, Any] = {"httpMetadata": {"contentType": content_type}, "customMetadata": metadata}
        if if_absent:
            options["onlyIf"] = {"etagDoesNotMatch": "*"}
        elif if_etag is not None:
            options["onlyIf"] = {"etagMatches": if_etag}
        if isinstance(body, StreamBody):
            payload = body.handle
            if _absent(payload):
                payload = ""
        else:
            payload = self._bytes(body) if body else ""
        obj = await self._call("put", key, payload, self._js(options))
        return None if _absent(obj) else _stored(obj)

    @staticmethod
    def _bytes(data: bytes) -> Any:
        from pyodide.ffi import to_js

        return to_js(data)

    async def get(self, key: str) -> tuple[StoredObject, StreamBody] | None:
        obj = await self._call("get", key)
        if _absent(obj):
            return None
        return _stored(obj), StreamBody(obj.body)

    async def delete(self, key: str) -> None:
        await self._call("delete", key)

    async def list(
        self, prefix: str, *, start_after: str | None = None, limit: int = 1000
    ) -> tuple[list[StoredObject], bool]:
        options: dict[str, Any] = {"prefix": prefix, "limit": limit, "include": ["httpMetadata", "customMetadata"]}
        if start_after is not None:
            options["startAfter"] = start_after
        page = await self._call("list", self._js(options))
        return [_stored(o) for o in page.objects], bool(page.truncated)

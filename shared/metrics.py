"""Per-tenant metrics: one data point per request, in Workers Analytics Engine's shape.

Both Workers record through one interface, the Analytics Engine binding `METRICS`:

    env.METRICS.writeDataPoint({"indexes": [tenant_id], "blobs": [...], "doubles": [...]})

On Cloudflare it is the `[[analytics_engine_datasets]]` binding (dataset `cmgsite_metrics`);
on the local platform the same call reaches a store the platform keeps (localrt/node/
metrics-plugin.mjs, a SQLite file under the state directory). Queries live in
shared.metrics_query.

The layout of a point (the SQL in shared.metrics_query reads it by these positions):

    index1   tenant id ("-" when the dispatcher could not tell: unknown host, bad Host)
    blob1    source: "dispatcher" | "tenant" | "probe" (the dispatcher's own health checks)
    blob2    route: the tenant Worker's route name ("health", "auth.callback", "ai_generate"; "-" when
             no route matched); the dispatcher's path class ("api", "auth", "page"). Never a raw path.
    blob3    method (GET, POST, ... or OTHER)
    blob4    status class ("2xx" .. "5xx")
    blob5    error code ("" when none): the API error code, the sign-in failure reason
    blob6    feature ("" | "signin" | "ai" | "domains" | "files")
    blob7    sign-in provider ("github" | "google" | "")
    blob8    feature outcome ("success" | "failure" | "")
    double1  latency in ms (the Worker's wall clock: on Cloudflare it moves only across I/O)
    double2  HTTP status
    double3  the latency bucket's upper bound in ms (percentiles come from these: shared.metrics_query)

Recording never slows or fails a request: handlers only build a `RequestPoint` (a frozen
dataclass) and the recorder keeps it; converting and writing runs in `ctx.waitUntil`, in
batches (one waitUntil task per batch, not per request), and a sink that throws is dropped
and counted (`MetricsRecorder.dropped`, logged as `metrics_dropped`).
"""

from __future__ import annotations

import bisect
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol

log = logging.getLogger("cmgsite.metrics")

DATASET = "cmgsite_metrics"
NO_TENANT = "-"
NO_ROUTE = "-"
SOURCE_DISPATCHER = "dispatcher"
SOURCE_TENANT = "tenant"
SOURCE_PROBE = "probe"
FEATURES = ("signin", "ai", "domains", "files")

# Upper bounds (ms) of the latency buckets; the last catches everything above.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1,
    2,
    3,
    5,
    7,
    10,
    15,
    20,
    30,
    50,
    75,
    100,
    150,
    200,
    300,
    500,
    750,
    1000,
    1500,
    2000,
    3000,
    5000,
    10000,
    30000,
    120000,
)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

Defer = Callable[[Awaitable[Any]], None]
STUCK_SECONDS = 10.0  # a batch task not run by then is taken for lost (its request was cancelled)


def status_class(status: int) -> str:
    return f"{min(max(int(status) // 100, 1), 5)}xx"


def latency_bucket(ms: float) -> float:
    i = bisect.bisect_left(LATENCY_BUCKETS_MS, ms)
    return LATENCY_BUCKETS_MS[min(i, len(LATENCY_BUCKETS_MS) - 1)]


def method_label(method: str) -> str:
    """Methods are client input: anything unusual is one label, so it cannot grow the blob space."""
    upper = method.upper()
    return upper if upper in _METHODS else "OTHER"


def path_class(path: str) -> str:
    """The dispatcher does not know a tenant's routes: it records the kind of path only."""
    if path == "/api" or path.startswith("/api/"):
        return "api"
    if path == "/auth" or path.startswith("/auth/"):
        return "auth"
    return "page"


def feature_of(route_name: str) -> str:
    """The feature a tenant route belongs to, by its name in the route table ("" for none)."""
    if route_name.startswith("ai_") or route_name.startswith("ai."):
        return "ai"
    if route_name.startswith("domain") and route_name not in ("domains.list", "domain_get"):
        return "domains"  # adds, verifications and removals; listings are not operations
    if route_name.startswith("file"):
        return "files"
    return ""


@dataclass(frozen=True, slots=True)
class RequestPoint:
    """One request as recorded: built on the request path (cheap), converted in waitUntil."""

    tenant_id: str
    source: str
    route: str
    method: str
    status: int
    latency_ms: float
    code: str = ""
    feature: str = ""
    provider: str = ""
    outcome: str = ""

    def data_point(self) -> dict[str, list[Any]]:
        """The `writeDataPoint` argument (Analytics Engine: ≤ 1 index of ≤ 96 bytes, ≤ 20 blobs and doubles)."""
        latency = max(0.0, float(self.latency_ms))
        return {
            "indexes": [self.tenant_id[:64] or NO_TENANT],
            "blobs": [
                self.source,
                self.route[:64],
                method_label(self.method),
                status_class(self.status),
                self.code[:64],
                self.feature,
                self.provider[:16],
                self.outcome,
            ],
            "doubles": [round(latency, 3), float(self.status), latency_bucket(latency)],
        }


class DataPointSink(Protocol):
    """The Analytics Engine binding's one method. On Cloudflare it returns nothing (the write is
    asynchronous inside the runtime); the local binding buffers points and returns a promise
    only from the call that carries the next batch to the store, which is awaited."""

    def writeDataPoint(self, point: dict[str, list[Any]]) -> Any: ...  # noqa: N802 (the binding's name)


class MetricsRecorder:
    """One per isolate: writes points to the sink; a failing write is dropped and counted.

    Points are kept in the isolate and written in batches: the first point after a write hands
    one task to `defer` (that request's ctx.waitUntil), which waits `batch_seconds` and then
    converts and writes every point recorded meanwhile, by this request or later ones. A request
    therefore pays a list append; the conversion and the JS calls run after the responses, once
    per batch for the waitUntil task."""

    def __init__(
        self,
        sink: DataPointSink | None,
        *,
        batch_seconds: float = 0.05,
        max_batch: int = 200,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sink = sink
        self._clock = clock
        self._scheduled_at = 0.0
        self._batch_seconds = batch_seconds
        self._max_batch = max_batch
        self._pending: list[RequestPoint] = []
        self._scheduled = False
        self.written = 0
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return self._sink is not None

    def record(self, point: RequestPoint, defer: Defer | None) -> None:
        """Keep the point; hand a batch write to `defer` (ctx.waitUntil) if none is waiting. Never raises."""
        if self._sink is None or defer is None:
            return
        now = self._clock()
        if self._scheduled and now - self._scheduled_at >= STUCK_SECONDS:
            # The waiting task never ran (its request was cancelled): its points are lost.
            lost, self._pending, self._scheduled = self._pending, [], False
            for _ in lost:
                self._drop(TimeoutError("metrics batch task never ran"))
        if len(self._pending) >= self._max_batch:  # do not grow without bound while a task waits
            self._drop(OverflowError("metrics batch full"))
            return
        self._pending.append(point)
        if self._scheduled:
            return
        self._scheduled, self._scheduled_at = True, now
        try:
            defer(self._write_batch())
        except Exception as exc:  # the runtime refused the task: count what it would have carried
            self._scheduled = False
            lost, self._pending = self._pending, []
            for _ in lost:
                self._drop(exc)

    async def _write_batch(self) -> None:
        try:
            if self._batch_seconds > 0:
                import asyncio  # imported by the runtime already; kept off the module's import list

                await asyncio.sleep(self._batch_seconds)
        finally:
            batch, self._pending, self._scheduled = self._pending, [], False
        for point in batch:
            await self.write(point)

    async def write(self, point: RequestPoint) -> None:
        try:
            result = self._sink.writeDataPoint(point.data_point())  # type: ignore[union-attr]
            if hasattr(result, "__await__"):  # not inspect: the dispatcher keeps its imports small
                await result
            self.written += 1
        except Exception as exc:
            self._drop(exc)

    def _drop(self, exc: BaseException) -> None:
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 100 == 0:
            log.warning(json.dumps({"event": "metrics_dropped", "dropped": self.dropped, "error": type(exc).__name__}))

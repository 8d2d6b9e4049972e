"""The metrics core on CPython: the data point layout, the recorder (a failing sink is dropped
and counted), and the query module over the local store and over a loopback fake of the
Analytics Engine SQL API (same SQL, same answers)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Awaitable

import pytest

from localrt.http_client import HttpxClient
from localrt.metrics_store import SqliteMetricsSource, write_points
from shared.metrics import (
    LATENCY_BUCKETS_MS,
    MetricsRecorder,
    RequestPoint,
    feature_of,
    latency_bucket,
    method_label,
    path_class,
    status_class,
)
from shared.metrics_query import (
    MetricsQueries,
    MetricsUnavailable,
    SqlApiSource,
    parse_sql_api_answer,
    percentile,
    sql_api_url,
)
from tests.fake_analytics import FakeAnalytics
from tests.support import LiveServer


def test_a_point_has_analytics_engines_shape_and_limits() -> None:
    p = RequestPoint("partner1", "tenant", "auth.callback", "get", 302, 12.3456, "", "signin", "github", "success")
    dp = p.data_point()
    assert dp["indexes"] == ["partner1"]
    assert dp["blobs"] == ["tenant", "auth.callback", "GET", "3xx", "", "signin", "github", "success"]
    assert dp["doubles"] == [12.346, 302.0, 15]
    assert len(dp["blobs"]) <= 20 and len(dp["doubles"]) <= 20
    # Client-controlled values cannot grow the blob space: methods collapse, long codes are cut.
    odd = RequestPoint("x" * 200, "dispatcher", "api", "PROPFIND" * 20, 999, -5, "c" * 500).data_point()
    assert odd["blobs"][2] == "OTHER" and len(odd["blobs"][4]) == 64 and len(odd["indexes"][0].encode()) <= 96
    assert odd["blobs"][3] == "5xx" and odd["doubles"][0] == 0.0


@pytest.mark.parametrize("value, expected", [(0, 1), (1, 1), (1.01, 2), (99, 100), (100, 100), (10**9, 120000)])
def test_latency_buckets(value: float, expected: float) -> None:
    assert latency_bucket(value) == expected


def test_labels() -> None:
    assert [status_class(s) for s in (200, 302, 404, 503, 99, 700)] == ["2xx", "3xx", "4xx", "5xx", "1xx", "5xx"]
    assert [path_class(p) for p in ("/api/health", "/api", "/auth/login/x", "/", "/apix")] == [
        "api",
        "api",
        "auth",
        "page",
        "page",
    ]
    assert method_label("delete") == "DELETE" and method_label("FOO") == "OTHER"
    assert [
        feature_of(n)
        for n in (
            "ai_generate",
            "domain_add",
            "domain_verify",
            "domain_remove",
            "domains.list",
            "domain_get",
            "files.upload",
            "health",
        )
    ] == ["ai", "domains", "domains", "domains", "", "", "files", ""]


class ListSink:
    def __init__(self) -> None:
        self.points: list[dict[str, Any]] = []

    def writeDataPoint(self, point: dict[str, Any]) -> None:  # noqa: N802
        self.points.append(point)


class BrokenSink:
    def writeDataPoint(self, point: dict[str, Any]) -> None:  # noqa: N802
        raise RuntimeError("analytics engine is down")


class AsyncSink(ListSink):
    def writeDataPoint(self, point: dict[str, Any]) -> Awaitable[None]:  # noqa: N802
        async def later() -> None:
            await asyncio.sleep(0)
            self.points.append(point)

        return later()


async def _run_deferred(recorder: MetricsRecorder, points: list[RequestPoint]) -> None:
    tasks: list[Awaitable[Any]] = []
    for p in points:
        recorder.record(p, tasks.append)
    await asyncio.gather(*tasks)


async def test_recording_is_deferred_and_a_failing_sink_is_dropped_and_counted() -> None:
    point = RequestPoint("t1", "tenant", "health", "GET", 200, 1.0)
    deferred: list[Awaitable[Any]] = []
    sink = ListSink()
    recorder = MetricsRecorder(sink)
    recorder.record(point, deferred.append)
    assert sink.points == [] and len(deferred) == 1  # nothing written on the request path
    await deferred[0]
    assert len(sink.points) == 1 and recorder.written == 1

    broken = MetricsRecorder(BrokenSink())
    await _run_deferred(broken, [point] * 3)  # never raises
    assert (broken.written, broken.dropped) == (0, 3)

    slow = AsyncSink()
    awaited = MetricsRecorder(slow)
    await _run_deferred(awaited, [point, point])
    assert len(slow.points) == 2 and awaited.written == 2

    def refusing_defer(task: Awaitable[Any]) -> None:
        task.close()  # type: ignore[attr-defined]
        raise RuntimeError("waitUntil refused")

    refused = MetricsRecorder(ListSink())
    refused.record(point, refusing_defer)
    assert refused.dropped == 1
    assert MetricsRecorder(None).enabled is False


async def test_points_are_written_in_batches_one_deferred_task_each() -> None:
    sink = ListSink()
    recorder = MetricsRecorder(sink, batch_seconds=0.001)
    deferred: list[Awaitable[Any]] = []
    for i in range(5):
        recorder.record(RequestPoint("t1", "tenant", "health", "GET", 200, float(i)), deferred.append)
    assert len(deferred) == 1 and sink.points == []  # one task for the batch, nothing on the request path
    await deferred[0]
    assert [p["doubles"][0] for p in sink.points] == [0.0, 1.0, 2.0, 3.0, 4.0] and recorder.written == 5
    recorder.record(RequestPoint("t1", "tenant", "health", "GET", 200, 5.0), deferred.append)
    assert len(deferred) == 2  # the next point starts the next batch
    await deferred[1]
    assert recorder.written == 6


async def test_a_batch_task_that_never_runs_does_not_stop_recording() -> None:
    now = [1000.0]
    sink = ListSink()
    recorder = MetricsRecorder(sink, batch_seconds=0, max_batch=3, clock=lambda: now[0])
    lost: list[Awaitable[Any]] = []
    for _ in range(5):  # the task is never awaited (its request was cancelled): the batch fills up
        recorder.record(RequestPoint("t1", "tenant", "health", "GET", 200, 1.0), lost.append)
    assert len(lost) == 1 and recorder.dropped == 2
    lost[0].close()  # type: ignore[attr-defined]
    now[0] += 60
    fresh: list[Awaitable[Any]] = []
    recorder.record(RequestPoint("t1", "tenant", "health", "GET", 200, 1.0), fresh.append)
    assert len(fresh) == 1
    await fresh[0]
    assert recorder.written == 1 and recorder.dropped == 5  # 2 over the limit, 3 lost with the task


# ---- queries ------------------------------------------------------------------------------------


def _points(tenant: str, source: str, n: int, **kw: Any) -> list[dict[str, Any]]:
    defaults: dict[str, Any] = {"route": "api", "method": "GET", "status": 200, "latency_ms": 5.0}
    defaults.update(kw)
    return [RequestPoint(tenant, source, **defaults).data_point() for _ in range(n)]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "metrics.sqlite"
    now = time.time()
    write_points(
        path,
        _points("alpha", "dispatcher", 90, latency_ms=4.0)
        + _points("alpha", "dispatcher", 8, latency_ms=180.0)
        + _points("alpha", "dispatcher", 2, status=503, latency_ms=900.0, code="tenant_worker_error")
        + _points("beta", "dispatcher", 10, latency_ms=40.0)
        + _points("alpha", "probe", 50, status=503)  # health checks: not client traffic
        + _points(
            "alpha",
            "tenant",
            3,
            route="auth.callback",
            status=302,
            feature="signin",
            provider="github",
            outcome="success",
        )
        + _points(
            "alpha",
            "tenant",
            1,
            route="auth.callback",
            status=400,
            feature="signin",
            provider="google",
            outcome="failure",
            code="state_expired",
        )
        + _points("alpha", "tenant", 4, route="ai_generate", method="POST", feature="ai", outcome="success")
        + _points(
            "alpha",
            "tenant",
            1,
            route="ai_generate",
            method="POST",
            status=429,
            feature="ai",
            outcome="failure",
            code="usage_limit_exceeded",
        )
        + _points(
            "beta", "tenant", 2, route="domain_add", method="POST", status=201, feature="domains", outcome="success"
        ),
        timestamp=now - 60,
    )
    write_points(path, _points("alpha", "dispatcher", 1000, status=500), timestamp=now - 3 * 86400)  # outside 24h
    return path


def _check_summary(summary: dict[str, Any]) -> None:
    alpha, beta = summary["alpha"], summary["beta"]
    assert alpha.requests == 100 and alpha.errors_5xx == 2 and alpha.error_rate == 0.02
    assert alpha.p50_ms == 5 and alpha.p95_ms == 200  # bucket upper bounds: 4 ms -> 5, 180 ms -> 200
    assert alpha.status_classes == {"2xx": 98, "5xx": 2}
    assert alpha.signins == {"github": {"success": 3}, "google": {"failure": 1}}
    assert alpha.auth_success_rate == 0.75
    assert alpha.features == {"ai": {"success": 4, "failure": 1}}
    codes = {(e["source"], e["code"]): e["count"] for e in alpha.errors}
    assert codes == {
        ("dispatcher", "tenant_worker_error"): 2,
        ("tenant", "state_expired"): 1,
        ("tenant", "usage_limit_exceeded"): 1,
    }
    assert beta.requests == 10 and beta.error_rate == 0.0 and beta.p95_ms == 50
    assert beta.features == {"domains": {"success": 2}} and beta.auth_success_rate is None


async def test_summary_over_the_local_store(store: Path) -> None:
    q = MetricsQueries(SqliteMetricsSource(store))
    _check_summary(await q.summary(window="24h", now=time.time()))
    only = await q.summary(window="24h", now=time.time(), tenant_ids=["beta", "gamma"])
    assert set(only) == {"beta", "gamma"} and only["gamma"].requests == 0 and only["gamma"].p50_ms is None
    week = await q.summary(window="7d", now=time.time(), tenant_ids=["alpha"])
    assert week["alpha"].requests == 1100


async def test_series_has_every_step(store: Path) -> None:
    q = MetricsQueries(SqliteMetricsSource(store))
    series = await q.series(window="24h", now=time.time(), tenant_id="alpha")
    assert len(series) in (24, 25) and sum(p["requests"] for p in series) == 100
    assert sum(p["errors"] for p in series) == 2


def test_tenant_ids_never_reach_sql_unchecked() -> None:
    q = MetricsQueries(SqliteMetricsSource(Path("/nonexistent")))
    for bad in ("a' OR '1'='1", "A", "-x", "x" * 64, "a;drop"):
        with pytest.raises(ValueError):
            q.summary_sql("24h", 0, [bad])
    with pytest.raises(ValueError):
        q.summary_sql("forever", 0)
    assert "AND 0 = 1" in q.summary_sql("24h", 0, [])["requests"]


def test_percentile_from_buckets() -> None:
    assert percentile({}, 0.5) is None
    assert percentile({1: 50, 10: 50}, 0.5) == 1 and percentile({1: 50, 10: 50}, 0.51) == 10
    assert set(LATENCY_BUCKETS_MS) >= {1, 5, 200, 120000}


def test_sql_api_answers_are_parsed_with_integers_as_numbers() -> None:
    body = (
        b'{"meta":[{"name":"n","type":"UInt64"},{"name":"b","type":"Float64"},{"name":"s","type":"String"}],'
        b'"data":[{"n":"12","b":2.5,"s":"12"}],"rows":1,"rows_before_limit_at_least":1}'
    )
    assert parse_sql_api_answer(body) == [{"n": 12, "b": 2.5, "s": "12"}]
    for bad in (b"nope", b'{"data": 3}', b'{"meta": [], "data": [1]}'):
        with pytest.raises(MetricsUnavailable):
            parse_sql_api_answer(bad)


async def test_the_remote_path_speaks_the_sql_api_and_agrees_with_the_local_store(store: Path) -> None:
    fake = FakeAnalytics(store, account_id="acct123", token="secret-token")
    with LiveServer(fake) as server:
        http = HttpxClient()
        try:
            url = sql_api_url("acct123", base=f"{server.url}/client/v4")
            q = MetricsQueries(SqlApiSource(http, url, "secret-token"))
            _check_summary(await q.summary(window="24h", now=time.time()))
            assert len(fake.queries) == 3  # one per aspect, whatever the number of tenants
            assert all("FROM cmgsite_metrics" in sql for sql in fake.queries)
            with pytest.raises(MetricsUnavailable, match="answered 403: .*9109.*Invalid access token"):
                await MetricsQueries(SqlApiSource(http, url, "wrong")).summary(window="1h", now=time.time())
            fake.fail_with = 500
            with pytest.raises(MetricsUnavailable, match="500"):
                await q.summary(window="1h", now=time.time())
            with pytest.raises(MetricsUnavailable, match="unreachable"):
                await MetricsQueries(SqlApiSource(http, "http://127.0.0.1:9/sql", "t")).summary(
                    window="1h", now=time.time()
                )
        finally:
            await http.aclose()

"""Queries over the per-tenant metrics: the one module both dashboards (and the CLI) read.

    q = MetricsQueries(source)
    per_tenant = await q.summary(window="24h", now=time.time())              # every tenant
    one = (await q.summary(window="24h", now=now, tenant_ids=["partner1"]))["partner1"]
    one.requests, one.p50_ms, one.p95_ms, one.error_rate, one.auth_success_rate, one.features, one.errors

A summary is three queries whatever the number of tenants (grouped by `index1`): requests by
status class and latency bucket, feature and sign-in events, errors by code. Percentiles are
read from the latency buckets (shared.metrics.LATENCY_BUCKETS_MS: the bucket's upper bound,
so at most one bucket high), which keeps the SQL inside what both stores speak and weighs every
row by `_sample_interval` (Analytics Engine samples at high volume).

Sources:
- `SqlApiSource`: Cloudflare's Analytics Engine SQL API (`POST …/accounts/<id>/analytics_engine/sql`,
  bearer token, SQL as the body, `FORMAT JSON` answers `{"meta", "data", "rows"}` with 64-bit
  integers as strings). The local platform serves the same API over its store, so a Worker
  reads metrics the same way in both places.
- `localrt.metrics_store.SqliteMetricsSource`: the local store's SQLite file, for the CLI and tests.

The SQL uses only what both speak: SUM/MAX, GROUP BY, `IN`, `toDateTime(<unix seconds>)`,
`toUInt32(timestamp)`, `intDiv`. Tenant ids are checked against the tenant-id pattern before
they are put into SQL text (the SQL API takes no bind parameters).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Protocol

from shared.ids import TENANT_ID_RE
from shared.metrics import DATASET, LATENCY_BUCKETS_MS, SOURCE_DISPATCHER, SOURCE_TENANT
from shared.outbound_http import HttpClient, HttpError

WINDOWS: dict[str, int] = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
SERIES_STEPS: dict[str, int] = {"1h": 300, "24h": 3600, "7d": 6 * 3600, "30d": 86400}
API_BASE = "https://api.cloudflare.com/client/v4"
_TENANT_ID = TENANT_ID_RE  # shared.ids
_DATASET = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_NUMERIC_TYPE = re.compile(r"(U?Int|Float)[0-9]+")


class MetricsUnavailable(Exception):
    """The metrics store did not answer (or answered with an error)."""


class MetricsSource(Protocol):
    async def query(self, sql: str) -> list[dict[str, Any]]:
        """Rows of one SELECT, as dicts with numbers as numbers."""
        ...


def sql_api_url(account_id: str, base: str = API_BASE) -> str:
    return f"{base.rstrip('/')}/accounts/{account_id}/analytics_engine/sql"


def _number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value
    return value


def parse_sql_api_answer(body: bytes) -> list[dict[str, Any]]:
    """The rows of an Analytics Engine SQL API answer (FORMAT JSON). Integer columns arrive as
    strings (ClickHouse quotes 64-bit integers); they come back as numbers."""
    try:
        doc = json.loads(body.decode("utf-8"))
        meta = {m["name"]: str(m.get("type", "")) for m in doc.get("meta", [])}
        rows = doc["data"]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        raise MetricsUnavailable("unreadable answer from the analytics SQL API") from None
    if not isinstance(rows, list):
        raise MetricsUnavailable("unreadable answer from the analytics SQL API")
    out = []
    for row in rows:
        if not isinstance(row, dict):
            raise MetricsUnavailable("unreadable answer from the analytics SQL API")
        out.append(
            {
                k: _number(v) if isinstance(v, str) and _NUMERIC_TYPE.search(meta.get(k, "")) else v
                for k, v in row.items()
            }
        )
    return out


class SqlApiSource:
    """The Analytics Engine SQL API over shared.outbound_http.HttpClient (the Worker's fetch, or httpx)."""

    def __init__(self, http: HttpClient, url: str, token: str, *, timeout: float = 10.0) -> None:
        self._http, self._url, self._token, self._timeout = http, url, token, timeout

    async def query(self, sql: str) -> list[dict[str, Any]]:
        try:
            resp = await self._http.request(
                "POST",
                self._url,
                body=sql.encode("utf-8"),
                timeout=self._timeout,
                headers={"authorization": f"Bearer {self._token}", "content-type": "text/plain; charset=utf-8"},
            )
        except HttpError as exc:
            raise MetricsUnavailable(f"analytics SQL API unreachable: {exc}") from None
        if resp.status != 200:
            raise MetricsUnavailable(
                f"analytics SQL API answered {resp.status}: {resp.body[:160].decode('utf-8', 'replace')}"
            )
        return parse_sql_api_answer(resp.body)


# ---- results -----------------------------------------------------------------------------------


def percentile(buckets: Mapping[float, float], q: float) -> float | None:
    """The upper bound of the bucket holding the q-quantile of a latency histogram."""
    total = sum(buckets.values())
    if total <= 0:
        return None
    need, seen = q * total, 0.0
    for bound in sorted(buckets):
        seen += buckets[bound]
        if seen >= need - 1e-9:
            return float(bound)
    return float(max(buckets))


@dataclass
class TenantMetrics:
    tenant_id: str
    requests: int = 0
    errors_5xx: int = 0
    status_classes: dict[str, int] = field(default_factory=dict)
    latency_buckets: dict[float, float] = field(default_factory=dict)
    signins: dict[str, dict[str, int]] = field(default_factory=dict)  # provider -> outcome -> n
    features: dict[str, dict[str, int]] = field(default_factory=dict)  # feature -> outcome -> n
    errors: list[dict[str, Any]] = field(default_factory=list)  # [{source, code, count, last_seen}]

    @property
    def error_rate(self) -> float | None:
        return round(self.errors_5xx / self.requests, 4) if self.requests else None

    @property
    def p50_ms(self) -> float | None:
        return percentile(self.latency_buckets, 0.50)

    @property
    def p95_ms(self) -> float | None:
        return percentile(self.latency_buckets, 0.95)

    @property
    def auth_success_rate(self) -> float | None:
        ok = sum(v.get("success", 0) for v in self.signins.values())
        total = sum(sum(v.values()) for v in self.signins.values())
        return round(ok / total, 4) if total else None

    def view(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "requests": self.requests,
            "errors_5xx": self.errors_5xx,
            "error_rate": self.error_rate,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "status_classes": dict(sorted(self.status_classes.items())),
            "auth_success_rate": self.auth_success_rate,
            "signins": self.signins,
            "features": {k: {**v, "total": sum(v.values())} for k, v in sorted(self.features.items())},
            "errors": self.errors,
        }


# ---- queries -----------------------------------------------------------------------------------


def window_bounds(window: str, now: float) -> tuple[int, int]:
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}")
    end = int(now) + 1
    return end - WINDOWS[window], end


def _tenant_filter(tenant_ids: Iterable[str] | None) -> str:
    if tenant_ids is None:
        return ""
    ids = sorted(set(tenant_ids))
    for t in ids:
        if not _TENANT_ID.match(t):
            raise ValueError("invalid tenant id")
    if not ids:
        return " AND 0 = 1"
    return " AND index1 IN (" + ", ".join(f"'{t}'" for t in ids) + ")"


class MetricsQueries:
    def __init__(self, source: MetricsSource, dataset: str = DATASET) -> None:
        if not _DATASET.match(dataset):
            raise ValueError("invalid dataset name")
        self._source, self._dataset = source, dataset

    def _where(self, window: str, now: float, tenant_ids: Iterable[str] | None) -> str:
        start, end = window_bounds(window, now)
        return f"timestamp >= toDateTime({start}) AND timestamp < toDateTime({end}){_tenant_filter(tenant_ids)}"

    def summary_sql(self, window: str, now: float, tenant_ids: Iterable[str] | None = None) -> dict[str, str]:
        where = self._where(window, now, tenant_ids)
        ds = self._dataset
        return {
            # What clients got from the edge: the dispatcher's points (health probes excluded).
            "requests": (
                f"SELECT index1 AS tenant_id, blob4 AS status_class, double3 AS bucket,"
                f" SUM(_sample_interval) AS n FROM {ds} WHERE {where} AND blob1 = '{SOURCE_DISPATCHER}'"
                " GROUP BY tenant_id, status_class, bucket"
            ),
            "features": (
                f"SELECT index1 AS tenant_id, blob6 AS feature, blob7 AS provider, blob8 AS outcome,"
                f" SUM(_sample_interval) AS n FROM {ds} WHERE {where} AND blob1 = '{SOURCE_TENANT}'"
                " AND blob6 != '' GROUP BY tenant_id, feature, provider, outcome"
            ),
            "errors": (
                f"SELECT index1 AS tenant_id, blob1 AS source, blob5 AS code, SUM(_sample_interval) AS n,"
                f" MAX(toUInt32(timestamp)) AS last_seen FROM {ds} WHERE {where}"
                f" AND blob5 != '' AND blob1 != 'probe' GROUP BY tenant_id, source, code"
                " ORDER BY n DESC LIMIT 2000"
            ),
        }

    async def summary(
        self, *, window: str, now: float, tenant_ids: Iterable[str] | None = None
    ) -> dict[str, TenantMetrics]:
        """Per tenant over the window: requests, 5xx error rate, p50/p95, sign-ins, features, errors.
        Tenants with no data in the window are absent unless named in `tenant_ids`."""
        ids = None if tenant_ids is None else list(tenant_ids)
        sql = self.summary_sql(window, now, ids)
        out: dict[str, TenantMetrics] = {t: TenantMetrics(t) for t in ids or []}

        def of(tenant: Any) -> TenantMetrics:
            key = str(tenant)
            if key not in out:
                out[key] = TenantMetrics(key)
            return out[key]

        for row in await self._source.query(sql["requests"]):
            m, n = of(row["tenant_id"]), int(row["n"])
            m.requests += n
            cls = str(row["status_class"])
            m.status_classes[cls] = m.status_classes.get(cls, 0) + n
            if cls == "5xx":
                m.errors_5xx += n
            bucket = float(row["bucket"])
            m.latency_buckets[bucket] = m.latency_buckets.get(bucket, 0) + n
        for row in await self._source.query(sql["features"]):
            m, n = of(row["tenant_id"]), int(row["n"])
            feature, outcome = str(row["feature"]), str(row["outcome"]) or "unknown"
            if feature == "signin":
                by = m.signins.setdefault(str(row["provider"]) or "unknown", {})
            else:
                by = m.features.setdefault(feature, {})
            by[outcome] = by.get(outcome, 0) + n
        for row in await self._source.query(sql["errors"]):
            of(row["tenant_id"]).errors.append(
                {
                    "source": row["source"],
                    "code": row["code"],
                    "count": int(row["n"]),
                    "last_seen": int(row["last_seen"]),
                }
            )
        return out

    def series_sql(self, window: str, now: float, tenant_id: str) -> str:
        step = SERIES_STEPS[window] if window in SERIES_STEPS else 3600
        where = self._where(window, now, [tenant_id])
        return (
            f"SELECT intDiv(toUInt32(timestamp), {step}) * {step} AS t, blob4 AS status_class,"
            f" SUM(_sample_interval) AS n FROM {self._dataset} WHERE {where} AND blob1 = '{SOURCE_DISPATCHER}'"
            " GROUP BY t, status_class ORDER BY t"
        )

    async def series(self, *, window: str, now: float, tenant_id: str) -> list[dict[str, int]]:
        """Requests and 5xx errors per step (5 min for 1h, an hour for 24h ...), every step present."""
        step = SERIES_STEPS[window]
        start, end = window_bounds(window, now)
        points: dict[int, dict[str, int]] = {}
        for t in range(start // step * step, end, step):
            points[t] = {"t": t, "requests": 0, "errors": 0}
        for row in await self._source.query(self.series_sql(window, now, tenant_id)):
            t, n = int(row["t"]), int(row["n"])
            p = points.setdefault(t, {"t": t, "requests": 0, "errors": 0})
            p["requests"] += n
            if row["status_class"] == "5xx":
                p["errors"] += n
        return [points[t] for t in sorted(points)]


__all__ = [
    "LATENCY_BUCKETS_MS",
    "MetricsQueries",
    "MetricsSource",
    "MetricsUnavailable",
    "SqlApiSource",
    "TenantMetrics",
    "WINDOWS",
    "parse_sql_api_answer",
    "percentile",
    "sql_api_url",
    "window_bounds",
]

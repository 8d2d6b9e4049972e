"""The local platform's metrics store: what Analytics Engine keeps on Cloudflare.

The platform host (localrt/node/metrics-store.mjs) appends every `writeDataPoint` of the
`METRICS` binding to a SQLite file, `<state>/metrics.sqlite`, one table per dataset with
Analytics Engine's columns (`timestamp`, `index1`, `blob1..20`, `double1..20`,
`_sample_interval`), and answers the Analytics Engine SQL API over it for the Workers. This
module reads the same file from CPython (the CLI, tests) and gives SQLite the few ClickHouse
functions the shared queries use, so the SQL in shared.metrics_query runs unchanged on both:

    source = SqliteMetricsSource(state_dir / "metrics.sqlite")
    rows = await source.query("SELECT index1, SUM(_sample_interval) AS n FROM cmgsite_metrics GROUP BY index1")

`timestamp` is stored as Unix seconds; `toDateTime(n)` is the identity on it, `toUInt32` an
integer cast and `intDiv` integer division, as in ClickHouse for these arguments.
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import Any, Sequence

from shared.metrics import DATASET

STORE_FILE = "metrics.sqlite"
_DATASET = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
COLUMNS = (
    ["timestamp", "index1"]
    + [f"blob{i}" for i in range(1, 21)]
    + [f"double{i}" for i in range(1, 21)]
    + ["_sample_interval"]
)


def create_table_sql(dataset: str = DATASET) -> str:
    if not _DATASET.match(dataset):
        raise ValueError("invalid dataset name")
    blobs = ", ".join(f"blob{i} TEXT NOT NULL DEFAULT ''" for i in range(1, 21))
    doubles = ", ".join(f"double{i} REAL NOT NULL DEFAULT 0" for i in range(1, 21))
    return (
        f"CREATE TABLE IF NOT EXISTS {dataset} (timestamp REAL NOT NULL, index1 TEXT NOT NULL DEFAULT '',"
        f" {blobs}, {doubles}, _sample_interval INTEGER NOT NULL DEFAULT 1)"
    )


def _register(conn: sqlite3.Connection) -> None:
    conn.create_function("toDateTime", 1, lambda x: x, deterministic=True)
    conn.create_function("toUInt32", 1, lambda x: None if x is None else int(x), deterministic=True)
    conn.create_function("intDiv", 2, lambda a, b: None if a is None or not b else int(a) // int(b), deterministic=True)


def connect(path: Path, *, read_only: bool = True) -> sqlite3.Connection:
    if read_only:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    else:
        conn = sqlite3.connect(path, timeout=10)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(create_table_sql())
    conn.row_factory = sqlite3.Row
    _register(conn)
    return conn


class SqliteMetricsSource:
    """shared.metrics_query.MetricsSource over the local store's file (read only)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    async def query(self, sql: str) -> list[dict[str, Any]]:
        if not self.path.exists():  # nothing recorded yet: an empty dataset
            conn = sqlite3.connect(":memory:")
            conn.row_factory = sqlite3.Row
            _register(conn)
            conn.execute(create_table_sql())
        else:
            conn = connect(self.path)
        try:
            return [dict(r) for r in conn.execute(sql).fetchall()]
        finally:
            conn.close()


def write_points(
    path: Path, points: Sequence[dict[str, list[Any]]], *, timestamp: float | None = None, dataset: str = DATASET
) -> None:
    """Append data points as the host does (tests use it to place points in the past)."""
    conn = connect(path, read_only=False)
    try:
        with conn:
            for p in points:
                blobs = list(p.get("blobs", []))[:20]
                doubles = list(p.get("doubles", []))[:20]
                indexes = list(p.get("indexes", []))[:1]
                row = (
                    [time.time() if timestamp is None else timestamp, indexes[0] if indexes else ""]
                    + [("" if b is None else str(b)) for b in blobs]
                    + [""] * (20 - len(blobs))
                    + [float(d) for d in doubles]
                    + [0.0] * (20 - len(doubles))
                    + [1]
                )
                conn.execute(
                    f"INSERT INTO {dataset} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", row
                )
    finally:
        conn.close()

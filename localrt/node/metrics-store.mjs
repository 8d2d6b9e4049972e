// The local platform's Analytics Engine: where the METRICS binding's writeDataPoint lands, and
// the SQL API the Workers (and anyone holding the host's metrics token) query it with.
//
// - writeBatch(dataset, points, times): a row per point (the METRICS binding sends its buffer in
//   batches: metrics-plugin.mjs) in <state>/metrics.sqlite, table <dataset>, with Analytics
//   Engine's columns (timestamp as Unix seconds, index1, blob1..20, double1..20,
//   _sample_interval = 1: nothing is sampled locally). Points are checked as Cloudflare checks
//   them (≤ 1 index of ≤ 96 bytes, ≤ 20 blobs, ≤ 20 doubles, blobs ≤ 16 KB in all).
// - query(sql): a read-only SELECT on the same file, answered as the SQL API answers FORMAT JSON:
//   {"meta": [{name, type}], "data": [...], "rows": n, "rows_before_limit_at_least": n}, integers
//   as strings (ClickHouse quotes 64-bit integers). SQLite gets the ClickHouse functions the
//   shared queries use (toDateTime, toUInt32, intDiv); localrt/metrics_store.py does the same in
//   Python for the CLI.
import { DatabaseSync } from "node:sqlite";

const DATASET = /^[a-z_][a-z0-9_]{0,62}$/;
const COLUMNS = ["timestamp", "index1", ...Array.from({ length: 20 }, (_, i) => `blob${i + 1}`),
  ...Array.from({ length: 20 }, (_, i) => `double${i + 1}`), "_sample_interval"];

function tableSql(dataset) {
  const blobs = Array.from({ length: 20 }, (_, i) => `blob${i + 1} TEXT NOT NULL DEFAULT ''`).join(", ");
  const doubles = Array.from({ length: 20 }, (_, i) => `double${i + 1} REAL NOT NULL DEFAULT 0`).join(", ");
  return `CREATE TABLE IF NOT EXISTS ${dataset} (timestamp REAL NOT NULL, index1 TEXT NOT NULL DEFAULT '',`
    + ` ${blobs}, ${doubles}, _sample_interval INTEGER NOT NULL DEFAULT 1)`;
}

export class PointError extends Error {}

export function checkPoint(point) {
  const p = point ?? {};
  const indexes = p.indexes ?? [];
  const blobs = p.blobs ?? [];
  const doubles = p.doubles ?? [];
  if (!Array.isArray(indexes) || !Array.isArray(blobs) || !Array.isArray(doubles)) throw new PointError("indexes, blobs and doubles must be arrays");
  if (indexes.length > 1) throw new PointError("at most one index");
  if (indexes.length && Buffer.byteLength(String(indexes[0] ?? "")) > 96) throw new PointError("index over 96 bytes");
  if (blobs.length > 20 || doubles.length > 20) throw new PointError("at most 20 blobs and 20 doubles");
  if (blobs.reduce((n, b) => n + Buffer.byteLength(String(b ?? "")), 0) > 16 * 1024) throw new PointError("blobs over 16 KB");
  if (!doubles.every((d) => typeof d === "number" && Number.isFinite(d))) throw new PointError("doubles must be finite numbers");
  return { index: indexes.length ? String(indexes[0] ?? "") : "", blobs: blobs.map((b) => (b == null ? "" : String(b))), doubles };
}

export class MetricsStore {
  constructor(file, datasets) {
    this.file = file;
    this.writer = new DatabaseSync(file);
    this.writer.exec("PRAGMA journal_mode=WAL");
    this.inserts = new Map();
    for (const d of datasets) this.dataset(d);
    this.reader = new DatabaseSync(file, { readOnly: true });
    this.reader.function("toDateTime", { deterministic: true }, (x) => x);
    this.reader.function("toUInt32", { deterministic: true }, (x) => (x == null ? null : Math.trunc(Number(x))));
    this.reader.function("intDiv", { deterministic: true }, (a, b) => (a == null || !b ? null : Math.trunc(Number(a) / Number(b))));
  }

  dataset(name) {
    if (!DATASET.test(name)) throw new PointError("invalid dataset name");
    if (!this.inserts.has(name)) {
      this.writer.exec(tableSql(name));
      this.inserts.set(name, this.writer.prepare(
        `INSERT INTO ${name} (${COLUMNS.join(", ")}) VALUES (${COLUMNS.map(() => "?").join(", ")})`));
    }
    return this.inserts.get(name);
  }

  // A batch in one transaction; a point Cloudflare would refuse is skipped. Returns the reasons.
  // `times` (Unix ms, when each point was written; within the last minute) default to now.
  writeBatch(dataset, points, times = []) {
    const insert = this.dataset(dataset);
    const rejected = [];
    const now = Date.now() / 1000;
    this.writer.exec("BEGIN");
    try {
      for (const [i, point] of points.entries()) {
        let checked;
        try {
          checked = checkPoint(point);
        } catch (err) {
          if (!(err instanceof PointError)) throw err;
          rejected.push(err.message);
          continue;
        }
        const { index, blobs, doubles } = checked;
        const t = Number(times[i]);
        insert.run(Number.isFinite(t) && Math.abs(t / 1000 - now) < 60 ? t / 1000 : now, index, ...blobs, ...Array(20 - blobs.length).fill(""),
                   ...doubles, ...Array(20 - doubles.length).fill(0), 1);
      }
      this.writer.exec("COMMIT");
    } catch (err) {
      this.writer.exec("ROLLBACK");
      throw err;
    }
    return rejected;
  }

  // The SQL API: one read-only SELECT, FORMAT JSON.
  query(text) {
    let sql = String(text).trim().replace(/;\s*$/, "");
    const format = /\s+FORMAT\s+([A-Za-z]+)\s*$/i.exec(sql);
    if (format) {
      if (format[1].toUpperCase() !== "JSON") return { status: 400, body: "only FORMAT JSON is served locally" };
      sql = sql.slice(0, format.index);
    }
    if (!/^(SELECT|WITH)\b/i.test(sql) || sql.includes(";")) return { status: 400, body: "one SELECT statement only" };
    let rows;
    try {
      rows = this.reader.prepare(sql).all();
    } catch (err) {
      return { status: 422, body: String(err.message ?? err).slice(0, 300) };
    }
    const names = rows.length ? Object.keys(rows[0]) : [];
    const types = Object.fromEntries(names.map((n) => [n, "String"]));
    for (const r of rows) {
      for (const n of names) {
        const v = r[n];
        if (typeof v === "bigint" || (typeof v === "number" && Number.isInteger(v))) { if (types[n] === "String") types[n] = "UInt64"; }
        else if (typeof v === "number") types[n] = "Float64";
      }
    }
    const data = rows.map((r) => Object.fromEntries(names.map((n) => {
      const v = r[n];
      if (types[n] === "UInt64") return [n, String(v)];
      return [n, typeof v === "bigint" ? Number(v) : v];
    })));
    return { status: 200, json: { meta: names.map((n) => ({ name: n, type: types[n] })), data, rows: data.length,
                                  rows_before_limit_at_least: data.length } };
  }
}

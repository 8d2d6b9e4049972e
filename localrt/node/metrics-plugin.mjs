// Miniflare external plugin: the local Workers Analytics Engine binding (`METRICS`).
// Miniflare's own analytics-engine binding only forwards to Cloudflare (locally it drops every
// point), so this one sends the points to the platform host's store (metrics-store.mjs, a
// SQLite file under the state directory) over a loopback service.
//
// As on Cloudflare, writeDataPoint is cheap and fire-and-forget: it checks the point's shape,
// keeps it (as JSON) in a buffer of the isolate and returns. The buffer goes to the store in one
// POST per batch: the first point of an empty buffer starts a flush `flushMs` later (or at once
// when `maxBatch` points are waiting), and only that call returns the flush's promise (the
// Python side awaits it inside the request's ctx.waitUntil, which keeps the flush alive); the
// other calls return nothing. A failing store rejects that promise (the whole batch is
// dropped, as a failing sink must: shared.metrics counts it). Named as the runtime's own class:
// the Python SDK wraps env bindings by constructor name.
const TYPE = "unsafe:cmgsite-metrics";
const MODULE = "cmgsite:local-analytics-engine";

const WRAPPED_SOURCE = `
let buffer = [];        // JSON texts of the points not yet sent (per isolate)
let times = [];         // when each was written (Unix ms): the rows' timestamps
let pending = null;     // the flush that will carry them

function check(p) {
  const indexes = p.indexes ?? [], blobs = p.blobs ?? [], doubles = p.doubles ?? [];
  if (!Array.isArray(indexes) || !Array.isArray(blobs) || !Array.isArray(doubles))
    throw new TypeError("writeDataPoint: indexes, blobs and doubles must be arrays");
  if (indexes.length > 1) throw new TypeError("writeDataPoint: at most one index");
  if (blobs.length > 20 || doubles.length > 20) throw new TypeError("writeDataPoint: at most 20 blobs and 20 doubles");
}

async function flush(env, wait) {
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  const batch = buffer, at = times;
  buffer = [];
  times = [];
  pending = null;
  if (batch.length === 0) return;
  const body = '{"dataset":' + JSON.stringify(env.dataset) + ',"script":' + JSON.stringify(env.script)
    + ',"points":[' + batch.join(",") + "]}";
  const res = await env.store.fetch("http://metrics/metrics/write", { method: "POST", body,
                                    headers: { "content-type": "application/json" } });
  const text = await res.text();
  if (res.status !== 204) {
    throw new Error("analytics engine write failed (" + batch.length + " points): " + res.status + " " + text.slice(0, 120));
  }
}

class AnalyticsEngineDataset {
  constructor(env) { this.env = env; }
  writeDataPoint(point) {
    const p = point ?? {};
    check(p);
    buffer.push(JSON.stringify(p));
    times.push(Date.now());
    if (buffer.length >= this.env.maxBatch) {
      const full = flush(this.env, 0);
      return full;
    }
    if (pending) return undefined;  // a flush already scheduled carries this point too
    pending = flush(this.env, this.env.flushMs);
    return pending;
  }
}
export default function (env) { return new AnalyticsEngineDataset(env); }
`;

function metricsBindings(config) {
  return Object.entries(config.env ?? {}).filter(([, b]) => b && b.type === TYPE);
}

export const plugins = {
  "cmgsite-metrics": {
    bindingTypeDescription: "Analytics Engine dataset (local store)",
    getBindings(options) {
      return metricsBindings(options.config).map(([name, binding]) => ({
        name,
        wrapped: {
          moduleName: MODULE,
          innerBindings: [
            { name: "store", service: { name: "cmgsite-metrics-store" } },
            { name: "dataset", json: JSON.stringify(binding.dev.options.dataset) },
            { name: "script", json: JSON.stringify(binding.dev.options.script ?? "") },
            { name: "flushMs", json: JSON.stringify(binding.dev.options.flushMs ?? 100) },
            { name: "maxBatch", json: JSON.stringify(binding.dev.options.maxBatch ?? 500) },
          ],
        },
      }));
    },
    getNodeBindings() {
      return {};
    },
    async getServices({ options }) {
      const found = metricsBindings(options.config);
      if (found.length === 0) return [];
      return [{ name: "cmgsite-metrics-store", external: { address: found[0][1].dev.options.directory, http: {} } }];
    },
    getExtensions({ options }) {
      if (!options.some((o) => metricsBindings(o.config).length > 0)) return [];
      return [{ modules: [{ name: MODULE, esModule: WRAPPED_SOURCE, internal: true }] }];
    },
  },
};

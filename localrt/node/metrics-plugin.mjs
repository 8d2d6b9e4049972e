// Miniflare external plugin: the local Workers Analytics Engine binding (`METRICS`).
// Miniflare's own analytics-engine binding only forwards to Cloudflare (locally it drops every
// point), so this one sends each `writeDataPoint(...)` to the platform host's store
// (metrics-store.mjs, a SQLite file under the state directory) over a loopback service.
//
// On Cloudflare writeDataPoint returns nothing and writes in the background; here it returns
// the write's promise, which the Python side awaits inside ctx.waitUntil (shared.metrics), so a
// failing store shows up as a dropped point, as a failing sink must. Named as the runtime's own
// class: the Python SDK wraps env bindings by constructor name.
const TYPE = "unsafe:cmgsite-metrics";
const MODULE = "cmgsite:local-analytics-engine";

const WRAPPED_SOURCE = `
class AnalyticsEngineDataset {
  constructor(env) { this.env = env; }
  writeDataPoint(point) {
    const body = JSON.stringify({ dataset: this.env.dataset, script: this.env.script, point: point ?? {} });
    return this.env.store.fetch("http://metrics/metrics/write", { method: "POST", body,
                                headers: { "content-type": "application/json" } })
      .then(async (res) => {
        const text = await res.text();
        if (res.status !== 204) throw new Error("analytics engine write failed: " + res.status + " " + text.slice(0, 120));
      });
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

// Miniflare external plugin, TEST ONLY (host.mjs adds it when config.testFaults): the
// dispatcher's D1 `DB` and KV `TENANT_CACHE` as wrappers around the real local bindings.
// Before each call the wrapper asks the host's directory whether the test switched a fault
// on for that binding (POST /faults {binding, fault: "throw"|null}); if so, the call rejects
// the way the runtime reports a storage outage, otherwise it goes to the real binding
// unchanged. The real bindings are the worker's own d1/kv bindings under `__REAL_<NAME>`.
import { D1_PLUGIN, KV_PLUGIN } from "miniflare";

const TYPE = "unsafe:cmgsite-binding-faults";
const MODULE = "cmgsite:binding-faults";

const WRAPPED_SOURCE = `
const MESSAGES = {
  d1: "D1_ERROR: Network connection lost.",
  kv: "KV GET failed: 500 Internal Server Error",
};

// Named as the runtime's own classes: the Python SDK wraps env bindings by constructor name.
class KvNamespace {
  constructor(inner, check) { this.inner = inner; this.check = check; }
  async get(...args) { await this.check(); return this.inner.get(...args); }
  async getWithMetadata(...args) { await this.check(); return this.inner.getWithMetadata(...args); }
  async put(...args) { await this.check(); return this.inner.put(...args); }
  async delete(...args) { await this.check(); return this.inner.delete(...args); }
  async list(...args) { await this.check(); return this.inner.list(...args); }
}

class D1PreparedStatement {
  constructor(real, check) { this.real = real; this.check = check; }
  bind(...args) { return new D1PreparedStatement(this.real.bind(...args), this.check); }
  async first(...args) { await this.check(); return this.real.first(...args); }
  async all(...args) { await this.check(); return this.real.all(...args); }
  async run(...args) { await this.check(); return this.real.run(...args); }
  async raw(...args) { await this.check(); return this.real.raw(...args); }
}

class D1Database {
  constructor(inner, check) { this.inner = inner; this.check = check; }
  prepare(sql) { return new D1PreparedStatement(this.inner.prepare(sql), this.check); }
  async batch(statements) { await this.check(); return this.inner.batch(statements.map((s) => s.real ?? s)); }
  async exec(sql) { await this.check(); return this.inner.exec(sql); }
}

export default function (env) {
  const { inner, directory, binding, kind } = env;
  async function check() {
    const res = await directory.fetch("http://directory/binding-faults/" + encodeURIComponent(binding));
    const { fault } = await res.json();
    if (fault === "throw") throw new Error(MESSAGES[kind]);
  }
  return kind === "kv" ? new KvNamespace(inner, check) : new D1Database(inner, check);
}
`;

function faultBindings(config) {
  return Object.entries(config.env ?? {}).filter(([, b]) => b && b.type === TYPE);
}

export const plugins = {
  "cmgsite-binding-faults": {
    bindingTypeDescription: "Test-only faulting wrapper of a D1/KV binding",
    async getBindings(options, sharedOptions) {
      const out = [];
      for (const [name, binding] of faultBindings(options.config)) {
        const { kind, id } = binding.dev.options;
        const plugin = kind === "d1" ? D1_PLUGIN : KV_PLUGIN;
        const realConfig = { ...options.config, env: { inner: { type: kind, id } } };
        const [real] = await plugin.getBindings({ ...options, config: realConfig }, sharedOptions);
        out.push({
          name,
          wrapped: {
            moduleName: MODULE,
            innerBindings: [
              { ...real, name: "inner" },
              { name: "directory", service: { name: "cmgsite-faults-directory" } },
              { name: "binding", json: JSON.stringify(name) },
              { name: "kind", json: JSON.stringify(kind) },
            ],
          },
        });
      }
      return out;
    },
    getNodeBindings() {
      return {};
    },
    async getServices({ options }) {
      const found = faultBindings(options.config);
      if (found.length === 0) return [];
      return [{ name: "cmgsite-faults-directory", external: { address: found[0][1].dev.options.directory, http: {} } }];
    },
    getExtensions({ options }) {
      if (!options.some((o) => faultBindings(o.config).length > 0)) return [];
      return [{ modules: [{ name: MODULE, esModule: WRAPPED_SOURCE, internal: true }] }];
    },
  },
};

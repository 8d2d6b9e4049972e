// Miniflare external plugin, TEST ONLY (host.mjs adds it when config.testFaults): a tenant
// Worker's USAGE binding as a counting wrapper around the real UsageMeter namespace (which
// the Worker still declares, bound as __REAL_USAGE). Every method call on a stub is one
// Durable Object subrequest: the wrapper tells the host's ledger (its loopback directory,
// GET /ledger/<script>/do), then makes the real call unchanged.
const TYPE = "unsafe:cmgsite-usage-ledger";
const MODULE = "cmgsite:usage-ledger";

const WRAPPED_SOURCE = `
// Named as the runtime's own class: the Python SDK wraps env bindings by constructor name.
class DurableObjectNamespace {
  constructor(inner, tell) { this.inner = inner; this.tell = tell; }
  idFromName(name) { return this.inner.idFromName(name); }
  idFromString(id) { return this.inner.idFromString(id); }
  newUniqueId(options) { return this.inner.newUniqueId(options); }
  get(id, options) { return this.counted(this.inner.get(id, options)); }
  getByName(name, options) { return this.counted(this.inner.getByName(name, options)); }
  counted(stub) {
    const tell = this.tell;
    return new Proxy(stub, {
      get(target, prop) {
        const real = target[prop];
        if (typeof prop !== "string" || prop === "then" || typeof real !== "function") return real;
        return async (...args) => { await tell(); return target[prop](...args); };
      },
    });
  }
}

export default function (env) {
  const tell = async () => { await (await env.ledger.fetch(env.path)).arrayBuffer(); };
  return new DurableObjectNamespace(env.inner, tell);
}
`;

function ledgerBindings(config) {
  return Object.entries(config.env ?? {}).filter(([, b]) => b && b.type === TYPE);
}

export const plugins = {
  "cmgsite-usage-ledger": {
    bindingTypeDescription: "Test-only counting wrapper of a Durable Object namespace",
    getBindings(options) {
      return ledgerBindings(options.config).map(([name, binding]) => {
        const { className, real, script } = binding.dev.options;
        return {
          name,
          wrapped: {
            moduleName: MODULE,
            innerBindings: [
              { name: "inner", durableObjectNamespace: { className, serviceName: `core:user:${options.config.name}` } },
              { name: "ledger", service: { name: "cmgsite-ledger-directory" } },
              { name: "path", json: JSON.stringify(`http://directory/ledger/${encodeURIComponent(script)}/do`) },
            ],
          },
        };
      });
    },
    getNodeBindings() {
      return {};
    },
    async getServices({ options }) {
      const found = ledgerBindings(options.config);
      if (found.length === 0) return [];
      return [{ name: "cmgsite-ledger-directory", external: { address: found[0][1].dev.options.directory, http: {} } }];
    },
    getExtensions({ options }) {
      if (!options.some((o) => ledgerBindings(o.config).length > 0)) return [];
      return [{ modules: [{ name: MODULE, esModule: WRAPPED_SOURCE, internal: true }] }];
    },
  },
};

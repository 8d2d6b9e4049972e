// Miniflare external plugin: the local stand-in for a Workers for Platforms dispatch
// namespace binding (Miniflare's own one only proxies to Cloudflare).
//
// `env.DISPATCHER.get(name, args, {limits}).fetch(request)` asks the platform host's
// directory (a loopback HTTP server in host.mjs) where the tenant script runs, then sends
// the request there over HTTP. Like Cloudflare: get() never throws; fetch() rejects with
// `Error("Worker not found.")` for a script the namespace does not hold. When the host runs
// with test faults enabled, the directory can answer with a fault that fetch() raises the
// way the runtime reports a custom-limit hit.
//
// A script already serving when the dispatcher starts (`direct`: {script: port}) is reached on
// its Worker's proxy-style socket (Miniflare `unsafeDirectSockets`, host.mjs tenantOptions)
// through an external service of the dispatcher's workerd, without Miniflare's front Worker
// (about 0.2 ms less per request); a script added or redeployed later goes through the front
// Worker of its process (`MF-Original-URL`) until the dispatcher is next restarted.
//
// Benchmarks only: `inProcess` ({script: worker}) names Workers that run inside the
// dispatcher's own Miniflare (a JS no-op, a Python no-op, a Python tenant Worker with its vars,
// secrets and bindings: host.mjs inProcessWorkersOf); those are called through a service
// binding, without the loopback hop (closer to Cloudflare, where the dispatch is in-process).
// Not for tenants: adding one would restart the dispatcher.
//
// Uses Miniflare's plugin hook (a binding whose type starts with `unsafe:`): pinned with
// miniflare in package.json and exercised by tests/test_platform_*.py.

const TYPE = "unsafe:cmgsite-dispatch-namespace";
const MODULE = "cmgsite:local-dispatch-namespace";

// The wrapped binding, run inside the dispatcher's isolate.
const WRAPPED_SOURCE = `
const cache = new Map();  // script name -> {entry, at}; short-lived so adds/removes show fast

async function lookup(env, name, limits) {
  const hit = cache.get(name);
  const now = Date.now();
  if (hit && now - hit.at < env.cacheMs) return hit.entry;
  const query = "?limits=" + encodeURIComponent(JSON.stringify(limits));
  const res = await env.directory.fetch("http://directory/scripts/" + encodeURIComponent(name) + query);
  const entry = res.status === 200 ? await res.json() : null;
  if (res.status !== 200 && res.status !== 404) throw new Error("dispatch namespace unavailable: " + res.status);
  cache.set(name, { entry, at: now });
  return entry;
}

const FAULTS = {
  cpu: "Worker exceeded CPU time limit.",
  subrequests: "Worker exceeded the subrequest limit (custom limit).",
  crash: "Worker threw exception",
};

export default function (env) {
  return {
    get(name, args, options) {
      const limits = (options && options.limits) || {};
      const local = env.inProcess[String(name)];
      return {
        async fetch(input, init) {
          // The dispatcher hands over a Request of its own: no copy of it here (one is made below).
          const request = input instanceof Request && init === undefined ? input : new Request(input, init);
          // A script in the dispatcher's own workerd (the bench's): called in-process,
          // through a service binding, as Cloudflare dispatches.
          if (local) return env[local].fetch(request);
          const entry = await lookup(env, String(name), limits);
          if (entry === null) throw new Error("Worker not found.");
          if (entry.fault) throw new Error(FAULTS[entry.fault] || entry.fault);
          const url = new URL(request.url);
          const headers = new Headers(request.headers);
          // The tenant side must not compress: the dispatcher's own edge encodes for the client.
          headers.set("Accept-Encoding", "identity");
          const body = request.method === "GET" || request.method === "HEAD" ? undefined : request.body;
          // The script's own process, known when this dispatcher started: straight to the
          // Worker's proxy-style socket, which takes the request's absolute URL as it is (no
          // Miniflare front Worker in between). Used only while the directory still names that
          // socket: a script redeployed since runs elsewhere and takes the path below.
          const fast = env.direct[String(name)];
          if (fast && entry.direct === fast.port) {
            headers.set("Host", url.host);
            return env[fast.binding].fetch(request.url, { method: request.method, headers, redirect: "manual", body });
          }
          headers.set("MF-Original-URL", request.url);
          const target = "http://127.0.0.1:" + entry.port + url.pathname + url.search;
          // The body streams through, as on Cloudflare (a tenant sees an upload before it ends).
          // Known local difference: a tenant that answers without reading a large body the
          // client is already sending (413) may see this loopback hop fail instead (502).
          // Straight to workerd's network service: the global fetch would pass through
          // Miniflare's outbound interceptor Worker first (one more isolate per request).
          return env.network.fetch(target, { method: request.method, headers, redirect: "manual", body });
        },
      };
    },
  };
}
`;

// workerd's HttpOptions.Style.proxy: the request line carries the absolute URL.
const HTTP_PROXY_STYLE = 1;
const directOf = (binding) => Object.entries(binding.dev.options.direct ?? {});
const directService = (i) => `cmgsite-namespace-direct-${i}`;

function namespaceBindings(config) {
  return Object.entries(config.env ?? {}).filter(([, b]) => b && b.type === TYPE);
}

export const plugins = {
  "cmgsite-dispatch-namespace": {
    bindingTypeDescription: "Dispatch namespace (local)",
    async getBindings(options) {
      return namespaceBindings(options.config).map(([name, binding]) => ({
        name,
        wrapped: {
          moduleName: MODULE,
          innerBindings: [
            { name: "directory", service: { name: "cmgsite-namespace-directory" } },
            { name: "network", service: { name: "internet" } },  // Miniflare's network service
            // The host's test mode looks every call up (so tests see each one and its limits).
            { name: "cacheMs", json: JSON.stringify(binding.dev.options.cacheMs ?? 500) },
            // script name -> the inner binding of a Worker in the dispatcher's Miniflare
            { name: "inProcess", json: JSON.stringify(Object.fromEntries(
              Object.keys(binding.dev.options.inProcess ?? {}).map((s, i) => [s, `script${i}`]))) },
            ...Object.values(binding.dev.options.inProcess ?? {}).map((worker, i) => (
              { name: `script${i}`, service: { name: `core:user:${worker}` } })),
            // script name -> {binding, port} of its proxy-style socket
            { name: "direct", json: JSON.stringify(Object.fromEntries(
              directOf(binding).map(([s, port], i) => [s, { binding: `direct${i}`, port }]))) },
            ...directOf(binding).map((_, i) => ({ name: `direct${i}`, service: { name: directService(i) } })),
          ],
        },
      }));
    },
    getNodeBindings(options) {
      return {};
    },
    async getServices({ options }) {
      const found = namespaceBindings(options.config);
      if (found.length === 0) return [];
      const address = found[0][1].dev.options.directory;  // "127.0.0.1:PORT"
      return [
        { name: "cmgsite-namespace-directory", external: { address, http: {} } },
        ...directOf(found[0][1]).map(([, port], i) => (
          { name: directService(i), external: { address: `127.0.0.1:${port}`, http: { style: HTTP_PROXY_STYLE } } })),
      ];
    },
    getExtensions({ options }) {
      if (!options.some((o) => namespaceBindings(o.config).length > 0)) return [];
      return [{ modules: [{ name: MODULE, esModule: WRAPPED_SOURCE, internal: true }] }];
    },
  },
};

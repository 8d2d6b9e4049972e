// The local platform host: the dispatcher and every tenant Worker on the real workerd,
// through Miniflare's Node API (Node 22). Started by `python -m localrt run` and by the tests.
//
//   node localrt/node/host.mjs CONFIG.json
//
// - The dispatcher runs in one Miniflare (one workerd process) on the public port, with D1
//   and KV persisted where `wrangler ... --local` reads them, and DISPATCHER bound to the
//   local dispatch namespace (namespace-plugin.mjs).
// - Each tenant script runs in a Miniflare of its own, so adding, redeploying or removing
//   one never restarts the others (Miniflare's setOptions restarts its whole workerd). A
//   redeploy of a serving script starts the new version beside the old one (replaceScript).
//   Scripts are files in the namespace directory (`<name>.json`: vars; secrets in
//   `<secrets>/<name>.dev.vars`), written by the tenant CLI; the host polls it.
// - A loopback "directory" server answers the namespace binding (where does script X run)
//   and the control plane (KV purges while the platform runs; status). Mutating calls
//   need the token from the config file (owner-only); so do the /r2/* calls backup and restore
//   make on the tenants' bucket, each confined to one tenant's `tenants/<id>/` keys.
//
// - Tenant scripts share one R2 bucket (FILES), as they do on Cloudflare. Miniflare keeps a
//   bucket in one SQLite database that two workerd processes cannot write at once (SQLITE_BUSY),
//   so the tenant Miniflares use Miniflare's shared storage: every storage call goes to one
//   owner, a small storage-only Miniflare started first and kept for the host's life
//   (`storageOwner`), found through a dev registry private to this host.
//
// - The public port is one listening socket the launcher (localrt/workerd.py) opens and hands
//   down (config.listenFd); each dispatcher workerd accepts on it (`--socket-fd entry=…`).
//   POST /dispatcher/restart starts a new dispatcher (fresh secrets) on the same socket, then
//   sends the old one SIGTERM: workerd stops accepting, finishes the requests it has (idle
//   keep-alive connections are closed), and exits. No connection is refused, none proxied.
//
// Prints one JSON line per event on stdout ({"event": "ready", ...}); logs go to stderr.
import childProcess from "node:child_process";
import { createServer } from "node:http";
import { createServer as createTcpServer } from "node:net";
import { readFileSync, readdirSync, statSync, existsSync, writeFileSync, renameSync, mkdirSync, rmSync } from "node:fs";
import { createHash, timingSafeEqual } from "node:crypto";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Miniflare, Log, LogLevel, convertV4MiniflareOptions } from "miniflare";
import { MetricsStore } from "./metrics-store.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const POLL_MS = config.pollMs ?? 250;
// The local Analytics Engine (metrics-store.mjs): every Worker's METRICS binding writes here, and
// tenant Workers query it through the SQL API the directory serves (bearer config.metricsToken).
const METRICS_DATASET = "cmgsite_metrics";
const metrics = config.metricsStore ? new MetricsStore(config.metricsStore, [METRICS_DATASET]) : null;
let metricsFault = null; // test-only: "throw" makes every write fail (a failing sink)

function emit(event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, ...fields, at: Date.now() }) + "\n");
}

// ---- .dev.vars ------------------------------------------------------------------------
function readDevVars(file) {
  if (!file || !existsSync(file)) return {};
  const out = {};
  for (const raw of readFileSync(file, "utf8").split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#") || !line.includes("=")) continue;
    const i = line.indexOf("=");
    let value = line.slice(i + 1).trim();
    if (value.length >= 2 && value[0] === value.at(-1) && (value[0] === '"' || value[0] === "'")) value = value.slice(1, -1);
    out[line.slice(0, i).trim()] = value;
  }
  return out;
}

// ---- modules: exactly what wrangler uploads from a built Worker directory ------------
function walk(dir, rel = "") {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    if (name === "__pycache__" || name.endsWith(".pyc")) continue;
    const full = path.join(dir, name);
    const relName = rel ? `${rel}/${name}` : name;
    if (statSync(full).isDirectory()) out.push(...walk(full, relName));
    else out.push([relName, full]);
  }
  return out;
}

const moduleCache = new Map();
function pythonModules(bundle) {
  // bundle: { root: wrangler's base_dir, main: the entry relative to it, pythonModules: dir }.
  // Named as `wrangler deploy` names them: the entry by its file name, the other *.py by
  // their path under base_dir, vendored files as python_modules/… (JS from the SDK as ESM).
  const key = JSON.stringify(bundle);
  if (moduleCache.has(key)) return moduleCache.get(key);
  if (bundle.main.endsWith(".mjs")) {  // a JS Worker (benchmarks: the namespace's own cost)
    const js = [{ type: "ESModule", path: path.join(bundle.root, bundle.main), contents: readFileSync(path.join(bundle.root, bundle.main)) }];
    moduleCache.set(key, js);
    return js;
  }
  const entryFile = path.join(bundle.root, bundle.main);
  const modules = [{ type: "PythonModule", path: path.join(bundle.root, path.basename(bundle.main)),
                     contents: readFileSync(entryFile) }];
  for (const [name, full] of walk(bundle.root)) {
    if (!name.endsWith(".py") || full === entryFile) continue;
    modules.push({ type: "PythonModule", path: full, contents: readFileSync(full) });
  }
  if (bundle.pythonModules && existsSync(bundle.pythonModules)) {
    for (const [name, full] of walk(bundle.pythonModules)) {
      const esm = name.startsWith("workers/") && (name.endsWith(".js") || name.endsWith(".mjs"));
      modules.push({ type: esm ? "ESModule" : "Data", path: path.join(bundle.root, "python_modules", name),
                     contents: readFileSync(full) });
    }
  }
  moduleCache.set(key, modules);
  return modules;
}

// ---- the shared pieces of every Miniflare ----------------------------------------------
const log = new Log(config.verbose ? LogLevel.DEBUG : LogLevel.WARN);
function shared(port) {
  return {
    host: config.host ?? "127.0.0.1",
    port,
    cf: false,
    log,
    resourcePersistencePath: config.persist,
    logRequests: false,
  };
}

// Python memory snapshots (config.pythonSnapshotDir): workerd saves the Worker's memory after
// its top level ran (a "dedicated" snapshot, as Cloudflare makes on upload) the first time a
// bundle starts, and every later start of the same bundle restores it instead of importing.
// A snapshot holds no env (the top level runs without one), so tenants on the same bundle
// share it: `<dir>/<hash of modules and flags>/snapshot.bin`.
const snapshotHashes = new Map();
function snapshotOf(bundle) {
  if (!config.pythonSnapshotDir || bundle.main.endsWith(".mjs")) return null;
  const key = JSON.stringify(bundle);
  if (!snapshotHashes.has(key)) {
    const hash = createHash("sha256").update(JSON.stringify(config.compatibilityFlags));
    for (const m of pythonModules(bundle)) hash.update(m.path).update("\0").update(m.contents);
    snapshotHashes.set(key, hash.digest("hex").slice(0, 24));
  }
  const dir = path.join(config.pythonSnapshotDir, snapshotHashes.get(key));
  mkdirSync(dir, { recursive: true });
  return { dir, mode: existsSync(path.join(dir, "snapshot.bin")) ? "load" : "save" };
}

function workerBase(name, bundle) {
  const snapshot = snapshotOf(bundle);
  return {
    name,
    modulesRoot: bundle.root,
    modules: pythonModules(bundle),
    compatibilityDate: config.compatibilityDate,
    compatibilityFlags: snapshot ? [...config.compatibilityFlags, "python_dedicated_snapshot"] : config.compatibilityFlags,
    ...(snapshot ? { snapshot } : {}),
  };
}

// The workerd process of a Miniflare whose Python Worker has a snapshot: tell the wrapper.
function withSnapshotEnv(options) {
  const snap = options.workers.find((w) => w.snapshot)?.snapshot;
  const workers = options.workers.map(({ snapshot, ...w }) => w);
  if (!snap) return { ...options, workers };
  return { ...options, workers,
           unsafeRuntimeEnv: { CMGSITE_PYTHON_SNAPSHOT: snap.mode, CMGSITE_PYTHON_SNAPSHOT_DIR: snap.dir } };
}

// ---- the subrequest ledger (test mode): what each Worker asked of the outside ---------------
// script -> kind -> count. Dispatcher: `kv` and `d1` (through the faulting wrappers, which ask
// the directory before every call) and `dispatch` (the namespace asks the directory once per
// fetch in test mode). Tenant scripts: `fetch` (outbound fetch, e.g. Supabase, through the
// outbound ledger Worker below), `do` (calls on
// a UsageMeter stub, usage-ledger-plugin.mjs) and `ai` (AI.run). GET /ledger/<script>/<kind>
// counts one; GET /subrequests reads the ledger, POST reads and zeroes it.
const ledger = new Map();
function count(script, kind) {
  if (!config.testFaults) return;
  const row = ledger.get(script) ?? {};
  row[kind] = (row[kind] ?? 0) + 1;
  ledger.set(script, row);
}
let directoryAddress = null;

// Test mode: a tenant's outbound fetch goes through this JS Worker, which tells the ledger and
// makes the real fetch itself, so a refused connection still reaches the tenant as a network
// error (as it would without the ledger), not as an HTTP answer.
function outboundLedger(script) {
  return {
    name: "cmgsite-outbound-ledger",
    modules: true,
    script: `export default {
      async fetch(request, env) {
        await (await env.LEDGER.fetch(env.LEDGER_PATH)).arrayBuffer();
        return fetch(request);
      },
    };`,
    compatibilityDate: "2026-11-01",
    serviceBindings: { LEDGER: { external: { address: directoryAddress, http: {} } } },
    bindings: { LEDGER_PATH: `http://directory/ledger/${encodeURIComponent(script)}/fetch` },
  };
}

function aiWorker(script) {
  const ledgerBinding = config.testFaults
    ? { serviceBindings: { LEDGER: { external: { address: directoryAddress, http: {} } } },
        bindings: { LEDGER_PATH: `http://directory/ledger/${encodeURIComponent(script)}/ai` } }
    : {};
  return {
    name: "cmgsite-local-ai",
    modules: [{ type: "ESModule", path: "ai.mjs", contents: readFileSync(path.join(HERE, "local-ai.mjs")) }],
    compatibilityDate: "2026-11-01",
    ...ledgerBinding,
  };
}

// ---- the tenants' shared storage (R2 bucket FILES, and with it AUTH_KV and the Cache API) ----
// One owner process serves every tenant Miniflare's storage: the oldest registered instance
// with the same persistence root, which is storageOwner (started before any tenant, disposed
// last). The registry lives in the host's state directory and is emptied at start, so a host
// that was killed leaves no dead owner behind.
const R2_BUCKET = config.r2Bucket ?? "cmgsite-files";
const devRegistryDir = path.join(path.dirname(config.statusFile ?? path.join(config.persist, "x")), "dev-registry");
function sharedStorage(converted) {
  return { ...converted, unsafeEnableSharedStorage: true, isolatedResourcePersistencePath: config.persist };
}
let storageOwner = null;
async function startStorageOwner() {
  rmSync(devRegistryDir, { recursive: true, force: true });
  mkdirSync(devRegistryDir, { recursive: true });
  const mf = new Miniflare(sharedStorage(convertV4MiniflareOptions({
    ...shared(0), unsafeDevRegistryPath: devRegistryDir,
    workers: [{ name: "cmgsite-storage-owner", modules: true, compatibilityDate: "2026-11-01",
                script: "export default { fetch() { return new Response(null, { status: 204 }); } };",
                r2Buckets: { FILES: R2_BUCKET } }],
  })));
  await mf.ready;
  storageOwner = mf;
}

// As on Cloudflare, where the snapshot is made at upload by a process that serves nothing, the
// process that saved a new snapshot is replaced by one restored from it: the saving process
// keeps the globals of its snapshot phase, and WebCrypto there refuses calls ("Illegal
// invocation"), so a Worker would behave differently in the first run after a code change.
async function startMiniflare(options, opts = {}) {
  const saving = options.workers.find((w) => w.snapshot?.mode === "save")?.snapshot;
  const started = await startMiniflareOnce(options, opts);
  if (!saving || !existsSync(path.join(saving.dir, "snapshot.bin"))) return started;
  await started.mf.dispose();
  saving.mode = "load";
  return startMiniflareOnce(options, opts);
}

// Benchmarks only (config.inspector): each workerd opens V8's inspector on a loopback port of its
// own (the status lists it), so the bench can read each isolate's heap (scripts/isolate_memory.mjs).
async function freePort() {
  const server = createTcpServer();
  await new Promise((resolve, reject) => server.once("error", reject).listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function startMiniflareOnce(options, { sharedStorage: share = false, runtimeEnv = null } = {}) {
  if (config.inspector) options = { ...options, inspectorPort: await freePort() };
  const withEnv = (o) => (runtimeEnv ? { ...o, unsafeRuntimeEnv: { ...(o.unsafeRuntimeEnv ?? {}), ...runtimeEnv } } : o);
  const convert = (o) => withEnv(share ? sharedStorage(convertV4MiniflareOptions({ ...o, unsafeDevRegistryPath: devRegistryDir }))
                                       : convertV4MiniflareOptions(o));
  const mf = new Miniflare(convert(withSnapshotEnv(options)));
  mf.cmgsiteInspectorPort = options.inspectorPort ?? null;
  try {
    return { mf, url: await mf.ready };
  } catch (err) {
    // A snapshot that does not restore (cut short while written, or from another workerd
    // build) is dropped, and the Worker starts by importing, saving a fresh one.
    const snap = options.workers.find((w) => w.snapshot?.mode === "load")?.snapshot;
    await mf.dispose().catch(() => {});
    if (!snap) throw err;
    log.warn(`python snapshot in ${snap.dir} did not restore (${String(err).slice(0, 200)}): making a new one`);
    rmSync(path.join(snap.dir, "snapshot.bin"), { force: true });
    snap.mode = "save";
    const again = new Miniflare(convert(withSnapshotEnv(options)));
    return { mf: again, url: await again.ready };
  }
}

// Snapshots of bundles this host does not run are from older code: remove them.
function pruneSnapshots(bundles) {
  if (!config.pythonSnapshotDir || !existsSync(config.pythonSnapshotDir)) return;
  const keep = new Set(bundles.map((b) => snapshotOf(b)?.dir).filter(Boolean).map((d) => path.basename(d)));
  for (const name of readdirSync(config.pythonSnapshotDir)) {
    if (!keep.has(name)) rmSync(path.join(config.pythonSnapshotDir, name), { recursive: true, force: true });
  }
}

// Python isolates load lazily: one request makes the first real one fast.
async function warm(url, host) {
  const started = Date.now();
  try {
    const res = await fetch(new URL("/__cmgsite_warmup", url), { headers: { host } });
    await res.arrayBuffer();
  } catch (err) {
    log.warn(`warm-up of ${host} failed: ${err}`);
  }
  return Date.now() - started;
}

// ---- the namespace: one Miniflare per tenant script -------------------------------------
const scripts = new Map(); // name -> { port, digest, mf, state }
const faults = new Map();  // test-only: name -> "cpu" | "subrequests" | "crash"
const invocations = [];    // test-only: the last namespace calls, {script, limits}
const bindingFaults = new Map(); // test-only: dispatcher binding ("DB" | "TENANT_CACHE") -> "throw"
// With test faults the dispatcher's DB and TENANT_CACHE are wrappers (binding-faults-plugin.mjs)
// around the real bindings, which keep their storage but are bound as __REAL_<NAME>.
const realBinding = (name) => (config.testFaults ? `__REAL_${name}` : name);
const kvOf = async (name) => dispatcher.mf.getKVNamespace(realBinding(name));

function specOf(name) {
  const file = path.join(config.namespaceDir, `${name}.json`);
  const text = readFileSync(file, "utf8");
  const secretsFile = path.join(config.secretsDir, `${name}.dev.vars`);
  const secrets = existsSync(secretsFile) ? readFileSync(secretsFile, "utf8") : "";
  const digest = createHash("sha256").update(text).update("\0").update(secrets).digest("hex");
  return { spec: JSON.parse(text), secretsFile, digest };
}

// METRICS (writeDataPoint) for a Worker, and where its SQL API is (what a Cloudflare account's
// ANALYTICS_ACCOUNT_ID + API token give a deployed Worker).
function metricsBindings(script) {
  if (!metrics) return [];
  return [{ name: "METRICS", type: "cmgsite-metrics",
            plugin: { package: path.join(HERE, "metrics-plugin.mjs"), name: "cmgsite-metrics" },
            options: { dataset: METRICS_DATASET, script, directory: directoryAddress } }];
}

function metricsQueryVars() {
  if (!metrics) return {};
  return { ANALYTICS_SQL_URL: `http://${directoryAddress}/client/v4/accounts/local/analytics_engine/sql`,
           ANALYTICS_API_TOKEN: config.metricsToken };
}

function bearerOk(req) {
  const supplied = Buffer.from(String(req.headers.authorization ?? ""));
  const expected = Buffer.from(`Bearer ${config.metricsToken}`);
  return Boolean(config.metricsToken) && supplied.length === expected.length && timingSafeEqual(supplied, expected);
}

async function textBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks).toString("utf8");
}

function tenantOptions(name, spec, secretsFile, port) {
  const bundle = spec.bundle ? { ...config.tenant, ...config.bundles?.[spec.bundle] } : config.tenant;
  const worker = {
    ...workerBase(name, bundle),
    bindings: { ...metricsQueryVars(), ...(spec.vars ?? {}), ...readDevVars(secretsFile) },
    kvNamespaces: { AUTH_KV: `auth-kv-${name}` },
    r2Buckets: { FILES: R2_BUCKET },  // one bucket for every tenant (objects under tenants/<id>/)
    durableObjects: { USAGE: { className: "UsageMeter", useSQLite: true } },
    serviceBindings: { AI: { name: "cmgsite-local-ai", entrypoint: "LocalAI" } },
    unsafeBindings: metricsBindings(name),
    // The dispatcher's direct way in (namespace-plugin.mjs): a proxy-style socket on the Worker
    // itself, beside Miniflare's front one
    unsafeDirectSockets: [{ host: "127.0.0.1", port: 0, proxy: true }],
  };
  if (!config.testFaults) return { ...shared(port), workers: [worker, aiWorker(name)] };
  const counted = {
    ...worker,
    durableObjects: { __REAL_USAGE: { className: "UsageMeter", useSQLite: true } },
    unsafeBindings: [...metricsBindings(name), {
      name: "USAGE", type: "cmgsite-usage-ledger",
      plugin: { package: path.join(HERE, "usage-ledger-plugin.mjs"), name: "cmgsite-usage-ledger" },
      options: { className: "UsageMeter", script: name, directory: directoryAddress },
    }],
    outboundService: "cmgsite-outbound-ledger",
  };
  return { ...shared(port), workers: [counted, aiWorker(name), outboundLedger(name)] };
}

// A redeploy of a serving script (new secrets or vars) replaces it the way a Cloudflare deploy
// does, without a gap: the new version starts on a port of its own and takes the traffic once
// it answers; the old one stops after the requests it already had (and any namespace look-up
// still cached for the old port) are done.
const DRAIN_MS = 60000; // under load a request may queue for many seconds behind the new version's start
async function replaceScript(name, entry) {
  const { spec, secretsFile, digest } = specOf(name);
  const began = Date.now();
  let started;
  try {
    started = await startMiniflare(tenantOptions(name, spec, secretsFile, 0));
  } catch (err) {
    await entry.mf.dispose().catch(() => {}); // as a failed first start: the script is not served
    throw err;
  }
  const { mf, url } = started;
  const warmMs = await warm(url, "warmup.invalid");
  const direct = await directPort(mf, name);
  if (scripts.get(name) !== entry) { // removed meanwhile
    await mf.dispose().catch(() => {});
    return;
  }
  const old = entry.mf;
  Object.assign(entry, { mf, port: Number(url.port), direct, digest, state: "ready" });
  setTimeout(() => { old.dispose().catch(() => {}); }, DRAIN_MS).unref();
  emit("script_ready", { script: name, port: entry.port, start_ms: Date.now() - began, first_response_ms: warmMs,
                         replaced: true });
}

async function startScript(name, known) {
  if (known?.mf && known.state === "ready") return replaceScript(name, known);
  const { spec, secretsFile, digest } = specOf(name);
  const entry = known ?? { port: 0, digest: "", mf: null, state: "starting" };
  entry.digest = digest;
  entry.state = "starting";
  scripts.set(name, entry);
  const began = Date.now();
  if (entry.mf) {
    await entry.mf.dispose().catch(() => {});
    entry.mf = null;
  }
  const { mf, url } = await startMiniflare(tenantOptions(name, spec, secretsFile, entry.port), { sharedStorage: true });
  entry.mf = mf;
  entry.port = Number(url.port);
  entry.direct = await directPort(mf, name);
  const warmMs = await warm(url, "warmup.invalid");
  if (scripts.get(name) !== entry) return; // removed meanwhile
  entry.state = "ready";
  emit("script_ready", { script: name, port: entry.port, start_ms: Date.now() - began, first_response_ms: warmMs });
}

async function directPort(mf, name) {
  return Number((await mf.unsafeGetDirectURL(name)).port);
}

async function stopScript(name) {
  const entry = scripts.get(name);
  scripts.delete(name);
  if (entry?.mf) await entry.mf.dispose().catch(() => {});
  emit("script_removed", { script: name });
}

function listSpecs() {
  if (!existsSync(config.namespaceDir)) return [];
  return readdirSync(config.namespaceDir).filter((f) => f.endsWith(".json")).map((f) => f.slice(0, -5))
    .filter((name) => !isInProcess(name)).sort();  // benchmarks: an in-process script runs in the dispatcher's workerd
}

let syncing = Promise.resolve();
function sync() {
  // Serialised: one start/stop at a time (Python isolates start one after another anyway).
  syncing = syncing.then(async () => {
    const wanted = new Set(listSpecs());
    for (const name of [...scripts.keys()]) if (!wanted.has(name)) await stopScript(name);
    for (const name of wanted) {
      let digest;
      try { digest = specOf(name).digest; } catch { continue; } // being written: next poll
      const entry = scripts.get(name);
      if (entry && entry.digest === digest) continue;
      try {
        await startScript(name, entry);
      } catch (err) {
        log.error(err instanceof Error ? err : new Error(String(err)));
        emit("script_failed", { script: name, error: String(err).slice(0, 300) });
        scripts.set(name, { ...(entry ?? { port: 0 }), digest, mf: null, state: "failed" });
      }
    }
  });
  return syncing;
}

// ---- the directory / control server -------------------------------------------------------
let dispatcher = null;
const DISPATCHER_NAME = "cmgsite-tenant-dispatcher";
function authorised(req) {
  const supplied = Buffer.from(String(req.headers["x-cmgsite-host-token"] ?? ""));
  const expected = Buffer.from(config.token);
  return supplied.length === expected.length && timingSafeEqual(supplied, expected);
}

async function rawBody(req, max) {
  const chunks = [];
  let size = 0;
  for await (const c of req) {
    size += c.length;
    if (size > max) throw Object.assign(new Error("body too large"), { status: 413 });
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

async function body(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString("utf8")) : {};
}

function reply(res, status, value) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(value));
}

const directory = createServer(async (req, res) => {
  try {
    const url = new URL(req.url, "http://directory");
    if (req.method === "GET" && url.pathname.startsWith("/scripts/")) {
      const name = decodeURIComponent(url.pathname.slice("/scripts/".length));
      if (config.testFaults) {
        invocations.push({ script: name, limits: JSON.parse(url.searchParams.get("limits") || "{}") });
        if (invocations.length > 500) invocations.shift();
        count(DISPATCHER_NAME, "dispatch");
      }
      const entry = scripts.get(name);
      if (!entry || entry.state !== "ready") return reply(res, 404, { error: "Worker not found." });
      return reply(res, 200, { port: entry.port, direct: entry.direct ?? null, fault: faults.get(name) ?? null });
    }
    if (req.method === "GET" && url.pathname.startsWith("/binding-faults/") && config.testFaults) {
      const name = decodeURIComponent(url.pathname.slice("/binding-faults/".length));
      count(DISPATCHER_NAME, name === "DB" ? "d1" : "kv");
      return reply(res, 200, { fault: bindingFaults.get(name) ?? null });
    }
    if (req.method === "GET" && url.pathname.startsWith("/ledger/") && config.testFaults) {
      const [script, kind] = url.pathname.slice("/ledger/".length).split("/").map(decodeURIComponent);
      count(script, kind);
      res.writeHead(204);
      return res.end();
    }
    if (req.method === "POST" && url.pathname === "/metrics/write" && metrics) {
      // A batch from a Worker's METRICS binding (metrics-plugin.mjs): {dataset, points: [...]}.
      const { dataset, points, times } = JSON.parse(await textBody(req) || "{}");
      if (metricsFault) return reply(res, 503, { error: "metrics store unavailable (test fault)" });
      let rejected;
      try {
        rejected = metrics.writeBatch(String(dataset), Array.isArray(points) ? points : [], Array.isArray(times) ? times : []);
      } catch (err) {
        return reply(res, 400, { error: String(err.message ?? err) });
      }
      if (rejected.length) return reply(res, 400, { error: `${rejected.length} points rejected: ${rejected[0]}` });
      res.writeHead(204);
      return res.end();
    }
    if (req.method === "POST" && /^\/client\/v4\/accounts\/[^/]+\/analytics_engine\/sql$/.test(url.pathname) && metrics) {
      if (!bearerOk(req)) return reply(res, 401, { success: false, errors: [{ code: 10000, message: "Authentication error" }] });
      const answer = metrics.query(await textBody(req));
      if (answer.status !== 200) {
        res.writeHead(answer.status, { "content-type": "text/plain" });
        return res.end(answer.body);
      }
      return reply(res, 200, answer.json);
    }
    if (!authorised(req)) return reply(res, 403, { error: "forbidden" });
    if (req.method === "POST" && url.pathname === "/scheduled") {
      // Miniflare's scheduled trigger: the dispatcher's cron handler, as Cloudflare fires it.
      if (!dispatcher) return reply(res, 503, { error: "dispatcher not ready" });
      const { cron } = await body(req);
      const worker = await dispatcher.mf.getWorker();
      const result = await worker.scheduled({ cron: String(cron ?? "*/5 * * * *"), scheduledTime: new Date() });
      return reply(res, 200, { outcome: result.outcome });
    }
    if (req.method === "GET" && url.pathname === "/status") {
      return reply(res, 200, {
        dispatcher: dispatcher ? "ready" : "starting",
        dispatcher_generation: dispatcher?.generation ?? null,
        dispatcher_started_at: dispatcher?.startedAt ?? null,
        dispatcher_context_kid: dispatcher?.contextKid ?? null,
        dispatcher_direct: dispatcher?.direct ?? {},  // scripts the dispatcher reaches on their own socket
        scripts: Object.fromEntries([...scripts].map(([n, e]) => [n, { state: e.state, port: e.port, direct: e.direct ?? null,
                                                                      ...(config.inspector ? { inspector: e.mf?.cmgsiteInspectorPort ?? null } : {}) }])),
        ...(config.inspector ? { dispatcher_inspector: dispatcher?.mf.cmgsiteInspectorPort ?? null } : {}),
      });
    }
    if (req.method === "POST" && url.pathname === "/dispatcher/restart") {
      // The dispatcher with its secrets file as it is now (a new context key), without a gap.
      if (!dispatcher) return reply(res, 503, { error: "dispatcher not ready" });
      try {
        return reply(res, 200, await restartDispatcher());
      } catch (err) {
        return reply(res, err?.status ?? 500, { error: String(err?.message ?? err).slice(0, 300) });
      }
    }
    if (req.method === "POST" && url.pathname === "/sync") {
      await sync();
      return reply(res, 200, { scripts: Object.fromEntries([...scripts].map(([n, e]) => [n, e.state])) });
    }
    if (req.method === "POST" && url.pathname === "/kv/delete") {
      const { binding, key } = await body(req);
      if (!dispatcher) return reply(res, 503, { error: "dispatcher not ready" });
      const kv = await kvOf(binding);
      await kv.delete(String(key));
      return reply(res, 200, { deleted: key });
    }
    if (req.method === "POST" && url.pathname === "/kv/get") {
      const { binding, key } = await body(req);
      if (!dispatcher) return reply(res, 503, { error: "dispatcher not ready" });
      const kv = await kvOf(binding);
      return reply(res, 200, { value: await kv.get(String(key)) });
    }
    if (url.pathname.startsWith("/r2/")) return await r2Control(req, res, url);
    if (req.method === "POST" && url.pathname === "/kv/put" && config.testFaults) {
      const { binding, key, value, ttl } = await body(req);
      const kv = await kvOf(binding);
      await kv.put(String(key), String(value), ttl ? { expirationTtl: ttl } : {});
      return reply(res, 200, { put: key });
    }
    if (url.pathname === "/subrequests" && config.testFaults) {
      const counts = Object.fromEntries(ledger);
      if (req.method === "POST") ledger.clear();
      return reply(res, 200, { subrequests: counts });
    }
    if (req.method === "GET" && url.pathname === "/invocations" && config.testFaults) {
      return reply(res, 200, { invocations });
    }
    if (req.method === "POST" && url.pathname === "/faults" && config.testFaults) {
      const { script, binding, fault, metrics: metricsMode } = await body(req);
      if (metricsMode !== undefined) {
        metricsFault = metricsMode === "throw" ? "throw" : null;
        return reply(res, 200, { metricsFault });
      }
      if (binding !== undefined) {
        if (!["DB", "TENANT_CACHE"].includes(binding) || ![null, "throw"].includes(fault ?? null)) {
          return reply(res, 400, { error: "binding must be DB or TENANT_CACHE, fault throw or null" });
        }
        if (fault) bindingFaults.set(binding, fault); else bindingFaults.delete(binding);
        return reply(res, 200, { bindingFaults: Object.fromEntries(bindingFaults) });
      }
      if (fault) faults.set(script, fault); else faults.delete(script);
      return reply(res, 200, { faults: Object.fromEntries(faults) });
    }
    return reply(res, 404, { error: "no such endpoint" });
  } catch (err) {
    if (err?.status === 413) return reply(res, 413, { error: "body too large" });
    return reply(res, 500, { error: String(err).slice(0, 300) });
  }
});

// ---- the tenants' bucket for the control plane (backup and restore) ----------------------
// Token-checked like every mutating call, and confined: each call names one tenant, and every
// key or prefix it touches must lie under `tenants/<that tenant>/` (checked here too, whatever
// the caller checked). Object metadata travels in one header, URI-encoded JSON.
//   POST /r2/list {tenant, prefix, cursor}   -> {objects: [{key, size, contentType, customMetadata}], cursor, truncated}
//   POST /r2/get  {tenant, key}              -> the bytes; X-Cmgsite-R2-Object: {key, size, contentType, customMetadata}
//   POST /r2/put  X-Cmgsite-R2-Object: {tenant, key, contentType, customMetadata}; the bytes -> {key, size}
const R2_MAX_OBJECT = 256 * 1024 * 1024;  // the backup archive's member limit
const TENANT_ID = /^[a-z0-9][a-z0-9-]{0,62}$/;
function confinedKey(tenant, key, { prefix = false } = {}) {
  if (typeof tenant !== "string" || !TENANT_ID.test(tenant)) return "tenant must be a tenant id";
  if (typeof key !== "string" || key.length > 1024) return "key must be a string of at most 1024 characters";
  const root = `tenants/${tenant}/`;
  if (!key.startsWith(root) || (!prefix && key.length === root.length)) return `key must lie under ${root}`;
  if (/[\u0000-\u001f\u007f\\]/.test(key)) return "key holds a control character or a backslash";
  const segments = key.slice(root.length).split("/");
  if (segments.slice(0, prefix ? -1 : undefined).some((s) => s === "" || s === "." || s === ".."))
    return "key holds an empty, . or .. segment";
  return null;
}
const r2Meta = (obj) => ({ key: obj.key, size: obj.size, contentType: obj.httpMetadata?.contentType ?? null,
                           customMetadata: obj.customMetadata ?? {} });

async function r2Control(req, res, url) {
  if (req.method !== "POST") return reply(res, 405, { error: "POST only" });
  if (!storageOwner) return reply(res, 503, { error: "the tenants' storage is not ready" });
  const bucket = await storageOwner.getR2Bucket("FILES");
  if (url.pathname === "/r2/list") {
    const { tenant, prefix, cursor } = await body(req);
    const bad = confinedKey(tenant, prefix, { prefix: true });
    if (bad) return reply(res, 400, { error: bad });
    const page = await bucket.list({ prefix, limit: 1000, include: ["httpMetadata", "customMetadata"],
                                     ...(cursor ? { cursor: String(cursor) } : {}) });
    const objects = page.objects.filter((o) => o.key.startsWith(prefix)).map(r2Meta);
    return reply(res, 200, { objects, truncated: page.truncated, cursor: page.truncated ? page.cursor : null });
  }
  if (url.pathname === "/r2/get") {
    const { tenant, key } = await body(req);
    const bad = confinedKey(tenant, key);
    if (bad) return reply(res, 400, { error: bad });
    const obj = await bucket.get(key);
    if (!obj) return reply(res, 404, { error: "no such object" });
    const data = Buffer.from(await obj.arrayBuffer());
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": data.length,
                         "x-cmgsite-r2-object": encodeURIComponent(JSON.stringify(r2Meta(obj))) });
    return res.end(data);
  }
  if (url.pathname === "/r2/put") {
    let meta;
    try {
      meta = JSON.parse(decodeURIComponent(String(req.headers["x-cmgsite-r2-object"] ?? "")));
    } catch {
      return reply(res, 400, { error: "X-Cmgsite-R2-Object must be URI-encoded JSON" });
    }
    const bad = confinedKey(meta?.tenant, meta?.key);
    if (bad) return reply(res, 400, { error: bad });
    const custom = meta.customMetadata ?? {};
    if (typeof custom !== "object" || Array.isArray(custom) || Object.values(custom).some((v) => typeof v !== "string"))
      return reply(res, 400, { error: "customMetadata must map names to strings" });
    if (meta.contentType != null && typeof meta.contentType !== "string")
      return reply(res, 400, { error: "contentType must be a string" });
    const data = await rawBody(req, R2_MAX_OBJECT);
    const stored = await bucket.put(meta.key, data, { customMetadata: custom,
                                                      ...(meta.contentType ? { httpMetadata: { contentType: meta.contentType } } : {}) });
    return reply(res, 200, { key: stored.key, size: stored.size });
  }
  return reply(res, 404, { error: "no such endpoint" });
}

// ---- start, serve, stop ---------------------------------------------------------------------
async function main() {
  const began = Date.now();
  await new Promise((resolve) => directory.listen(0, "127.0.0.1", resolve));
  directoryAddress = `127.0.0.1:${directory.address().port}`;

  const d = config.dispatcher;
  pruneSnapshots([d, config.tenant, ...Object.values(config.bundles ?? {}).map((b) => ({ ...config.tenant, ...b }))]);
  await startStorageOwner();
  await sync();
  const dispatcherBegan = Date.now();
  dispatcher = await startDispatcher();
  const { mf, url } = dispatcher;
  await emptyRouteCache(mf);
  const warmMs = await warm(url, "warmup.invalid");
  writeStatus(directoryAddress);
  emit("ready", { url: String(url), directory: directoryAddress, start_ms: Date.now() - began,
                  dispatcher_start_ms: Date.now() - dispatcherBegan, dispatcher_first_response_ms: warmMs,
                  scripts: [...scripts.keys()] });
  setInterval(() => { sync().then(() => writeStatus(directoryAddress)); }, POLL_MS).unref();
}

// ---- the dispatcher: one workerd at a time on the public socket, replaced without a gap ----
// Miniflare spawns workerd with `--socket-addr=entry=<host:port>`; for a dispatcher (its runtime
// env carries CMGSITE_DISPATCHER_GENERATION) the spawn below hands it the public socket as fd 4
// instead and names it with `--socket-fd`. Miniflare's dispose() kills workerd with SIGKILL; for a
// dispatcher being replaced that becomes SIGTERM, which workerd answers by draining (up to
// DRAIN_MS, then SIGKILL). Every other spawn is untouched.
const PUBLIC_FD = Number.isInteger(config.listenFd) ? config.listenFd : null;
const drainingGenerations = new Set();
const dispatcherProcesses = new Map(); // generation -> the workerd ChildProcess
const spawnOriginal = childProcess.spawn;
childProcess.spawn = function spawnWithPublicSocket(command, args, options) {
  const generation = options?.env?.CMGSITE_DISPATCHER_GENERATION;
  if (PUBLIC_FD === null || generation === undefined || !Array.isArray(options.stdio)) {
    return spawnOriginal.call(this, command, args, options);
  }
  const fd = options.stdio.length;
  const argv = args.map((a) => (a.startsWith("--socket-addr=entry=") ? `--socket-fd=entry=${fd}` : a));
  const child = spawnOriginal.call(this, command, argv, { ...options, stdio: [...options.stdio, PUBLIC_FD] });
  const kill = child.kill.bind(child);
  child.killNow = kill;
  child.kill = (signal) => kill(signal === "SIGKILL" && drainingGenerations.has(generation) ? "SIGTERM" : signal);
  dispatcherProcesses.set(generation, child);
  child.once("exit", () => dispatcherProcesses.delete(generation));
  return child;
};

let dispatcherGeneration = 0;
function contextKid(secrets) {  // the key id the dispatcher signs with (shared/keys.py's keyring format)
  const value = String(secrets.CONTEXT_SIGNING_SECRET ?? "").trim();
  if (!value) return null;
  if (!value.includes(":") && !value.includes(",")) return "k0";
  return value.split(",")[0].split(":")[0].trim();
}

async function startDispatcher() {
  const d = config.dispatcher;
  const secrets = readDevVars(d.secretsFile);
  const generation = String(++dispatcherGeneration);
  // the scripts serving now, by their proxy-style socket (namespace-plugin.mjs)
  const direct = Object.fromEntries([...scripts].filter(([, e]) => e.state === "ready" && e.direct)
    .map(([n, e]) => [n, e.direct]));
  const dispatcherWorker = {
    ...workerBase(DISPATCHER_NAME, d),
    bindings: { ...(d.vars ?? {}), ...secrets },
    kvNamespaces: { [realBinding("TENANT_CACHE")]: d.kvId },
    d1Databases: { [realBinding("DB")]: d.d1Id },
    unsafeBindings: [...(config.testFaults ? faultingBindings(directoryAddress, d) : []), ...metricsBindings(DISPATCHER_NAME), {
      name: "DISPATCHER",
      type: "cmgsite-dispatch-namespace",
      plugin: { package: path.join(HERE, "namespace-plugin.mjs"), name: "cmgsite-dispatch-namespace" },
      options: { directory: directoryAddress, cacheMs: config.testFaults ? 0 : 500,
                 inProcess: Object.fromEntries(Object.keys(config.inProcessScripts ?? {}).map((n) => [n, `inproc-${n}`])),
                 direct },
    }],
  };
  const inProcessWorkers = Object.entries(config.inProcessScripts ?? {}).flatMap(([n, b]) => inProcessWorkersOf(n, b));
  const options = { ...shared(PUBLIC_FD === null ? config.port : 0), workers: [dispatcherWorker, ...inProcessWorkers] };
  const { mf, url } = await startMiniflare(options, { runtimeEnv: { CMGSITE_DISPATCHER_GENERATION: generation } });
  // Miniflare reports the port workerd listens on: the public socket's.
  return { mf, url, generation, startedAt: Date.now(), contextKid: contextKid(secrets), direct };
}

// Benchmarks only (config.inProcessScripts, script name -> bundle name): Workers in the
// dispatcher's workerd, which the namespace binding calls through a service binding, without
// the loopback hop (namespace-plugin.mjs), as Cloudflare dispatches inside the runtime.
// - A JS bundle (config.bundles): the bare Worker (the dispatcher's own cost).
// - A Python bundle ("tenant": the tenant Worker's, else one of config.bundles): the Worker as its
//   per-tenant Miniflare defines it (tenantOptions), with the vars and secrets of its namespace
//   spec when there is one (`<namespaceDir>/<script>.json`; the poller leaves such a script to
//   the dispatcher), and its AUTH_KV, USAGE, AI and METRICS bindings; its helper Workers (local AI,
//   the test mode's outbound ledger) are renamed per script. Two differences: FILES is a bucket of
//   its own (the tenants' shared bucket lives in the storage owner, whose SQLite file a second
//   process must not write), and no Python memory snapshot (workerd takes one snapshot per
//   process: the dispatcher's), so the host refuses in-process Python scripts with snapshots on.
// Not for tenants: adding or redeploying one would restart the dispatcher.
const IN_PROCESS_R2_BUCKET = `${R2_BUCKET}-bench-in-process`;
const isInProcess = (name) => Object.hasOwn(config.inProcessScripts ?? {}, name);

function inProcessWorkersOf(name, bundleName) {
  const own = `inproc-${name}`;
  const b = bundleName === "tenant" ? config.tenant : config.bundles?.[bundleName];
  if (!b) throw new Error(`in-process script ${name}: no bundle ${bundleName}`);
  if (b.main.endsWith(".mjs")) {
    return [{ name: own, modules: pythonModules(b), modulesRoot: b.root, compatibilityDate: config.compatibilityDate }];
  }
  if (config.pythonSnapshotDir) throw new Error(`in-process Python script ${name}: not with Python memory snapshots`);
  const found = existsSync(path.join(config.namespaceDir, `${name}.json`)) ? specOf(name) : null;
  const spec = { ...(found?.spec ?? { vars: {} }), bundle: bundleName === "tenant" ? undefined : bundleName };
  const secretsFile = found?.secretsFile ?? path.join(config.secretsDir, `${name}.dev.vars`);
  const [{ unsafeDirectSockets, ...worker }, ...helpers] = tenantOptions(name, spec, secretsFile, 0).workers;
  const renamed = Object.fromEntries(helpers.map((h) => [h.name, `${own}-${h.name}`]));
  return [
    {
      ...worker,
      name: own,
      r2Buckets: { FILES: IN_PROCESS_R2_BUCKET },
      serviceBindings: Object.fromEntries(Object.entries(worker.serviceBindings ?? {}).map(
        ([k, v]) => [k, renamed[v.name] ? { ...v, name: renamed[v.name] } : v])),
      ...(worker.outboundService ? { outboundService: renamed[worker.outboundService] } : {}),
    },
    ...helpers.map((h) => ({ ...h, name: renamed[h.name] })),
  ];
}

// A new dispatcher (the secrets file as it is now) beside the running one on the public socket;
// once it answers, the old one drains and exits. Serialised; resolves when the old one is gone.
let swapping = Promise.resolve();
function restartDispatcher() {
  const run = swapping.then(async () => {
    if (PUBLIC_FD === null) throw Object.assign(new Error("the host was started without a public socket (listenFd)"), { status: 409 });
    const began = Date.now();
    const next = await startDispatcher();
    const warmMs = await warm(next.url, "warmup.invalid");
    const old = dispatcher;
    dispatcher = next;
    emit("dispatcher_ready", { generation: next.generation, start_ms: Date.now() - began, first_response_ms: warmMs,
                               context_kid: next.contextKid, replaced: true });
    const drainBegan = Date.now();
    if (old) {
      drainingGenerations.add(old.generation);
      const child = dispatcherProcesses.get(old.generation);
      const cap = setTimeout(() => child?.killNow("SIGKILL"), DRAIN_MS);
      await old.mf.dispose().catch(() => {});
      clearTimeout(cap);
      drainingGenerations.delete(old.generation);
    }
    emit("dispatcher_drained", { generation: old?.generation ?? null, drain_ms: Date.now() - drainBegan });
    return { generation: next.generation, started_at: next.startedAt, context_kid: next.contextKid,
             start_ms: drainBegan - began, drain_ms: Date.now() - drainBegan };
  });
  swapping = run.catch(() => {});
  return run;
}

// Test-only: DB and TENANT_CACHE as wrappers of the real bindings that can be told to throw.
function faultingBindings(directoryAddress, d) {
  const plugin = { package: path.join(HERE, "binding-faults-plugin.mjs"), name: "cmgsite-binding-faults" };
  return [["DB", "d1", d.d1Id], ["TENANT_CACHE", "kv", d.kvId]].map(([name, kind, id]) => ({
    name, type: "cmgsite-binding-faults", plugin, options: { kind, id, directory: directoryAddress },
  }));
}

// Changes made while the platform was down were not purged: start with an empty route cache.
async function emptyRouteCache(mf) {
  const kv = await mf.getKVNamespace(realBinding("TENANT_CACHE"));
  let cursor;
  do {
    const page = await kv.list({ cursor });
    await Promise.all(page.keys.map((k) => kv.delete(k.name)));
    cursor = page.list_complete ? undefined : page.cursor;
  } while (cursor);
}

function writeStatus(directoryAddress) {
  if (!config.statusFile) return;
  const tmp = `${config.statusFile}.tmp`;
  writeFileSync(tmp, JSON.stringify({ pid: process.pid, directory: directoryAddress, port: config.port }), { mode: 0o600 });
  renameSync(tmp, config.statusFile);
}

let stopping = false;
async function stop(signal) {
  if (stopping) return;
  stopping = true;
  emit("stopping", { signal });
  directory.close();
  const all = [...scripts.values()].map((e) => e.mf?.dispose().catch(() => {}));
  if (dispatcher) all.push(dispatcher.mf.dispose().catch(() => {}));
  await Promise.all(all);
  if (storageOwner) await storageOwner.dispose().catch(() => {});  // last: the tenants' storage
  process.exit(0);
}
process.on("SIGINT", () => stop("SIGINT"));
process.on("SIGTERM", () => stop("SIGTERM"));
process.stdin.on("end", () => stop("parent gone")); // the Python launcher holds our stdin
process.stdin.resume();

main().catch((err) => {
  log.error(err instanceof Error ? err : new Error(String(err)));
  emit("failed", { error: String(err).slice(0, 500) });
  process.exit(1);
});

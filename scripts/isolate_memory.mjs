// Each isolate's memory in running workerd processes, read through V8's inspector (the bench's
// hosts open one per workerd: WorkerdHost(inspector=True)). Usage:
//
//     node scripts/isolate_memory.mjs PORT [PORT ...]
//
// Prints JSON: {"<port>": [{"target": "<the Worker's inspector target>", "js_heap_used": bytes,
// "js_heap_total": bytes, "wasm_memory": bytes}, ...]} for the isolates that have run code.
// `js_heap_*` is Runtime.getHeapUsage (V8's heap: JS objects); `wasm_memory` is the size of
// every WebAssembly.Memory the isolate holds (a Python Worker's: Pyodide's linear memory, where
// CPython's objects live). Reading the memories (Runtime.queryObjects) makes V8 collect garbage
// first, so two readings compare what is still referenced, not what V8 has not collected yet.
// Uses Node 22's WebSocket; benchmarks only.

const TIMEOUT_MS = 30000;

async function targets(port) {
  const res = await fetch(`http://127.0.0.1:${port}/json/list`);
  if (!res.ok) throw new Error(`inspector on ${port}: /json/list answered ${res.status}`);
  return res.json();
}

function session(url) {
  const ws = new WebSocket(url);
  let next = 0;
  const waiting = new Map();
  const contexts = [];  // the isolate's execution contexts (reported once Runtime is enabled)
  ws.addEventListener("message", (event) => {
    const msg = JSON.parse(String(event.data));
    if (msg.method === "Runtime.executionContextCreated") contexts.push(msg.params.context.id);
    const w = waiting.get(msg.id);
    if (!w) return;
    waiting.delete(msg.id);
    if (msg.error) w.reject(new Error(`${msg.error.message} (${msg.error.code})`));
    else w.resolve(msg.result);
  });
  const opened = new Promise((resolve, reject) => {
    ws.addEventListener("open", resolve, { once: true });
    ws.addEventListener("error", () => reject(new Error(`cannot connect to ${url}`)), { once: true });
  });
  return {
    opened,
    call(method, params = {}) {
      const id = ++next;
      ws.send(JSON.stringify({ id, method, params }));
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${method}: no answer`)), TIMEOUT_MS);
        waiting.set(id, {
          resolve: (v) => { clearTimeout(timer); resolve(v); },
          reject: (e) => { clearTimeout(timer); reject(e); },
        });
      });
    },
    contexts,
    close() { ws.close(); },
  };
}

// Runtime.queryObjects collects garbage before it looks (V8 does a full collection first).
async function wasmBytes(s) {
  const proto = await s.call("Runtime.evaluate", { expression: "WebAssembly.Memory.prototype", contextId: s.contexts[0] });
  const found = await s.call("Runtime.queryObjects", { prototypeObjectId: proto.result.objectId });
  const sizes = await s.call("Runtime.callFunctionOn", {
    objectId: found.objects.objectId,
    functionDeclaration: "function () { return this.reduce((n, m) => n + m.buffer.byteLength, 0); }",
    returnByValue: true,
  });
  return sizes.result.value;
}

async function isolate(target) {
  const s = session(target.webSocketDebuggerUrl);
  await s.opened;
  try {
    await s.call("Runtime.enable");
    if (s.contexts.length === 0) return null; // nothing has run in this isolate
    const wasm = await wasmBytes(s);
    const heap = await s.call("Runtime.getHeapUsage");
    return { target: target.id, js_heap_used: heap.usedSize, js_heap_total: heap.totalSize, wasm_memory: wasm };
  } finally {
    s.close();
  }
}

const out = {};
for (const port of process.argv.slice(2)) {
  out[port] = [];
  for (const target of await targets(port)) {
    // The Workers (`core:user:<name>`) and Miniflare's own front Worker (`core:entry`) and
    // outbound interceptors; its storage and service helpers hold no request state.
    if (!/^(core:user:|core:entry$|outbound:)/.test(target.id)) continue;
    const found = await isolate(target);
    if (found) out[port].push(found);
  }
}
console.log(JSON.stringify(out));

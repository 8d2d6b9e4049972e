"""The dispatch namespace on the local runtime: a registry of tenant scripts.

Each script is a Worker entry class (module + class name) with its own vars and secrets,
as `wrangler deploy --dispatch-namespace cmgsite-tenants --name <script>` would upload it.
`get(name, args, options).fetch(request)` runs it, and fails the way Cloudflare's does:
JsException("Worker not found.") for a missing script, and a CPU-limit error when the
invocation used more CPU than `limits.cpuMs` (scaled: CPython is not Pyodide; see README).
"""
from __future__ import annotations

import asyncio
import importlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import js
import workers
from pyodide.ffi import JsException

from localrt.devvars import read_dev_vars


class Env:
    """A Worker's `env`: vars, secrets and bindings as attributes."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:  # never print secret values
        return f"Env({sorted(self.__dict__)})"


class ExecutionContext:
    def __init__(self) -> None:
        self.tasks: set[asyncio.Future[Any]] = set()

    def waitUntil(self, awaitable: Any) -> None:
        task = asyncio.ensure_future(awaitable)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def passThroughOnException(self) -> None:
        return None


@dataclass
class ScriptSpec:
    name: str
    module: str = "tenant_worker.entry"
    entrypoint: str = "Default"
    vars: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "module": self.module, "entrypoint": self.entrypoint, "vars": self.vars},
                          indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ScriptSpec":
        d = json.loads(text)
        return cls(d["name"], d.get("module", "tenant_worker.entry"), d.get("entrypoint", "Default"), dict(d.get("vars", {})))


BindingsFactory = Callable[[ScriptSpec], dict[str, Any]]


class _Script:
    def __init__(self, spec: ScriptSpec, env: Env) -> None:
        self.spec, self.env = spec, env
        self.cls = getattr(importlib.import_module(spec.module), spec.entrypoint)


class DispatchNamespace:
    """Scripts live as JSON in `registry_dir`, secrets in `secrets_dir/<name>.dev.vars`."""

    def __init__(self, registry_dir: Path, secrets_dir: Path, *, bindings: BindingsFactory | None = None,
                 cpu_limit_scale: float | None = None) -> None:
        self.registry_dir, self.secrets_dir = Path(registry_dir), Path(secrets_dir)
        self.registry_dir.mkdir(parents=True, exist_ok=True)
        self._bindings = bindings or (lambda spec: {})
        self._scripts: dict[str, _Script] = {}
        scale = cpu_limit_scale if cpu_limit_scale is not None else float(os.environ.get("LOCALRT_CPU_LIMIT_SCALE", "20"))
        self.cpu_limit_scale = scale
        self.invocations: list[tuple[str, dict[str, Any]]] = []  # (script, options) of recent calls, for tests
        self.pending: set[asyncio.Future[Any]] = set()

    def _spec_path(self, name: str) -> Path:
        return self.registry_dir / f"{name}.json"

    def secrets_path(self, name: str) -> Path:
        return self.secrets_dir / f"{name}.dev.vars"

    def deploy(self, spec: ScriptSpec) -> None:
        """Upload (or replace) a script, like `wrangler deploy --dispatch-namespace`."""
        path = self._spec_path(spec.name)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(spec.to_json())
        os.replace(tmp, path)
        self._scripts.pop(spec.name, None)

    def remove(self, name: str) -> bool:
        self._scripts.pop(name, None)
        try:
            self._spec_path(name).unlink()
            return True
        except FileNotFoundError:
            return False

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.registry_dir.glob("*.json"))

    def _load(self, name: str) -> _Script | None:
        # Loaded once per "isolate"; deploy/remove here, or a generation bump from another
        # process (Platform.restart_isolates), drops it. No disk I/O on the hot path.
        cached = self._scripts.get(name)
        if cached is not None:
            return cached
        path = self._spec_path(name)
        try:
            spec = ScriptSpec.from_json(path.read_text())
        except FileNotFoundError:
            return None
        values: dict[str, Any] = dict(spec.vars)
        values.update(read_dev_vars(self.secrets_path(name)))
        values.update(self._bindings(spec))
        script = self._scripts[name] = _Script(spec, Env(values))
        return script

    def env_of(self, name: str) -> Env | None:
        script = self._load(name)
        return script.env if script else None

    def get(self, name: str, args: Any = None, options: Any = None) -> "_Fetcher":
        return _Fetcher(self, name, dict(options or {}))


class _Fetcher:
    def __init__(self, ns: DispatchNamespace, name: str, options: dict[str, Any]) -> None:
        self._ns, self._name, self._options = ns, name, options

    async def fetch(self, request: Any) -> js.Response:
        script = self._ns._load(self._name)
        if script is None:
            raise JsException("Worker not found.")
        self._ns.invocations.append((self._name, self._options))
        del self._ns.invocations[:-100]
        if not isinstance(request, js.Request):
            request = js.Request.new(request)
        ctx = ExecutionContext()
        limits = self._options.get("limits") or {}
        started = time.thread_time()
        try:
            instance = script.cls(ctx, script.env)
            response = await instance.fetch(workers.Request(request))
        except JsException:
            raise
        except Exception as exc:  # workerd hands the dispatcher the user Worker's exception
            raise JsException(f"{type(exc).__name__}: {exc}") from None
        finally:
            self._ns.pending.update(ctx.tasks)
        cpu_ms = (time.thread_time() - started) * 1000
        if "cpuMs" in limits and cpu_ms > float(limits["cpuMs"]) * self._ns.cpu_limit_scale:
            raise JsException("Worker exceeded CPU time limit.")
        return response.js_object

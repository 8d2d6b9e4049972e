"""Assembles the local platform: D1, KV, the dispatch namespace, and the dispatcher's env."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import js
import workers

from localrt.ai import LocalAI, ai_binding
from localrt.d1 import D1Database
from localrt.devvars import read_dev_vars
from localrt.durable_objects import DurableObjects, durable_object_bindings
from localrt.dispatch import BindingsFactory, DispatchNamespace, Env, ExecutionContext, ScriptSpec
from localrt.kv import KVNamespace

DISPATCHER_VARS = {"PRIMARY_ZONE": "cozyartzmedia.com", "ROUTE_CACHE_TTL_SECONDS": "300"}


@dataclass
class StatePaths:
    """Where local state lives: all under one git-ignored folder (default `.local/`)."""

    root: Path

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def namespace(self) -> Path:
        return self.root / "namespace"

    @property
    def kv(self) -> Path:
        return self.root / "kv.sqlite"

    @property
    def dispatcher_secrets(self) -> Path:
        return self.secrets / "dispatcher.dev.vars"

    @property
    def generation(self) -> Path:
        """Touched by the control plane after a change; the platform then drops isolate caches."""
        return self.root / "generation"


@dataclass
class Platform:
    paths: StatePaths
    d1: Any
    kv: Any
    namespace: DispatchNamespace
    dispatcher_env: Env
    binding_providers: list[BindingsFactory] = field(default_factory=list)
    durable_objects: DurableObjects | None = None  # USAGE → UsageMeter for tenant scripts
    ai: LocalAI | None = None  # the AI binding every script gets
    _entry_cls: Any = None
    _generation: float = 0.0

    async def handle(self, request: js.Request) -> js.Response:
        """One request through the real dispatcher entry class, as the edge would send it."""
        if self._entry_cls is None:
            from dispatcher.entry import Default

            self._entry_cls = Default
        self._check_generation()
        if self.durable_objects is not None:
            self.durable_objects.ensure_started()  # re-arms persisted alarms on this loop
        ctx = ExecutionContext()
        response = await self._entry_cls(ctx, self.dispatcher_env).fetch(workers.Request(request))
        self.namespace.pending.update(ctx.tasks)
        return response.js_object

    def _check_generation(self) -> None:
        # Local stand-in for "a new isolate after a deploy or purge": one stat per request.
        try:
            mtime = self.paths.generation.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime != self._generation:
            self._generation = mtime
            self.restart_isolates()

    def restart_isolates(self) -> None:
        """Drop every in-isolate cache, as a redeploy or a new isolate would."""
        from dispatcher import app as dispatcher_app
        from tenant_worker import app as tenant_app

        dispatcher_app._dispatchers.clear()
        tenant_app._apps.clear()
        self.namespace._scripts.clear()

    async def drain(self) -> None:
        """Wait for waitUntil work (KV fills, flushes) still running."""
        while self.namespace.pending:
            await asyncio.gather(*list(self.namespace.pending), return_exceptions=True)
            self.namespace.pending = {t for t in self.namespace.pending if not t.done()}


def build_platform(state_dir: Path, d1_path: Path, *, extra_bindings: list[BindingsFactory] | None = None,
                   cpu_limit_scale: float | None = None) -> Platform:
    paths = StatePaths(Path(state_dir))
    paths.root.mkdir(parents=True, exist_ok=True)
    d1 = D1Database(d1_path)
    kv = KVNamespace(paths.kv)
    durable = DurableObjects(paths.root / "durable_objects", lambda name: namespace.env_of(name))
    ai = LocalAI()
    providers: list[BindingsFactory] = [durable_object_bindings(durable, {"USAGE": "UsageMeter"}), ai_binding(ai),
                                        *(extra_bindings or [])]

    def bindings(spec: ScriptSpec) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for provide in providers:
            out.update(provide(spec))
        return out

    namespace = DispatchNamespace(paths.namespace, paths.secrets, bindings=bindings, cpu_limit_scale=cpu_limit_scale)
    env = Env({**DISPATCHER_VARS, **read_dev_vars(paths.dispatcher_secrets),
               "DB": d1, "TENANT_CACHE": kv, "DISPATCHER": namespace})
    return Platform(paths, d1, kv, namespace, env, providers, durable_objects=durable, ai=ai)


def bump_generation(state_dir: Path) -> None:
    """Tell a running local platform (another process) to drop its isolate caches."""
    path = StatePaths(Path(state_dir)).generation
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(__import__("time").time_ns()))

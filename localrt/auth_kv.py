"""The tenant Workers' AUTH_KV binding on the local runtime (used OAuth states, session epochs).

On Cloudflare it is one KV namespace bound to every tenant script as AUTH_KV (keys start
with the tenant id); locally, one SQLite-backed KVNamespace shared by all tenant scripts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from localrt.dispatch import BindingsFactory, ScriptSpec
from localrt.kv import KVNamespace


def auth_kv_binding(path: Path | str) -> BindingsFactory:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    kv = KVNamespace(path)

    def provide(spec: ScriptSpec) -> dict[str, Any]:
        return {"AUTH_KV": kv} if spec.module.startswith("tenant_worker") else {}

    return provide

"""Importing the tenant Worker's modules on CPython, for tests that read their data.

Some modules import the runtime's `workers` package (Request/Response in tenant_worker.app,
`fetch` in shared.fetch_client, DurableObject in usage_meter), which exists only in Pyodide. The
code these tests run never touches those names, so a placeholder stands in for the import
and is removed again afterwards (nothing else in the session sees it).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


def import_worker_module(name: str) -> Any:
    if "workers" in sys.modules:
        return importlib.import_module(name)
    placeholder = types.ModuleType("workers")
    for attr in ("Request", "Response", "DurableObject", "WorkerEntrypoint"):
        setattr(placeholder, attr, type(attr, (), {}))
    placeholder.fetch = None  # type: ignore[attr-defined]
    sys.modules["workers"] = placeholder
    try:
        return importlib.import_module(name)
    finally:
        del sys.modules["workers"]

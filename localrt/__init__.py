"""The local runtime: runs the real Worker entry classes under CPython (dev and tests only).

Python Workers cannot run under wrangler on these machines (no Pyodide download), so this
package provides what the Workers import (`workers`, `js`, `pyodide.ffi`, with the real
SDK's call shapes, see localrt/shims) and the bindings they use, and serves HTTP on
127.0.0.1:8787. It is never part of an uploaded bundle (scripts/build_worker.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

SHIMS = Path(__file__).resolve().parent / "shims"


def install_shims() -> None:
    """Make `import workers`, `import js` and `import pyodide.ffi` resolve to the stand-ins."""
    path = str(SHIMS)
    if path not in sys.path:
        sys.path.insert(0, path)


install_shims()

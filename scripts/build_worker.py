#!/usr/bin/env python3
"""Stage exactly the modules a Worker ships, for wrangler's `[build] command`.

wrangler bundles every `*.py` under `base_dir`; pointing it at the repo root would upload
tests/, scripts/, the local runtime and node_modules' files. This copies the Worker's own
package and `shared/` (nothing else, no caches) into build/<worker>/, which the wrangler
config names as `base_dir`.

Usage: python3 scripts/build_worker.py dispatcher|tenant_worker
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"dispatcher": ("dispatcher", "shared"), "tenant_worker": ("tenant_worker", "shared")}


def build(worker: str) -> Path:
    out = ROOT / "build" / worker
    if out.exists():
        shutil.rmtree(out)
    for package in PACKAGES[worker]:
        shutil.copytree(
            ROOT / package, out / package,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"),
        )
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in PACKAGES:
        print(f"usage: {argv[0]} {'|'.join(PACKAGES)}", file=sys.stderr)
        return 2
    out = build(argv[1])
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.py"))
    print(f"staged {len(files)} modules for {argv[1]} in {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

#!/usr/bin/env python3
"""Build workerd's development Pyodide bundle (`pyodide_dev.capnp.bin`) offline.

workerd downloads released Pyodide bundles and checks them against hashes compiled into the
binary; only the development bundle (`python_workers_development` flag) is read from
`--pyodide-bundle-disk-cache-dir` unchecked. This script builds that bundle from npm's
`pyodide` package the way workerd's `src/pyodide/helpers.bzl` does: patch
`pyodide.asm.mjs` with workerd's substitutions, then `capnp eval` a `workerd.jsg.Bundle`
holding three internal modules. Cached: rebuilt only when the Pyodide version, the workerd
version or this script changes. Needs the `capnp` tool (Debian `capnproto`).

Usage: python3 scripts/build_pyodide_bundle.py [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / ".local" / "pyodide-bundle"
PYODIDE_DIR = ROOT / "node_modules" / "pyodide"
WORKERD_PACKAGE = ROOT / "node_modules" / "@cloudflare" / "workerd-linux-64" / "package.json"
BUNDLE_NAME = "pyodide_dev.capnp.bin"
STAMP_NAME = "pyodide_dev.stamp.json"
# The Pyodide release workerd 1.20261117.x expects as its "dev" bundle.
EXPECTED_PYODIDE = "314.0.6"

# Layout-compatible with workerd's src/workerd/jsg/modules.capnp (field ordinals and
# declaration order decide the binary layout; the file id does not).
BUNDLE_SCHEMA = """@0xd4c1f0a2b3e5f719;

struct Bundle {
  modules @0 :List(Module);
}

struct Module {
  name @0 :Text;
  union {
    src @1 :Data;
    wasm @4 :Data;
    data @5 :Data;
    json @6 :Text;
  }
  tsDeclaration @3 :Text;
  type @2 :ModuleType;
  compileCache @7 :Data;
}

enum ModuleType {
  bundle @0;
  builtin @1;
  internal @2;
}
"""

BUNDLE_CONST = """@0xe8a7c3d2f1b40a65;

using Modules = import "bundle_schema.capnp";

const pyodideRuntimeBundle :Modules.Bundle = (
  modules = [
    (name = "pyodideRuntime-internal:pyodide.asm", src = embed "pyodide.asm.mjs", type = internal),
    (name = "pyodideRuntime-internal:pyodide.asm.wasm", wasm = embed "pyodide.asm.wasm", type = internal),
    (name = "pyodideRuntime-internal:python_stdlib.zip", data = embed "python_stdlib.zip", type = internal)
  ]
);
"""

# workerd's prelude, minus `reportUndefinedSymbolsPatched`, which builtin_wrappers no
# longer exports in this workerd version.
PRELUDE = """
import {
    addEventListener,
    getRandomValues,
    location,
    monotonicDateNow,
    newWasmModule,
    patchedApplyFunc,
    patchedLoadLibData,
    wasmInstantiate,
    patched_PyEM_CountFuncParams,
} from "pyodide-internal:builtin_wrappers";
"""

_EVAL_ERROR = (
    "(() => {throw new Error('Internal Emscripten code tried to eval, this should not happen, "
    "please file a bug report with your requirements.txt file\\'s contents')})()"
)

# helpers.bzl's _REPLACEMENTS_COMMON + _REPLACEMENTS_COMMON_314, applied in order, each to
# every occurrence (Bazel expand_template semantics).
REPLACEMENTS: list[tuple[str, str]] = [
    ("new WebAssembly.Module", "newWasmModule"),
    ("WebAssembly.instantiate", "wasmInstantiate"),
    ("Date.now", "monotonicDateNow"),
    ("crypto.getRandomValues(", "getRandomValues(Module, "),
    ("eval(func)", _EVAL_ERROR),
    ("eval(data)", _EVAL_ERROR),
    ("eval(UTF8ToString(ptr))", _EVAL_ERROR),
    (
        "function loadLibData(){",
        """
        function loadLibData(){
            var libData = patchedLoadLibData(Module, libName, flags.rpath);
            return flags.loadAsync ? Promise.resolve(libData) : libData;
        }
        function dummiedOutOrigLoadLibData(){
        """,
    ),
    ("getMemory(", "Module.getMemoryPatched(Module, libName, "),
    (
        "function _PyEM_CountFuncParams(func){",
        "function _PyEM_CountFuncParams(func){ return patched_PyEM_CountFuncParams(Module, func);",
    ),
    (
        "var tableBase=metadata.tableSize?wasmTable.length:0;",
        "var tableBase=metadata.tableSize?wasmTable.length:0;"
        "Module.snapshotDebug && console.log('loadWebAssemblyModule', libName, memoryBase, tableBase);",
    ),
    (
        'console.error("Recursive call to fatal_error. Inner error was:");',
        'console.error("Recursive call to fatal_error. Inner error was:");\n'
        "try { API.on_fatal?.(e); } catch(e2) { console.error(e2); }\n",
    ),
    (
        "export default _createPyodideModule;",
        PRELUDE + "export default _createPyodideModule; export { _createPyodideModule };",
    ),
]
# Without these the module cannot load at all; the others may be absent in some builds.
REQUIRED = ("export default _createPyodideModule;", "function loadLibData(){", "getMemory(")


def package_version(package_json: Path) -> str:
    """Version field of an npm package.json."""
    return str(json.loads(package_json.read_text())["version"])


def script_hash() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def patch_asm(source: str) -> str:
    """Apply workerd's substitutions to Pyodide's Emscripten glue."""
    for old, new in REPLACEMENTS:
        if old in REQUIRED and old not in source:
            raise SystemExit(f"pyodide.asm.mjs lacks {old!r}: not the Pyodide workerd expects")
        source = source.replace(old, new)
    return source


def build(pyodide_dir: Path, bundle: Path, capnp: str) -> None:
    """Write the bundle to `bundle` (atomically)."""
    with tempfile.TemporaryDirectory(prefix="pyodide-bundle-") as tmp_name:
        tmp = Path(tmp_name)
        asm = (pyodide_dir / "pyodide.asm.mjs").read_text(encoding="utf-8")
        (tmp / "pyodide.asm.mjs").write_text(patch_asm(asm), encoding="utf-8")
        for name in ("pyodide.asm.wasm", "python_stdlib.zip"):
            (tmp / name).symlink_to((pyodide_dir / name).resolve())
        (tmp / "bundle_schema.capnp").write_text(BUNDLE_SCHEMA)
        (tmp / "bundle.capnp").write_text(BUNDLE_CONST)
        partial = bundle.with_name(bundle.name + ".partial")
        with partial.open("wb") as out:
            subprocess.run(
                [capnp, "eval", "bundle.capnp", "pyodideRuntimeBundle", "-o", "binary"],
                cwd=tmp,
                stdout=out,
                check=True,
            )
        os.replace(partial, bundle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument("--pyodide-dir", type=Path, default=PYODIDE_DIR)
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)

    capnp = shutil.which("capnp")
    if capnp is None:
        print("capnp not found: apt-get install -y capnproto", file=sys.stderr)
        return 1
    pyodide_version = package_version(args.pyodide_dir / "package.json")
    if pyodide_version != EXPECTED_PYODIDE:
        print(f"warning: pyodide {pyodide_version}, workerd expects {EXPECTED_PYODIDE}", file=sys.stderr)
    inputs = {
        "pyodide": pyodide_version,
        "workerd": package_version(WORKERD_PACKAGE) if WORKERD_PACKAGE.exists() else "unknown",
        "script_sha256": script_hash(),
    }
    out: Path = args.out.resolve()
    bundle, stamp = out / BUNDLE_NAME, out / STAMP_NAME
    if not args.force and bundle.exists() and stamp.exists():
        try:
            if json.loads(stamp.read_text()) == inputs:
                print(f"pyodide bundle up to date: {bundle}")
                return 0
        except ValueError:
            pass

    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    build(args.pyodide_dir, bundle, capnp)
    stamp.write_text(json.dumps(inputs, indent=2) + "\n")
    size_mb = bundle.stat().st_size / 1e6
    print(
        f"pyodide bundle built: {bundle} ({size_mb:.1f} MB, pyodide {pyodide_version}, "
        f"{time.monotonic() - started:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

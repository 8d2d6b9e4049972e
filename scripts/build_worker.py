#!/usr/bin/env python3
"""Stage exactly what a Worker uploads, for wrangler's `[build] command`.

wrangler bundles every `*.py` under `base_dir`, plus every file under `python_modules/`
beside the wrangler config (the repo root) as vendored packages. So this builds, per Worker:

  build/<worker>/src/<worker package>/   the Worker's own package (base_dir = build/<worker>/src)
  build/<worker>/src/shared/             the shared/ modules that package imports, transitively
  build/<worker>/python_modules/         the locked wheels those modules import, with their
                                         dependencies, unzipped (no __pycache__, tests, .pyi)
  python_modules -> build/<worker>/python_modules   (a symlink: wrangler reads it from the
                                         config's directory and refuses one inside base_dir)

Wheels come from worker-requirements.lock (pinned, sha256-hashed), downloaded once with pip
into .local/wheels/<hash of the lock>/ and hash-checked on every build, so rebuilds are
offline. Every import in a shipped module must be the standard library, the runtime's own
(`js`, `pyodide`), a staged project module or a locked package, else the build fails.

One checkout builds one Worker at a time: the root `python_modules` link names the Worker
built last, which is the one wrangler bundles right after its build step.

Usage: python3 scripts/build_worker.py dispatcher|tenant_worker
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "worker-requirements.lock"
WHEEL_CACHE = ROOT / ".local" / "wheels"
WORKERS = ("dispatcher", "tenant_worker")
PROJECT_PACKAGES = ("dispatcher", "tenant_worker", "shared")
DEV_ONLY = ("localrt", "controlplane", "tests", "scripts")
PLATFORM = ("pyemscripten_2026_0_wasm32", "any")  # Pyodide 314 (python_workers_20260610)
PYTHON_VERSION = "3.14"
# Modules the Workers runtime provides itself (Pyodide's FFI), and stdlib modules newer than
# the Python running this build.
RUNTIME_MODULES = frozenset({"js", "pyodide", "pyodide_js", "_pyodide"})
NEWER_STDLIB = frozenset({"annotationlib", "compression", "_interpreters", "_interpqueues", "_interpchannels"})


class BuildError(Exception):
    pass


# --- the lock ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Locked:
    name: str  # normalized
    version: str
    hashes: frozenset[str]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path = LOCK) -> list[Locked]:
    text = re.sub(r"\\\n", " ", path.read_text())
    entries = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *options = line.split()
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", spec)
        hashes = frozenset(o.removeprefix("--hash=sha256:") for o in options if o.startswith("--hash=sha256:"))
        if not m or not hashes:
            raise BuildError(f"{path.name}: every line must be NAME==VERSION --hash=sha256:…, got {line!r}")
        entries.append(Locked(normalize(m.group(1)), m.group(2), hashes))
    return entries


# --- the wheels -------------------------------------------------------------------------


@dataclass
class Wheel:
    locked: Locked
    path: Path
    top_level: set[str] = field(default_factory=set)
    requires: set[str] = field(default_factory=set)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def match_wheels(directory: Path, lock: list[Locked]) -> dict[str, Path] | None:
    """Each locked package's wheel in `directory` whose sha256 the lock names, or None if any is missing."""
    found: dict[str, Path] = {}
    files = sorted(directory.glob("*.whl")) if directory.is_dir() else []
    for entry in lock:
        for whl in files:
            dist, version = whl.name.split("-")[:2]
            if normalize(dist) == entry.name and version == entry.version and sha256(whl) in entry.hashes:
                found[entry.name] = whl
                break
        else:
            return None
    return found


def fetch_wheels(lock: list[Locked]) -> dict[str, Path]:
    """The locked wheels, from .local/wheels/<lock hash>/ (downloaded with pip when not there yet)."""
    cache = WHEEL_CACHE / hashlib.sha256(LOCK.read_bytes()).hexdigest()[:16]
    found = match_wheels(cache, lock)
    if found is not None:
        return found
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="download-", dir=WHEEL_CACHE))
    try:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--require-hashes",
            "-r",
            str(LOCK),
            "--no-deps",
            "--only-binary=:all:",
            *(a for p in PLATFORM for a in ("--platform", p)),
            "--python-version",
            PYTHON_VERSION,
            "--implementation",
            "cp",
            "-d",
            str(tmp),
        ]
        print(f"downloading {len(lock)} locked wheels into {cache.relative_to(ROOT)}", file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"pip download failed ({' '.join(cmd[:4])} …):\n{(proc.stderr or proc.stdout)[-2000:]}")
        found = match_wheels(tmp, lock)
        if found is None:
            raise BuildError(f"pip download did not produce every wheel {LOCK.name} names with its hash")
        for whl in tmp.iterdir():
            if whl not in found.values():
                whl.unlink()
        if cache.exists():
            shutil.rmtree(cache)
        tmp.rename(cache)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return {name: cache / whl.name for name, whl in found.items()}


def inspect_wheel(entry: Locked, path: Path) -> Wheel:
    wheel = Wheel(entry, path)
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            top = name.split("/")[0]
            if top.endswith((".dist-info", ".data")):
                if top.endswith(".dist-info") and name == f"{top}/METADATA":
                    for line in zf.read(name).decode().splitlines():
                        if line.startswith("Requires-Dist:"):
                            req, _, marker = line.removeprefix("Requires-Dist:").partition(";")
                            if "extra" not in marker:  # optional extras never ship
                                wheel.requires.add(normalize(re.split(r"[\s<>=!~\[(]", req.strip(), maxsplit=1)[0]))
                continue
            if "/" in name or name.endswith((".py", ".so")):
                wheel.top_level.add(top.split(".")[0])
    return wheel


def select(wheels: dict[str, Wheel], needed_modules: set[str]) -> list[Wheel]:
    by_module = {mod: w for w in wheels.values() for mod in w.top_level}
    todo = [by_module[m].locked.name for m in needed_modules]
    chosen: dict[str, Wheel] = {}
    while todo:
        name = todo.pop()
        if name in chosen:
            continue
        if name not in wheels:
            raise BuildError(f"{name} is required by a shipped package but missing from {LOCK.name}")
        chosen[name] = wheels[name]
        todo.extend(wheels[name].requires)
    return sorted(chosen.values(), key=lambda w: w.locked.name)


def skipped(member: str) -> bool:
    """Never shipped: bytecode caches, type stubs, a package's test suite."""
    parts = PurePosixPath(member).parts
    return (
        "__pycache__" in parts
        or member.endswith((".pyc", ".pyo", ".pyi"))
        or (not parts[0].endswith(".dist-info") and any(p in ("tests", "test") for p in parts[1:-1]))
    )


def unzip(wheel: Wheel, dest: Path) -> None:
    with zipfile.ZipFile(wheel.path) as zf:
        for info in zf.infolist():
            member = info.filename
            if info.is_dir() or skipped(member):
                continue
            if member.startswith("/") or ".." in PurePosixPath(member).parts:
                raise BuildError(f"{wheel.path.name}: unsafe path {member!r}")
            target = dest / member
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out)


# --- the project modules ----------------------------------------------------------------


def imports_of(path: Path, package: str) -> set[str]:
    """Absolute module names a file imports (`from a.b import c` also names a.b.c, maybe a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def module_file(module: str) -> Path | None:
    parts = module.split(".")
    for cand in (ROOT.joinpath(*parts).with_suffix(".py"), ROOT.joinpath(*parts) / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def project_closure(worker: str) -> tuple[set[Path], dict[str, set[str]]]:
    """The worker package's files plus the project modules they import, transitively, and the
    other top-level modules each of those imports (top-level name -> importing files)."""
    files: set[Path] = set()
    external: dict[str, set[str]] = {}
    todo = [p for p in (ROOT / worker).rglob("*.py") if "__pycache__" not in p.parts]
    while todo:
        path = todo.pop()
        if path in files:
            continue
        files.add(path)
        rel = path.relative_to(ROOT)
        module = ".".join(rel.with_suffix("").parts)
        package = module.removesuffix(".__init__") if path.name == "__init__.py" else module.rpartition(".")[0]
        parent = path.parent
        while parent != ROOT:  # the package's __init__ modules up to the top
            if (parent / "__init__.py").is_file():
                todo.append(parent / "__init__.py")
            parent = parent.parent
        for name in imports_of(path, package):
            top = name.split(".")[0]
            if top in DEV_ONLY:
                raise BuildError(f"{rel} imports {name}: dev-only code never ships")
            if top in PROJECT_PACKAGES:
                if top != "shared" and top != worker:
                    raise BuildError(f"{rel} imports {name}: another Worker's package")
                found = module_file(name)
                if found:
                    todo.append(found)
                elif not module_file(name.rpartition(".")[0] or name):
                    raise BuildError(f"{rel} imports {name}, which does not exist")
            elif top and top not in sys.stdlib_module_names and top not in NEWER_STDLIB and top not in RUNTIME_MODULES:
                external.setdefault(top, set()).add(rel.as_posix())
    return files, external


# --- the build --------------------------------------------------------------------------


def build(worker: str) -> Path:
    files, external = project_closure(worker)
    lock = read_lock()
    paths = fetch_wheels(lock)
    wheels = {e.name: inspect_wheel(e, paths[e.name]) for e in lock}
    provided = {mod for w in wheels.values() for mod in w.top_level}
    unknown = {m: sorted(f) for m, f in external.items() if m not in provided}
    if unknown:
        raise BuildError(f"imported but neither stdlib, runtime-provided nor in {LOCK.name}: {unknown}")
    chosen = select(wheels, set(external))

    out = ROOT / "build" / worker
    if out.exists():
        shutil.rmtree(out)
    for path in sorted(files):
        target = out / "src" / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    modules_dir = out / "python_modules"
    modules_dir.mkdir(parents=True)
    for wheel in chosen:
        unzip(wheel, modules_dir)
    link_python_modules(modules_dir)
    return out


def link_python_modules(target: Path) -> None:
    link = ROOT / "python_modules"
    if link.exists() and not link.is_symlink():
        raise BuildError(f"{link} is a real directory; remove it (the build makes it a link into build/)")
    tmp = ROOT / f".python_modules.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target.relative_to(ROOT), target_is_directory=True)
    os.replace(tmp, link)


def size(directory: Path) -> tuple[int, int]:
    files = [p for p in directory.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in WORKERS:
        print(f"usage: {argv[0]} {'|'.join(WORKERS)}", file=sys.stderr)
        return 2
    try:
        out = build(argv[1])
    except BuildError as exc:
        print(f"build_worker.py: error: {exc}", file=sys.stderr)
        return 1
    (n_src, b_src), (n_vendor, b_vendor) = size(out / "src"), size(out / "python_modules")
    dists = sorted(p.name.removesuffix(".dist-info") for p in (out / "python_modules").glob("*.dist-info"))
    print(
        f"staged {n_src} modules ({b_src / 1024:.0f} KiB) and {n_vendor} vendored files "
        f"({b_vendor / 1024:.0f} KiB: {', '.join(dists)}) for {argv[1]} in {out.relative_to(ROOT)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

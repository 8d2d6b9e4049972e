"""Both Worker bundles, built by wrangler for real (`deploy --dry-run --outdir --outfile`): each
holds the repo modules its entry imports, transitively, the locked packages they import
(python_modules/, pydantic_core's wasm extension included) and nothing dev-only, and is
deployed with the pinned runtime flags (issue #2)."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.wrangler import ROOT, dispatcher_deploy_command, tenant_deploy_command

SHIPPED = {"dispatcher": ("dispatcher", "shared"), "tenant": ("tenant_worker", "shared")}
NEVER = (
    "tests/",
    "localrt/",
    "scripts/",
    "controlplane/",
    "node_modules/",
    "migrations/",
    "supabase/",
    ".local/",
    ".wrangler/",
)
# Dev/test-only packages (pyproject's `dev` extra and friends): never in python_modules/.
DEV_PACKAGES = (
    "httpx",
    "httpcore",
    "uvicorn",
    "pytest",
    "_pytest",
    "pytest_asyncio",
    "hypothesis",
    "psycopg",
    "cryptography",
    "sniffio",
    "anyio",
    "h11",
    "localrt",
    "controlplane",
    "tests",
    "scripts",
)
RUNTIME_MODULES = {"js", "pyodide", "pyodide_js"}  # provided by the Workers runtime itself
PYDANTIC_CORE_SO = "python_modules/pydantic_core/_pydantic_core.cpython-314-wasm32-emscripten.so"
ENV = {
    "XDG_CONFIG_HOME": str(ROOT / ".local" / "xdg"),  # wrangler's logs stay in the project
    **os.environ,
    "CI": "true",
    "WRANGLER_SEND_METRICS": "false",
}


def wrangler(argv: list[str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def upload_form(path: Path) -> tuple[dict, set[str]]:
    """The metadata and module names of the multipart form `--outfile` saves: exactly what the upload sends."""
    data = path.read_bytes()
    boundary = data.split(b"\r\n", 1)[0]
    metadata, names = None, set()
    for part in data.split(boundary)[1:-1]:
        head, _, body = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]+)"', head).group(1).decode()
        if name == "metadata":
            metadata = json.loads(body.rstrip(b"\r\n"))
        else:
            names.add(name)
    assert metadata is not None, "no metadata part in the upload form"
    return metadata, names


def check_upload(out: Path, form: Path) -> dict:
    """The deployed runtime pins, and that --outdir holds exactly the uploaded modules."""
    metadata, names = upload_form(form)
    flags = metadata["compatibility_flags"]
    assert "python_workers" in flags and "python_workers_20260610" in flags, flags
    assert not any("development" in f for f in flags), f"a development flag would be deployed: {flags}"
    assert metadata["compatibility_date"] >= "2026-04-21"  # the vendored workers-runtime-sdk is used from here
    assert metadata["main_module"] == "entry.py"
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"README.md"}
    assert names == files, sorted(names ^ files)
    return metadata


def imported_modules(path: Path, package: str | None) -> set[str]:
    """Absolute module names a file imports (`from a.b import c` also names a.b.c, maybe a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level and package:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def module_file(bundle: Path, module: str) -> Path | None:
    parts = module.split(".")
    for cand in (bundle.joinpath(*parts).with_suffix(".py"), bundle.joinpath(*parts) / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def vendored(bundle: Path, module: str) -> bool:
    """A top-level module that python_modules/ provides."""
    base = bundle / "python_modules" / module
    return (
        (base / "__init__.py").is_file() or base.with_suffix(".py").is_file() or any(base.parent.glob(f"{module}.*.so"))
    )


def check_bundle(bundle: Path, packages: tuple[str, ...]) -> set[str]:
    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    leaked = sorted(f for f in files if f.startswith(NEVER) or ".dev.vars" in f or f.endswith(".sqlite"))
    assert not leaked, f"dev-only files in the bundle: {leaked}"
    assert all(f.split("/")[0] in (*packages, "python_modules") or "/" not in f for f in files), sorted(files)
    vendor = [f.removeprefix("python_modules/") for f in files if f.startswith("python_modules/")]
    dev = sorted(
        f
        for f in vendor
        if re.split(r"[/.-]", f)[0] in DEV_PACKAGES
        or "__pycache__/" in f
        or f.endswith((".pyc", ".pyi"))
        or "/tests/" in f
    )
    assert not dev, f"dev-only files in the bundle: {dev}"

    seen: set[str] = set()
    todo = [(bundle / "entry.py", None)]
    while todo:
        path, pkg = todo.pop()
        for name in imported_modules(path, pkg):
            top = name.split(".")[0]
            assert top not in ("localrt", "controlplane", "tests", "scripts"), f"{path.name} imports {name}"
            if top not in packages:
                assert not top or top in sys.stdlib_module_names or top in RUNTIME_MODULES or vendored(bundle, top), (
                    f"{name} (imported by {path.relative_to(bundle)}) is not shipped"
                )
                continue
            if name in seen:
                continue
            found = module_file(bundle, name)
            parent_found = module_file(bundle, name.rsplit(".", 1)[0]) if "." in name else None
            assert found or parent_found, f"{name} (imported by {path.relative_to(bundle)}) is missing from the bundle"
            if found:
                seen.add(name)
                is_pkg = found.name == "__init__.py"
                todo.append((found, name if is_pkg else name.rsplit(".", 1)[0]))
    return seen


def test_dispatcher_bundle(tmp_path: Path) -> None:
    out, form = tmp_path / "dispatcher", tmp_path / "dispatcher.form"
    wrangler([*dispatcher_deploy_command(outdir=str(out)), "--outfile", str(form)])
    seen = check_bundle(out, SHIPPED["dispatcher"])
    assert {"dispatcher.app", "shared.context", "shared.hosts", "shared.models"} <= seen
    check_upload(out, form)
    assert (out / "python_modules" / "workers" / "__init__.py").is_file()  # workers-runtime-sdk
    # It imports only the stdlib, the SDK and shared/'s stdlib modules: no pydantic, no pydantic-importing modules.
    assert not vendored(out, "pydantic") and not vendored(out, "pydantic_core")
    assert not (out / "shared" / "jwt.py").exists()


def test_tenant_bundle_with_the_cli_deploy_command(tmp_path: Path) -> None:
    """The exact command `tenants.py deploy` builds (vars, secrets file), run with wrangler's --dry-run."""
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"TENANT_CONTEXT_KEY": "k" * 64, "SESSION_SECRET": "s"}))
    out = tmp_path / "tenant"
    form = tmp_path / "tenant.form"
    proc = wrangler(
        [
            *tenant_deploy_command("cmgsite-acme", {"TENANT_ID": "acme"}, secrets_file=str(secrets), outdir=str(out)),
            "--outfile",
            str(form),
        ]
    )
    assert "[custom build] Running: python3 scripts/build_worker.py tenant_worker" in proc.stdout
    assert "--dry-run: exiting now." in proc.stdout
    for binding in ("env.TENANT_ID", "env.TENANT_CONTEXT_KEY", "env.USAGE (UsageMeter)"):
        assert binding in proc.stdout
    assert "k" * 64 not in proc.stdout  # wrangler hides values; we never print them either
    seen = check_bundle(out, SHIPPED["tenant"])
    assert {"tenant_worker.app", "shared.context", "shared.models"} <= seen
    metadata = check_upload(out, form)
    assert {"name": "TENANT_ID", "type": "plain_text", "text": "acme"} in metadata["bindings"]
    assert (out / PYDANTIC_CORE_SO).is_file()  # the cp314 pyemscripten wheel's extension module
    assert (out / "python_modules" / "workers" / "__init__.py").is_file()
    for package in ("pydantic", "pydantic_core", "typing_extensions", "annotated_types", "typing_inspection"):
        assert vendored(out, package), package


def test_vendored_packages_are_the_locked_ones(tmp_path: Path) -> None:
    """What the build unzips is exactly worker-requirements.lock's versions (hash-checked by the build),
    and pydantic's own pin on pydantic-core agrees with the lock."""
    proc = subprocess.run(
        [sys.executable, "scripts/build_worker.py", "tenant_worker"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lock = dict(re.findall(r"^([a-z0-9-]+)==(\S+)", (ROOT / "worker-requirements.lock").read_text(), re.M))
    modules = ROOT / "build" / "tenant_worker" / "python_modules"
    shipped = {}
    for info in modules.glob("*.dist-info"):
        name, version = info.name.removesuffix(".dist-info").rsplit("-", 1)
        shipped[name.replace("_", "-").lower()] = version
    assert shipped == lock
    pydantic_meta = next(modules.glob("pydantic-*.dist-info")).joinpath("METADATA").read_text()
    assert f"Requires-Dist: pydantic-core=={lock['pydantic-core']}" in pydantic_meta


def test_bundle_check_catches_a_dev_module(tmp_path: Path) -> None:
    """The checker itself: a bundle with localrt/ in it, or missing a shared module, fails."""
    bundle = tmp_path / "b"
    (bundle / "shared").mkdir(parents=True)
    (bundle / "entry.py").write_text("from shared.hosts import normalize_host\n")
    with pytest.raises(AssertionError, match="shared.hosts"):
        check_bundle(bundle, ("dispatcher", "shared"))
    (bundle / "shared" / "hosts.py").write_text("import pydantic\n")
    with pytest.raises(AssertionError, match="pydantic .* is not shipped"):
        check_bundle(bundle, ("dispatcher", "shared"))
    (bundle / "python_modules" / "pydantic").mkdir(parents=True)
    (bundle / "python_modules" / "pydantic" / "__init__.py").write_text("")
    check_bundle(bundle, ("dispatcher", "shared"))
    (bundle / "python_modules" / "httpx").mkdir()
    (bundle / "python_modules" / "httpx" / "__init__.py").write_text("")
    with pytest.raises(AssertionError, match="dev-only"):
        check_bundle(bundle, ("dispatcher", "shared"))
    (bundle / "python_modules" / "httpx" / "__init__.py").unlink()
    (bundle / "localrt").mkdir()
    (bundle / "localrt" / "kv.py").write_text("")
    with pytest.raises(AssertionError, match="dev-only"):
        check_bundle(bundle, ("dispatcher", "shared"))

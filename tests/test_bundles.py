"""Both Worker bundles, built by wrangler for real (`deploy --dry-run --outdir`): each holds the
repo modules its entry imports, transitively, and nothing dev-only (issue #2)."""
from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path

import pytest

from controlplane.wrangler import ROOT, dispatcher_deploy_command, tenant_deploy_command

SHIPPED = {"dispatcher": ("dispatcher", "shared"), "tenant": ("tenant_worker", "shared")}
NEVER = ("tests/", "localrt/", "scripts/", "controlplane/", "node_modules/", "migrations/", ".local/", ".wrangler/")
ENV = {**os.environ, "CI": "true", "WRANGLER_SEND_METRICS": "false"}


def wrangler(argv: list[str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


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


def check_bundle(bundle: Path, packages: tuple[str, ...]) -> set[str]:
    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    leaked = sorted(f for f in files if f.startswith(NEVER) or ".dev.vars" in f or f.endswith(".sqlite"))
    assert not leaked, f"dev-only files in the bundle: {leaked}"
    assert all(f.split("/")[0] in packages or "/" not in f for f in files), sorted(files)

    seen: set[str] = set()
    todo = [(bundle / "entry.py", None)]
    while todo:
        path, pkg = todo.pop()
        for name in imported_modules(path, pkg):
            top = name.split(".")[0]
            assert top not in ("localrt", "controlplane", "tests", "scripts"), f"{path.name} imports {name}"
            if top not in packages or name in seen:
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
    out = tmp_path / "dispatcher"
    wrangler(dispatcher_deploy_command(outdir=str(out)))
    seen = check_bundle(out, SHIPPED["dispatcher"])
    assert {"dispatcher.app", "shared.context", "shared.hosts", "shared.models"} <= seen


def test_tenant_bundle_with_the_cli_deploy_command(tmp_path: Path) -> None:
    """The exact command `tenants.py deploy` builds (vars, secrets file), run with wrangler's --dry-run."""
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"TENANT_CONTEXT_KEY": "k" * 64, "SESSION_SECRET": "s"}))
    out = tmp_path / "tenant"
    proc = wrangler(tenant_deploy_command("cmgsite-acme", {"TENANT_ID": "acme", "TENANT_TYPE": "custom-domain",
                                                           "PRIMARY_TENANT_ID": "cozyartz"},
                                          secrets_file=str(secrets), outdir=str(out)))
    assert "--dry-run: exiting now." in proc.stdout
    for binding in ("env.TENANT_ID", "env.TENANT_TYPE", "env.TENANT_CONTEXT_KEY", "env.USAGE (UsageMeter)"):
        assert binding in proc.stdout
    assert "k" * 64 not in proc.stdout  # wrangler hides values; we never print them either
    seen = check_bundle(out, SHIPPED["tenant"])
    assert {"tenant_worker.app", "shared.context", "shared.models"} <= seen


def test_bundle_check_catches_a_dev_module(tmp_path: Path) -> None:
    """The checker itself: a bundle with localrt/ in it, or missing a shared module, fails."""
    bundle = tmp_path / "b"
    (bundle / "shared").mkdir(parents=True)
    (bundle / "entry.py").write_text("from shared.hosts import normalize_host\n")
    with pytest.raises(AssertionError, match="shared.hosts"):
        check_bundle(bundle, ("dispatcher", "shared"))
    (bundle / "shared" / "hosts.py").write_text("")
    (bundle / "localrt").mkdir()
    (bundle / "localrt" / "kv.py").write_text("")
    with pytest.raises(AssertionError, match="dev-only"):
        check_bundle(bundle, ("dispatcher", "shared"))

"""The `workers` stand-in keeps the real SDK's public names and call shapes.

The real package (workers-runtime-sdk, fetched by scripts/bootstrap.sh into .local/sdk)
imports `js` and so cannot be imported under CPython: we read its source with `ast`.
"""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import workers as shim

SDK = Path(__file__).resolve().parent.parent / ".local" / "sdk" / "workers"
# FetchResponse's base in the real SDK is pyodide.http.FetchResponse, outside the package.
PYODIDE_FETCH_RESPONSE = {"__init__", "status", "status_text", "ok", "url", "headers", "body_used", "text", "bytes",
                          "buffer", "json", "clone", "js_response", "_raise_if_failed"}


def _sdk_tree() -> dict[str, ast.Module]:
    if not (SDK / "__init__.py").exists():
        pytest.fail("real SDK source missing: run scripts/bootstrap.sh")
    return {p.stem: ast.parse(p.read_text()) for p in SDK.glob("*.py")}


def _sdk_classes() -> dict[str, ast.ClassDef]:
    return {n.name: n for tree in _sdk_tree().values() for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}


def _sdk_functions(module: str) -> dict[str, ast.AsyncFunctionDef | ast.FunctionDef]:
    out = {}
    for tree in [_sdk_tree()[module]]:
        for n in tree.body:
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out[n.name] = n
    return out


def _ast_params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args]
    if a.vararg:
        names.append("*" + a.vararg.arg)
    names += [x.arg for x in a.kwonlyargs]
    if a.kwarg:
        names.append("**" + a.kwarg.arg)
    return names


def _py_params(fn: object) -> list[str]:
    out = []
    for p in inspect.signature(fn).parameters.values():  # type: ignore[arg-type]
        prefix = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}.get(p.kind, "")
        out.append(prefix + p.name)
    return out


def _methods(cls: ast.ClassDef) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    return {n.name: n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_every_public_name_of_the_stand_in_exists_in_the_sdk() -> None:
    init = _sdk_tree()["__init__"]
    real_all = next(ast.literal_eval(n.value) for n in init.body
                    if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "__all__")
    missing = [name for name in shim.__all__ if name not in real_all]
    assert not missing, f"stand-in exports names the SDK does not: {missing}"


@pytest.mark.parametrize("name", ["WorkerEntrypoint", "DurableObject", "Request", "Response", "FetchResponse"])
def test_class_methods_match_the_sdk(name: str) -> None:
    real_cls = _sdk_classes()[name]
    real = _methods(real_cls)
    if name == "Response":
        real = {**_methods(_sdk_classes()["FetchResponse"]), **real}
    ours = {k: v for k, v in vars(getattr(shim, name)).items() if callable(v) or isinstance(v, (property, staticmethod))}
    for method, obj in ours.items():
        if method.startswith("_") and method != "__init__":  # private helpers are ours
            continue
        if method not in real:
            assert method in PYODIDE_FETCH_RESPONSE and "FetchResponse" in name + "FetchResponse", f"{name}.{method} is not in the SDK"
            continue
        if isinstance(obj, property):
            continue
        fn = obj.__func__ if isinstance(obj, staticmethod) else obj
        assert _py_params(fn) == _ast_params(real[method]), f"{name}.{method} signature differs from the SDK"


def test_fetch_signature_matches_the_sdk() -> None:
    assert _py_params(shim.fetch) == _ast_params(_sdk_functions("fetch")["fetch"])


def test_sdk_relies_only_on_ffi_names_the_stand_in_has() -> None:
    import pyodide.ffi as ffi

    used: set[str] = set()
    for tree in _sdk_tree().values():
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.module == "pyodide.ffi":
                used |= {a.name for a in n.names}
    ours = {"JsException", "JsProxy", "to_js", "create_proxy"}
    assert ours <= used, "stand-in offers ffi names the SDK does not use"
    for name in ours:
        assert hasattr(ffi, name)


def test_env_bindings_are_wrapped_as_the_sdk_wraps_them() -> None:
    # The SDK wraps D1/KV/DO/Fetcher bindings; dispatch namespaces are left raw (our adapter's reason to exist).
    rpc = (SDK / "rpc.py").read_text()
    for binding in ("D1Database", "KvNamespace", "DurableObjectNamespace", "Fetcher"):
        assert binding in rpc
    assert "DispatchNamespace" not in rpc

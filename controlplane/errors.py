"""Control-plane failures, each with the exit code the CLI returns for it."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # a backend failed part-way: re-running the same command completes it
EXIT_REFUSED = 2  # bad input or a refused action: nothing was written
EXIT_DRIFT = 3  # verify found Supabase, D1, KV and the namespace disagreeing
EXIT_CONFIG = 4  # credentials or local state missing


class ControlPlaneError(Exception):
    exit_code = EXIT_FAILED


class Refused(ControlPlaneError):
    """The operator asked for something invalid or unsafe; nothing was written."""

    exit_code = EXIT_REFUSED


class NotFound(Refused):
    """No such tenant (or domain)."""


class ConfigError(ControlPlaneError):
    """A credential, an environment variable or the local state is missing."""

    exit_code = EXIT_CONFIG


class BackendError(ControlPlaneError):
    """Supabase, D1, KV, wrangler or Cloudflare's API failed; re-run to complete."""

    exit_code = EXIT_FAILED

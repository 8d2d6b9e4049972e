"""`.dev.vars` files: KEY=VALUE lines, the format wrangler reads for local secrets."""

from __future__ import annotations

import os
from pathlib import Path


def read_dev_vars(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def write_dev_vars(path: Path, values: dict[str, str]) -> None:
    """Write owner-only (0600): these hold secrets."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# Local secrets (git-ignored). See README: Local secrets.\n")
        for key, value in sorted(values.items()):
            f.write(f"{key}={value}\n")
    os.replace(tmp, path)

"""The local dispatch namespace's registry: one file per uploaded tenant script.

`<namespace>/<script>.json` holds the script's vars (what `wrangler deploy
--dispatch-namespace cmgsite-tenants --name <script> --var ...` uploads); its secrets live in
`<secrets>/<script>.dev.vars`, owner-only. The platform host (localrt/node/host.mjs) watches
these files: a new or changed script starts (or restarts) on workerd, a removed one stops.
Plain files, so the tenant CLI, the run command and the tests all write the same thing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localrt.devvars import read_dev_vars, write_dev_vars


@dataclass
class ScriptSpec:
    name: str
    vars: dict[str, str] = field(default_factory=dict)
    bundle: str | None = None  # None: the tenant Worker; else a bundle the host config names (tests)

    def to_json(self) -> str:
        data: dict[str, Any] = {"name": self.name, "vars": self.vars}
        if self.bundle:
            data["bundle"] = self.bundle
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ScriptSpec":
        d = json.loads(text)
        return cls(d["name"], {str(k): str(v) for k, v in dict(d.get("vars", {})).items()}, d.get("bundle"))


class NamespaceRegistry:
    def __init__(self, registry_dir: Path, secrets_dir: Path) -> None:
        self.registry_dir, self.secrets_dir = Path(registry_dir), Path(secrets_dir)
        self.registry_dir.mkdir(parents=True, exist_ok=True)

    def spec_path(self, name: str) -> Path:
        return self.registry_dir / f"{name}.json"

    def secrets_path(self, name: str) -> Path:
        return self.secrets_dir / f"{name}.dev.vars"

    def deploy(self, spec: ScriptSpec, secrets: dict[str, str] | None = None) -> None:
        """Upload (or replace) a script; secrets first, so the host never starts it without them."""
        if secrets is not None:
            write_dev_vars(self.secrets_path(spec.name), secrets)
        path = self.spec_path(spec.name)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(spec.to_json())
        os.replace(tmp, path)

    def remove(self, name: str) -> bool:
        try:
            self.spec_path(name).unlink()
            return True
        except FileNotFoundError:
            return False

    def get(self, name: str) -> ScriptSpec | None:
        try:
            return ScriptSpec.from_json(self.spec_path(name).read_text())
        except FileNotFoundError:
            return None

    def secrets_of(self, name: str) -> dict[str, str]:
        return read_dev_vars(self.secrets_path(name))

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.registry_dir.glob("*.json"))

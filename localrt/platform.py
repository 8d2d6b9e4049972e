"""Where the local platform keeps its state: one git-ignored folder (default `.local/`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from localrt.namespace import NamespaceRegistry


@dataclass
class StatePaths:
    root: Path

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def namespace(self) -> Path:
        return self.root / "namespace"

    @property
    def dispatcher_secrets(self) -> Path:
        return self.secrets / "dispatcher.dev.vars"

    @property
    def platform_secrets(self) -> Path:
        """The platform's keyrings: PLATFORM_DATA_KEYS, SUPABASE_JWT_KEYS (controlplane.keys)."""
        return self.secrets / "platform.dev.vars"

    def registry(self) -> NamespaceRegistry:
        return NamespaceRegistry(self.namespace, self.secrets)

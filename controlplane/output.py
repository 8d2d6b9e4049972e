"""Progress lines for the operator (stderr) and the dry-run plan (stdout)."""
from __future__ import annotations

import sys
from typing import TextIO


class Reporter:
    """Progress goes to stderr so stdout stays clean for --json; the dry-run plan goes to stdout."""

    def __init__(self, *, out: TextIO | None = None, err: TextIO | None = None, quiet: bool = False) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.quiet = quiet
        self.planned: list[str] = []

    def step(self, message: str) -> None:
        if not self.quiet:
            print(f"  - {message}", file=self.err, flush=True)

    def done(self, message: str) -> None:
        if not self.quiet:
            print(f"ok: {message}", file=self.err, flush=True)

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=self.err, flush=True)

    def plan(self, kind: str, text: str) -> None:
        """One action dry-run would take, exactly as it would be sent (never a secret value)."""
        line = f"[dry-run] {kind}: {text}"
        self.planned.append(line)
        print(line, file=self.out, flush=True)

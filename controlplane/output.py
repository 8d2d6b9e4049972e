"""Progress lines for the operator (stderr) and the dry-run plan (stdout).

A dry run never speaks in the past tense: every plan line and every write step says what
*would* happen ("[dry-run] supabase: would PATCH …", "  - d1: would route acme …"), and the
CLI ends it with "dry run: nothing changed". `writes_started` counts the write steps a real
run announced, so the CLI can tell a failure before any write ("nothing was changed") from
one part-way ("the change is incomplete: re-run"); `last_step` names where an interrupt hit.
"""

from __future__ import annotations

import re
import sys
from typing import TextIO

_KIND = re.compile(r"^([^:]{1,120}): (.+)$", re.S)


def would(text: str) -> str:
    """`text` as what would happen: "would " in front unless it says so already."""
    return text if text.startswith("would ") else f"would {text}"


class Reporter:
    """Progress goes to stderr so stdout stays clean for --json; the dry-run plan goes to stdout."""

    def __init__(
        self, *, out: TextIO | None = None, err: TextIO | None = None, quiet: bool = False, dry_run: bool = False
    ) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.quiet = quiet
        self.dry_run = dry_run
        self.planned: list[str] = []
        self.plan_out = self.out  # with --json the plan goes to stderr (stdout holds the JSON only)
        self.writes_started = 0  # write steps a real run announced (a failure after one is part-way)
        self.last_step: str | None = None  # the last step announced (what an interrupt stopped after)

    def step(self, message: str, *, read: bool = False) -> None:
        """A step of the command: a write (in a dry run said as what would happen) or, with
        `read`, a read or a note, said as it is."""
        if not read:
            if self.dry_run:
                m = _KIND.match(message)
                message = f"{m.group(1)}: {would(m.group(2))}" if m else would(message)
            else:
                self.writes_started += 1
        self.last_step = message
        if not self.quiet:
            print(f"  - {message}", file=self.err, flush=True)

    def done(self, message: str) -> None:
        if not self.quiet:
            print(f"ok: {message}", file=self.err, flush=True)

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=self.err, flush=True)

    def plan(self, kind: str, text: str) -> None:
        """One action dry-run would take, exactly as it would be sent (never a secret value)."""
        text = " ".join(part.strip() for part in text.splitlines()) if "\n" in text else text  # one action, one line
        line = f"[dry-run] {kind}: {would(text)}"
        self.planned.append(line)
        self.last_step = line
        print(line, file=self.plan_out, flush=True)

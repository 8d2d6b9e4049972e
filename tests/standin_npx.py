"""A stand-in for `npx` on PATH: records each wrangler command and plays Cloudflare's part.

Installed by tests as an `npx` executable. Appends every argv as one JSON line to $NPX_LOG
(secrets files are recorded by their key names only), and:
  wrangler d1 execute cmgsite --remote --json ... --command SQL
      runs SQL on the SQLite file $NPX_D1 (a migrated D1), printing wrangler's JSON result
  wrangler dispatch-namespace get|create NAME   exists iff created (state in $NPX_STATE)
  wrangler deploy --dispatch-namespace NS --name SCRIPT ...
      uploads the script to the fake Cloudflare API ($FAKE_CF_URL) so the API sees it
Anything else exits 0 after recording. $NPX_FAIL (a substring of the command) makes it fail.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import urllib.request
from pathlib import Path


def main(argv: list[str]) -> int:
    record: dict[str, object] = {"argv": argv}
    if "--secrets-file" in argv:
        path = Path(argv[argv.index("--secrets-file") + 1])
        record["secret_keys"] = sorted(json.loads(path.read_text())) if path.exists() else None
        record["secrets_file_mode"] = oct(path.stat().st_mode & 0o777) if path.exists() else None
    with open(os.environ["NPX_LOG"], "a") as log:
        log.write(json.dumps(record) + "\n")
    if os.environ.get("NPX_FAIL") and os.environ["NPX_FAIL"] in " ".join(argv):
        print("✘ [ERROR] injected failure", file=sys.stderr)
        return 1
    args = argv[2:] if argv[:2] == ["--no-install", "wrangler"] else argv[1:]
    if args[:2] == ["d1", "execute"]:
        return d1_execute(args[args.index("--command") + 1])
    if args[:1] == ["dispatch-namespace"]:
        marker = Path(os.environ["NPX_STATE"]) / f"namespace-{args[2]}"
        if args[1] == "get":
            if not marker.exists():
                print(
                    "✘ [ERROR] A request to the Cloudflare API failed. namespace not found [code: 100119]",
                    file=sys.stderr,
                )
                return 1
            print(json.dumps({"namespace_name": args[2]}))
            return 0
        if args[1] == "create":
            marker.touch()
            print(f'Created dispatch namespace "{args[2]}"')
            return 0
    if args[:1] == ["deploy"] and "--dispatch-namespace" in args:
        ns, name = args[args.index("--dispatch-namespace") + 1], args[args.index("--name") + 1]
        url = f"{os.environ['FAKE_CF_URL']}/accounts/{os.environ['FAKE_CF_ACCOUNT']}/workers/dispatch/namespaces/{ns}/scripts/{name}"
        req = urllib.request.Request(
            url,
            method="PUT",
            data=b"{}",
            headers={"authorization": f"Bearer {os.environ['FAKE_CF_TOKEN']}", "content-type": "application/json"},
        )
        urllib.request.urlopen(req).read()
    return 0


def d1_execute(sql: str) -> int:
    conn = sqlite3.connect(os.environ["NPX_D1"], isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        try:
            rows = [dict(r) for r in conn.execute(sql).fetchall()]
        except sqlite3.ProgrammingError:  # several statements: run them as one batch, as D1 does
            conn.executescript("BEGIN; " + sql + "; COMMIT;")
            rows = []
    except sqlite3.Error as exc:
        print(f"✘ [ERROR] D1_ERROR: {exc}", file=sys.stderr)
        return 1
    print(json.dumps([{"results": rows, "success": True, "meta": {"duration": 0}}], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Python memory snapshots on the local platform (localrt/node/host.mjs): the first start of a
bundle saves one, later starts restore it, and a snapshot that does not restore (cut short,
corrupted, from another workerd build) is replaced instead of keeping the Worker down."""

from __future__ import annotations

from pathlib import Path

import httpx

from localrt.__main__ import dispatcher_vars
from localrt.d1 import apply_migrations_with_wrangler
from localrt.devvars import write_dev_vars
from localrt.platform import StatePaths
from localrt.workerd import WorkerdHost
from shared.keys import new_secret
from tests.support import free_port


def _serve_once(work: Path, snapshots: Path) -> dict[str, object]:
    """Start the platform (no tenants: the dispatcher alone), ask it once, stop it."""
    paths = StatePaths(work / "state")
    paths.registry()
    if not paths.dispatcher_secrets.exists():  # what `python -m localrt run` writes once
        write_dev_vars(paths.dispatcher_secrets, {"CONTEXT_SIGNING_SECRET": new_secret()})
    host = WorkerdHost(
        paths.namespace,
        paths.secrets,
        work / "wrangler",
        paths.root,
        port=free_port(),
        dispatcher_vars=dispatcher_vars(),
        python_snapshot_dir=snapshots,
    )
    host.start(build=False)
    try:
        r = httpx.get(host.url + "/api/health", headers={"Host": "nobody.example"}, timeout=30)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        return next(e for e in host.events if e.get("event") == "ready")
    finally:
        host.stop()


def test_snapshot_is_saved_restored_and_a_corrupt_one_replaced(tmp_path: Path) -> None:
    apply_migrations_with_wrangler(tmp_path / "wrangler")
    snapshots = tmp_path / "snapshots"
    _serve_once(tmp_path, snapshots)
    saved = list(snapshots.glob("*/snapshot.bin"))
    assert len(saved) == 1 and saved[0].stat().st_size > 1_000_000  # the dispatcher's Python heap

    _serve_once(tmp_path, snapshots)  # restored: the same file, untouched
    assert list(snapshots.glob("*/snapshot.bin")) == saved

    saved[0].write_bytes(b"\0" * 4096)  # cut short / corrupted
    _serve_once(tmp_path, snapshots)  # still serves, and writes a good snapshot again
    assert saved[0].stat().st_size > 1_000_000

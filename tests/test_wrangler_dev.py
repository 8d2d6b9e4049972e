"""The product document's local line: `wrangler dev` serves a tenant Worker on this machine
(offline, through scripts/wrangler-dev.sh: the same config and bundle, the local-only flags)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx

from localrt.workerd import ROOT
from shared.keys import new_secret
from tests.support import free_port


def test_wrangler_dev_serves_the_tenant_worker_offline() -> None:
    port = free_port()
    # The settings a tenant Worker refuses to start without (tenant_worker/config.py), as a
    # developer's .dev.vars would hold them; passed as --var so no file in the repo is touched.
    settings = {
        "TENANT_ID": "partner1",
        "TENANT_CONTEXT_KEY": new_secret(),
        "SESSION_SECRET": new_secret(48),
        "SUPABASE_URL": "http://127.0.0.1:9",
        "SUPABASE_ANON_KEY": "anon",
        "SUPABASE_JWT_SECRET": new_secret(48),
        "SUPABASE_SERVICE_ROLE_KEY": "service",
    }
    argv = [arg for name, value in settings.items() for arg in ("--var", f"{name}:{value}")]
    proc = subprocess.Popen(
        ["bash", "scripts/wrangler-dev.sh", "tenant", *argv],
        cwd=ROOT,
        env={**os.environ, "WRANGLER_DEV_PORT": str(port), "CI": "true"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline, r = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                r = httpx.get(
                    f"http://127.0.0.1:{port}/api/health", headers={"Host": "partner1.cozyartzmedia.com"}, timeout=10
                )
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        assert r is not None, proc.stdout.read().decode(errors="replace")[-2000:] if proc.stdout else ""
        # The real tenant Worker answered: without the dispatcher's signed context it refuses.
        assert r.status_code == 403 and r.json()["error"]["message"] == "Request did not come through the platform."
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)

"""A tenant's files go with the tenant: `tenants.py delete` erases its R2 objects (and only
its own) from the bucket every tenant shares, locally (the running platform's Miniflare R2)
and on Cloudflare (the R2 object API, against the fake Cloudflare API); `export` counts them."""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import sqlite3
from typing import Any

from controlplane.cloudflare import CloudflareApi, connect
from controlplane.edges import R2_BUCKET, CloudflareRuntimeData, miniflare_object_id
from scripts.tenants import main
from tests.fake_cloudflare import FakeCloudflare
from tests.support import Platform
from tests.test_files_http import download, names, upload
from tests.usage_support import usage_tenant


def bucket_keys(platform: Platform) -> list[str]:
    """Every key in the local bucket, read from Miniflare's own table (read-only)."""
    v3 = platform.wrangler_state / "v3"
    db = v3 / "r2" / "miniflare-R2BucketObject" / f"{miniflare_object_id('miniflare-R2BucketObject', R2_BUCKET)}.sqlite"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [k for (k,) in conn.execute("SELECT key FROM _mf_objects ORDER BY key")]


def cli(platform: Platform, stack: Any, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = {"SUPABASE_URL": stack.url, "SUPABASE_SERVICE_ROLE_KEY": stack.service_role_key}
    code = main(
        [*argv, "--state-dir", str(platform.paths.root), "--wrangler-state", str(platform.wrangler_state)],
        env=env,
        stdin=io.StringIO(""),
        stdout=out,
        stderr=err,
    )
    return code, out.getvalue(), err.getvalue()


def test_delete_erases_the_tenants_files_and_only_its_own(
    platform: Platform, pg_cluster: Any, supabase_stack: Any
) -> None:
    with usage_tenant(platform, pg_cluster) as gone, usage_tenant(platform, pg_cluster) as neighbour:
        for name in ("a.txt", "docs/b.pdf", "docs/c/d.bin"):
            assert upload(gone, name, secrets.token_bytes(300)).status_code == 201
        kept = secrets.token_bytes(200)
        assert upload(neighbour, "a.txt", kept).status_code == 201
        assert sum(k.startswith(f"tenants/{gone.tenant_id}/") for k in bucket_keys(platform)) == 3

        code, out, err = cli(platform, supabase_stack, "export", gone.tenant_id)
        assert code == 0, err
        assert json.loads(out)["runtime"]["r2_objects"] == 3

        code, out, err = cli(platform, supabase_stack, "delete", gone.tenant_id, "--yes", "--json")
        assert code == 0, err
        keys = bucket_keys(platform)
        assert not [k for k in keys if k.startswith(f"tenants/{gone.tenant_id}/")]
        assert f"tenants/{neighbour.tenant_id}/files/a.txt" in keys
        # The neighbour's file is whole, and its Worker (sharing the bucket) still reads and writes it.
        assert download(neighbour, "a.txt").content == kept
        assert upload(neighbour, "after.txt", b"still works").status_code == 201
        assert names(neighbour) == ["a.txt", "after.txt"]
        assert cli(platform, supabase_stack, "delete", gone.tenant_id, "--yes")[0] == 0  # re-run: nothing left, fine


def test_remote_erasure_deletes_the_tenants_r2_objects_through_the_api() -> None:
    with FakeCloudflare(token="t0ken", account_id="acct", zone_id="zone") as fake:
        for i in range(2500):  # more than two pages
            fake.r2[(R2_BUCKET, f"tenants/gone/files/f{i:04}")] = b"x"
        fake.r2[(R2_BUCKET, "tenants/gone-2/files/keep")] = b"k"  # a tenant id that starts the same
        fake.r2[(R2_BUCKET, "tenants/other/files/keep")] = b"k"
        fake.r2[("another-bucket", "tenants/gone/files/x")] = b"k"

        async def run() -> tuple[dict[str, Any], dict[str, int]]:
            api = CloudflareApi(connect(token="t0ken", base_url=fake.url), account_id="acct", zone_id="zone")
            try:
                data = CloudflareRuntimeData(api, "authkv")
                return await data.describe("gone", "cmgsite-gone"), await data.erase("gone", "cmgsite-gone")
            finally:
                await api.aclose()

        described, erased = asyncio.run(run())
        assert described["r2_objects"] == 2500 and erased["r2_objects"] == 2500
        assert sorted(fake.r2) == [
            ("another-bucket", "tenants/gone/files/x"),
            (R2_BUCKET, "tenants/gone-2/files/keep"),
            (R2_BUCKET, "tenants/other/files/keep"),
        ]

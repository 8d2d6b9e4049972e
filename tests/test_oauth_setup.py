"""scripts/oauth_setup.py: the URLs an operator registers, per tenant, from the demo set or a D1 replica."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localrt.d1 import copy_database
from scripts import oauth_setup
from tests.support import Platform


def test_demo_tenants_get_their_own_callback_on_their_own_host(capsys: pytest.CaptureFixture[str]) -> None:
    assert oauth_setup.main(["--json"]) == 0
    items = {t["tenant_id"]: t for t in json.loads(capsys.readouterr().out)}
    assert items["partner-seo"]["callback_url"] == "https://partner-seo.com/auth/callback"
    assert items["partner1"]["homepage_url"] == "https://partner1.cozyartzmedia.com/"
    assert items["cozyartz"]["script_name"] == "cmgsite-primary-tenant"
    assert "SESSION_SECRET" in items["cozyartz"]["secrets"] and "GITHUB_CLIENT_SECRET" in items["cozyartz"]["secrets"]


def test_reads_tenants_from_a_d1_replica(
    platform: Platform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A replica of the running platform's D1 (the seeded demo tenants), as `wrangler d1 export` would give.
    replica = tmp_path / "d1.sqlite"
    copy_database(platform.d1.path, replica)
    assert oauth_setup.main(["--d1", str(replica), "--tenant", "partner1"]) == 0
    out = capsys.readouterr().out
    assert "https://partner1.cozyartzmedia.com/auth/callback" in out and "partner-seo.com" not in out


def test_unknown_tenant_or_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert oauth_setup.main(["--tenant", "nobody"]) == 2
    assert oauth_setup.main(["--d1", str(tmp_path / "missing.sqlite")]) == 2
    assert "error:" in capsys.readouterr().err

"""Shared fixtures. Database fixtures live in tests/fixtures/ as plugins; the sign-in world in
tests/auth_support.py. The `platform` fixture is the local platform on the real workerd,
started once per session (Python Workers take seconds to start) and shared."""

from __future__ import annotations

import asyncio
from typing import Any, Iterator

import pytest

from localrt.__main__ import dispatcher_vars, supabase_secrets_path
from localrt.d1 import D1Database, apply_migrations_with_wrangler
from localrt.demo import DEMO_TENANTS, seed_demo
from localrt.devvars import write_dev_vars
from localrt.platform import StatePaths
from localrt.workerd import ROOT, WorkerdHost, bundle
from tests.alert_receiver import AlertReceiver
from tests.fake_oauth import FakeOAuth
from tests.support import LiveServer, Platform, free_port

pytest_plugins = ["tests.fixtures.pg", "tests.fixtures.d1", "tests.auth_support", "tests.oidc_support"]


@pytest.fixture(scope="session")
def fake_oauth_server() -> Iterator[tuple[FakeOAuth, str]]:
    fake = FakeOAuth()
    with LiveServer(fake) as server:
        yield fake, server.url


@pytest.fixture(scope="session")
def alert_receiver() -> Iterator[tuple[AlertReceiver, str]]:
    """Where the test platform's dispatcher sends health alerts (ALERT_WEBHOOK_URL)."""
    receiver = AlertReceiver("alert-webhook-secret-for-tests")
    with LiveServer(receiver) as server:
        yield receiver, server.url + "/hooks/cmgsite"


@pytest.fixture(scope="session")
def platform(
    tmp_path_factory: pytest.TempPathFactory,
    supabase_stack: Any,
    fake_oauth_server: tuple[FakeOAuth, str],
    alert_receiver: tuple[AlertReceiver, str],
) -> Iterator[Platform]:
    """The seeded platform (three demo tenants) on workerd, wired to Supabase and the fake providers."""
    from tests.auth_support import configure_oauth, provider_vars

    fake, fake_url = fake_oauth_server
    work = tmp_path_factory.mktemp("platform")
    wrangler_state = work / "wrangler"
    d1 = D1Database(apply_migrations_with_wrangler(wrangler_state))
    paths = StatePaths(work / "state")
    registry = paths.registry()
    supabase = {
        "SUPABASE_URL": supabase_stack.url,
        "SUPABASE_ANON_KEY": supabase_stack.anon_key,
        "SUPABASE_JWT_SECRET": supabase_stack.jwt_secret,
        "SUPABASE_SERVICE_ROLE_KEY": supabase_stack.service_role_key,
    }
    # What `python -m localrt run` writes for the CLI (its deploys need the project's keys).
    write_dev_vars(supabase_secrets_path(paths.root), supabase)
    asyncio.run(
        seed_demo(d1, registry, paths.dispatcher_secrets, extra_secrets=supabase, extra_vars=provider_vars(fake_url))
    )
    configure_oauth(registry, fake)
    echo_root = work / "echo"
    echo_root.mkdir()
    (echo_root / "echo.py").write_text((ROOT / "tests" / "workers" / "echo.py").read_text())
    host = WorkerdHost(
        paths.namespace,
        paths.secrets,
        wrangler_state,
        paths.root,
        port=free_port(),
        dispatcher_vars={
            **dispatcher_vars(),
            "ROUTE_ISOLATE_TTL_SECONDS": "0",
            "ALERT_WEBHOOK_URL": alert_receiver[1],
            "ALERT_WEBHOOK_SECRET": alert_receiver[0].secret,
        },
        test_faults=True,
        python_snapshot_dir=ROOT / ".local" / "python-snapshots",
        extra_bundles={
            "echo": {"root": str(echo_root), "main": "echo.py", "pythonModules": bundle("dispatcher")["pythonModules"]}
        },
    )
    host.start()
    try:
        yield Platform(host, paths, registry, d1, wrangler_state)
    finally:
        host.stop()


@pytest.fixture(scope="session")
def demo_hosts() -> dict[str, str]:
    return {t.tenant_id: t.domain for t in DEMO_TENANTS}

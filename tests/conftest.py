"""Shared fixtures. Database fixtures live in tests/fixtures/ as plugins."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Iterator

import pytest

import localrt  # noqa: F401  (installs the workers/js/pyodide stand-ins)
from localrt.d1 import apply_migrations_with_wrangler
from localrt.demo import seed_demo
from localrt.platform import Platform
from tests.support import LiveServer, fresh_platform, serve

# Database fixtures (PostgreSQL, PostgREST) come from tests/fixtures/pg.py; the sign-in
# world (fake OAuth server + platform wired to Supabase) from tests/auth_support.py.
pytest_plugins = ["tests.fixtures.pg", "tests.auth_support"]


@pytest.fixture(scope="session")
def d1_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The D1 database as `wrangler d1 migrations apply --local` leaves it (run once, for real)."""
    return apply_migrations_with_wrangler(tmp_path_factory.mktemp("wrangler-state"))


@pytest.fixture
def platform(d1_template: Path, tmp_path: Path) -> Platform:
    """A seeded local platform (three demo tenants), private to one test."""
    p = fresh_platform(d1_template, tmp_path / "platform")
    asyncio.run(seed_demo(p))
    return p


@pytest.fixture
def live(platform: Platform) -> Iterator[LiveServer]:
    """That platform served over real HTTP on a loopback port."""
    with serve(platform) as server:
        yield server

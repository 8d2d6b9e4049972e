"""The data service going down, end to end on workerd: a dependency that is down is a 503 with
Retry-After (`data_unavailable`), never a 502 (that is for a bad answer from upstream).

A throwaway tenant talks to a Supabase stack of its own (the real PostgREST 12 behind the local
gateway) whose PostgreSQL connection runs through a TCP proxy this test can cut. So the test can
take the database, PostgREST or the whole data API away without touching the session's shared
PostgreSQL and PostgREST, and puts each back before the next test.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import httpx
import pytest

from localrt.supabase_stack import SupabaseStack, find_free_port
from tests.fixtures.pg import RemoteSupabase
from tests.support import Platform
from tests.usage_support import UsageTenant, usage_tenant


class TcpProxy:
    """127.0.0.1:`port` -> 127.0.0.1:`target`. cut() drops every connection and refuses new
    ones, as a database that went away; restore() listens again on the same port."""

    def __init__(self, target: int) -> None:
        self.target, self.port = target, find_free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def start(self) -> None:
        self._thread.start()
        self.restore()

    def restore(self) -> None:
        async def listen() -> None:
            self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port, reuse_address=True)

        self._run(listen())

    def cut(self) -> None:
        async def cut() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()

        self._run(cut())

    def stop(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@dataclass
class _ClusterViaProxy:
    """What SupabaseStack needs of a PgCluster: the authenticator's DSN, here through the proxy."""

    cluster: Any
    port: int

    @property
    def authenticator_dsn(self) -> str:
        return self.cluster.authenticator_dsn.replace(f"@127.0.0.1:{self.cluster.port}/", f"@127.0.0.1:{self.port}/")


@dataclass
class World:
    tenant: UsageTenant
    proxy: TcpProxy
    stack: SupabaseStack

    def call(self, method: str, path: str, role: str = "admin", **kw: Any) -> httpx.Response:
        return httpx.request(
            method,
            self.tenant.platform.url + path,
            timeout=60,
            headers={"Host": self.tenant.host, **self.tenant.session(role)},
            **kw,
        )

    def data_calls(self) -> list[httpx.Response]:
        """Every data endpoint this tenant's admin can call, reads and a write."""
        return [
            self.call("GET", "/api/tenant"),
            self.call("GET", "/api/domains"),
            self.call("GET", "/api/profiles"),
            self.call("GET", "/api/audit"),
            self.call("PATCH", f"/api/profiles/{self.tenant.users['client']}", json={"display_name": "Down"}),
        ]


def wait_until(check: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def world(platform: Platform, pg_cluster: Any, supabase_stack: Any) -> Iterator[World]:
    if isinstance(supabase_stack, RemoteSupabase):
        pytest.skip("takes the data service down: local stack only")
    proxy = TcpProxy(pg_cluster.port)
    proxy.start()
    stack = SupabaseStack(
        _ClusterViaProxy(pg_cluster, proxy.port),
        jwt_secret=secrets.token_urlsafe(48),  # type: ignore[arg-type]
        port=find_free_port(),
        db_pool=2,
    )
    stack.start()
    keys = {
        "SUPABASE_URL": stack.url,
        "SUPABASE_ANON_KEY": stack.anon_key,
        "SUPABASE_JWT_SECRET": stack.jwt_secret,
        "SUPABASE_SERVICE_ROLE_KEY": stack.service_role_key,
    }
    try:
        with usage_tenant(platform, pg_cluster, "growth", secrets_=keys) as tenant:
            yield World(tenant, proxy, stack)
    finally:
        stack.stop()
        proxy.stop()


def healthy(w: World) -> bool:
    return all(r.status_code == 200 for r in w.data_calls())


def assert_unavailable(responses: list[httpx.Response]) -> None:
    for r in responses:
        assert r.status_code == 503, (r.request.method, r.request.url.path, r.status_code, r.text[:300])
        error = r.json()["error"]
        assert error["code"] == "data_unavailable" and error["request_id"] == r.headers["x-request-id"]
        assert int(r.headers["retry-after"]) > 0
        assert "PGRST" not in r.text and "postgres" not in r.text.lower()


def test_database_down(world: World) -> None:
    assert healthy(world)
    world.proxy.cut()
    try:
        assert_unavailable(world.data_calls())
    finally:
        world.proxy.restore()
    wait_until(lambda: healthy(world), "PostgREST reconnects to its database")


def test_postgrest_down_behind_the_gateway(world: World) -> None:
    assert healthy(world)
    os.kill(world.stack.process_ids[0], signal.SIGTERM)  # PostgREST; the gateway answers 502 for it
    try:
        assert_unavailable(world.data_calls())
    finally:
        world.stack.stop()
        world.stack.start()
    wait_until(lambda: healthy(world), "the data API is back")


def test_data_api_unreachable(world: World) -> None:
    assert healthy(world)
    world.stack.stop()  # nothing listens on SUPABASE_URL: connection refused
    try:
        assert_unavailable(world.data_calls())
    finally:
        world.stack.start()
    wait_until(lambda: healthy(world), "the data API is back")


def test_a_bad_answer_is_still_a_502(world: World) -> None:
    """The other side of the line: a data API that answers, wrongly (here: refuses the
    project's own key after a key rotation), is 502 upstream_error, not an outage."""
    world.tenant.platform.set_secret(world.tenant.script, "SUPABASE_ANON_KEY", "not-the-project-key")
    try:
        r = world.call("GET", "/api/tenant")
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_error", r.text
        assert "retry-after" not in r.headers
    finally:
        world.tenant.platform.set_secret(world.tenant.script, "SUPABASE_ANON_KEY", world.stack.anon_key)
    assert healthy(world)

"""Test plumbing: free ports, a live local platform served over real HTTP in a thread."""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import uvicorn

from localrt.d1 import copy_database
from localrt.platform import Platform, build_platform
from localrt.server import EdgeApp

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """Serves an ASGI app with uvicorn on a loopback port, in its own thread and loop."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                server_header=False, date_header=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("local server did not start")
            time.sleep(0.02)
        self.loop = next(iter(_loops_of(self.thread)), None)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def call(self, coro_factory: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine on the server's loop (where the platform's objects live)."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro_factory(), self.loop).result(timeout=30)


def _loops_of(thread: threading.Thread) -> list[asyncio.AbstractEventLoop]:
    # uvicorn creates the loop inside the thread; find it through the server's policy.
    import gc

    return [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop) and o.is_running()
            and getattr(o, "_thread_id", None) == thread.ident]


def fresh_platform(template_d1: Path, workdir: Path, **kwargs: Any) -> Platform:
    """A platform on a private copy of the migrated D1 database."""
    workdir.mkdir(parents=True, exist_ok=True)
    d1 = workdir / "d1.sqlite"
    copy_database(template_d1, d1)
    return build_platform(workdir / "state", d1, **kwargs)


def serve(platform: Platform) -> LiveServer:
    return LiveServer(EdgeApp(platform))

"""Headless Chromium (Debian's `chromium`) driven over the DevTools protocol, for the page tests.

    with Chromium(platform_port) as browser:
        tab = browser.tab(width=390, height=844, headers={"cookie": "..."})
        tab.open("http://partner1.cozyartzmedia.com/admin")      # every host resolves to the platform
        facts = tab.evaluate("({title: document.title, h1: document.querySelector('h1').textContent})")
        tab.screenshot(path)

Every host name resolves to the local platform's port (`--host-resolver-rules`), so a page is
loaded under its tenant's own host, as a visitor's browser would. Headers (the session cookie:
it is `Secure`, and the test platform speaks plain HTTP) ride on every request of the tab.
`evaluate` runs in the rendered page: assertions are on the DOM the browser built. The
WebSocket client is the smallest one the protocol needs (stdlib only).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class _WebSocket:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=60)
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        self.sock.sendall(
            (
                f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake failed")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
        self.buffer = head.split(b"\r\n\r\n", 1)[1]

    def send(self, text: str) -> None:
        data, mask = text.encode(), secrets.token_bytes(4)
        n = len(data)
        header = bytes([0x81]) + (
            bytes([0x80 | n])
            if n < 126
            else bytes([0x80 | 126]) + struct.pack(">H", n)
            if n < 65536
            else bytes([0x80 | 127]) + struct.pack(">Q", n)
        )
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("websocket closed")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def recv(self) -> str:
        message = b""
        while True:
            b1, b2 = self._read(2)
            n = b2 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(n)
            if b1 & 0x0F == 0x8:
                raise ConnectionError("websocket closed by the browser")
            if b1 & 0x0F in (0x9, 0xA):  # ping/pong
                continue
            message += payload
            if b1 & 0x80:
                return message.decode("utf-8")

    def close(self) -> None:
        self.sock.close()


class Tab:
    def __init__(self, ws_url: str) -> None:
        self.ws = _WebSocket(ws_url)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        my = self.next_id
        self.ws.send(json.dumps({"id": my, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))
            self.events.append(msg)

    def wait_for(self, event: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, e in enumerate(self.events):
                if e.get("method") == event:
                    return self.events.pop(i)
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(event)

    def open(self, url: str) -> int:
        """Navigate and wait for the load event; the main document's HTTP status."""
        self.events.clear()
        self.send("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        for e in self.events:
            if e.get("method") == "Network.responseReceived" and e["params"].get("type") == "Document":
                return int(e["params"]["response"]["status"])
        return 0

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self.ws.close()


class Chromium:
    def __init__(self, platform_port: int) -> None:
        if CHROMIUM is None:
            raise RuntimeError("chromium is not installed (scripts/bootstrap.sh installs it)")
        self.port = platform_port
        self.profile = Path(tempfile.mkdtemp(prefix="cmgsite-chromium-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.devtools = ""

    def __enter__(self) -> "Chromium":
        args = [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--remote-debugging-port=0",
            f"--user-data-dir={self.profile}",
            "--disable-background-networking",
            f"--host-resolver-rules=MAP * 127.0.0.1:{self.port}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (active.exists() and active.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium did not start")
            time.sleep(0.1)
        self.devtools = f"127.0.0.1:{active.read_text().split()[0]}"
        return self

    def tab(self, *, width: int, height: int, headers: dict[str, str] | None = None) -> Tab:
        target = httpx.put(f"http://{self.devtools}/json/new?about:blank", timeout=30).json()
        tab = Tab(target["webSocketDebuggerUrl"])
        tab.send("Page.enable")
        tab.send("Network.enable")
        if headers:
            tab.send("Network.setExtraHTTPHeaders", headers=headers)
        tab.send(
            "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=width < 600
        )
        return tab

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

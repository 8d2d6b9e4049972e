"""A loopback receiver for the alert webhook (tests of shared.health's delivery).

    receiver = AlertReceiver(secret)        # served with tests.support.LiveServer
    receiver.mode = "fail"                  # 500 to every delivery ("refuse": 410; "ok": 204)
    receiver.deliveries                     # every request: {"headers", "body", "status", "signed"}

`signed` is whether X-Cmgsite-Signature is HMAC-SHA256(secret, "<timestamp>." + body) with the
request's X-Cmgsite-Timestamp, as a real receiver must check it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from typing import Any, Callable


class AlertReceiver:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.mode = "ok"
        self.deliveries: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def events(self, tenant_id: str | None = None, *, accepted_only: bool = True) -> list[dict[str, Any]]:
        with self._lock:
            return [
                d["body"]
                for d in self.deliveries
                if (not accepted_only or d["status"] < 300)
                and (tenant_id is None or d["body"].get("tenant_id") == tenant_id)
            ]

    def attempts(self, tenant_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [d for d in self.deliveries if d["body"].get("tenant_id") == tenant_id]

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        expected = (
            "sha256="
            + hmac.new(
                self.secret.encode(), f"{headers.get('x-cmgsite-timestamp', '')}.".encode() + body, hashlib.sha256
            ).hexdigest()
        )
        status = {"ok": 204, "fail": 500, "refuse": 410}[self.mode]
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        with self._lock:
            self.deliveries.append(
                {
                    "headers": headers,
                    "body": doc,
                    "status": status,
                    "signed": hmac.compare_digest(headers.get("x-cmgsite-signature", ""), expected),
                }
            )
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

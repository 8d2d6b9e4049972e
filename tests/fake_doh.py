"""A DNS-over-HTTPS resolver for tests: real HTTP on loopback speaking the JSON API Cloudflare's
(https://cloudflare-dns.com/dns-query) and Google's resolvers speak (`accept: application/dns-json`).

    with FakeDoh() as doh:
        doh.txt("_cmgsite-challenge.shop.example", "0123…")   # publish a TXT record
        doh.a("shop.example", "203.0.113.7")
        doh.url                                              # DOH_RESOLVER_URL for the Worker / the CLI
        doh.queries                                          # [(name, type)] as asked
        doh.failing = True                                   # answer HTTP 502 (resolver down)

Answers follow the wire format: {"Status", "TC", "RD", "RA", "AD", "CD", "Question": [{name,
type}], "Answer": [{name, type, TTL, data}]}, names with the trailing dot, TXT data as a quoted
character-string (split in 255-byte strings as DNS does), Status 3 (NXDOMAIN) for unknown names.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TYPES = {"A": 1, "CNAME": 5, "TXT": 16, "AAAA": 28}


def quoted(text: str) -> str:
    """A TXT value as DNS presents it: 255-byte character-strings, quoted, space-separated."""
    chunks = [text[i : i + 255] for i in range(0, len(text), 255)] or [""]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


class FakeDoh:
    def __init__(self) -> None:
        self.records: dict[str, list[tuple[int, str]]] = {}
        self.queries: list[tuple[str, str]] = []
        self.failing = False
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/dns-query"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeDoh":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ---- test controls ------------------------------------------------------------------
    def add(self, name: str, rtype: str, data: str) -> None:
        with self._lock:
            self.records.setdefault(name.rstrip(".").lower(), []).append((TYPES[rtype], data))

    def txt(self, name: str, text: str) -> None:
        self.add(name, "TXT", quoted(text))

    def a(self, name: str, address: str) -> None:
        self.add(name, "A", address)

    def clear(self, name: str) -> None:
        with self._lock:
            self.records.pop(name.rstrip(".").lower(), None)

    # ---- the resolver -------------------------------------------------------------------
    def answer(self, name: str, rtype: str) -> dict[str, Any]:
        key = name.rstrip(".").lower()
        code = TYPES.get(rtype.upper()) if not rtype.isdigit() else int(rtype)
        with self._lock:
            found = self.records.get(key)
            self.queries.append((key, rtype))
        body: dict[str, Any] = {
            "Status": 0 if found is not None else 3,
            "TC": False,
            "RD": True,
            "RA": True,
            "AD": False,
            "CD": False,
            "Question": [{"name": key + ".", "type": code}],
        }
        answers = [{"name": key + ".", "type": t, "TTL": 300, "data": d} for t, d in (found or []) if t == code]
        if answers:
            body["Answer"] = answers
        return body

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                if fake.failing:
                    return self._send(502, b"bad gateway", "text/plain")
                if parts.path != "/dns-query" or "application/dns-json" not in (self.headers.get("accept") or ""):
                    return self._send(400, b'{"error": "send accept: application/dns-json"}', "application/json")
                name, rtype = (query.get("name") or [""])[0], (query.get("type") or ["A"])[0]
                if not name:
                    return self._send(400, b'{"error": "name is required"}', "application/json")
                self._send(200, json.dumps(fake.answer(name, rtype)).encode(), "application/dns-json")

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        return Handler

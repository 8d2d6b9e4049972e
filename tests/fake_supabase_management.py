"""A local fake of Supabase's Management API, the JWT signing key endpoints (real HTTP on loopback),
in their wire format, wired to the real local PostgREST so what it trusts is what the data API
accepts:

    GET   /v1/projects/{ref}/config/auth/signing-keys        -> 200 {"keys": [key, ...]}
    POST  /v1/projects/{ref}/config/auth/signing-keys        {algorithm, status?, private_jwk?} -> 201 key
    PATCH /v1/projects/{ref}/config/auth/signing-keys/{id}   {status} -> 200 key

A key is {"id", "algorithm", "status", "public_jwk", "created_at", "updated_at"} (public_jwk null
for a symmetric key). Statuses: standby, in_use, previously_used, revoked; making a key `in_use`
moves the current one to `previously_used`; the in_use key cannot be revoked or set to standby.
An imported `private_jwk` of kty `oct` keeps its `kid` as the key's id (a UUID; 400 otherwise).
Without `Authorization: Bearer <token>` 401, another project 404, a bad body 400, as the API does.

The project starts with one key, `legacy`: the project's JWT secret, in use (it signed the API
keys). Every key not revoked is trusted: `supabase_stack.set_jwt_keys` gets the imported ones.

    with FakeSupabaseManagement(token="t", ref="abcdefghijklmnopqrst", stack=stack) as api:
        api.url, api.keys, api.requests   # requests: [(method, path, body with any "k" masked)]
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from shared.keys import Key, Keyring

STATUSES = ("standby", "in_use", "previously_used", "revoked")


class FakeSupabaseManagement:
    def __init__(self, *, token: str, ref: str, stack: Any) -> None:
        self.token, self.ref, self.stack = token, ref, stack
        self.legacy_id = str(uuid.uuid4())
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.keys: dict[str, dict[str, Any]] = {
            self.legacy_id: {
                "id": self.legacy_id,
                "algorithm": "HS256",
                "status": "in_use",
                "public_jwk": None,
                "created_at": now,
                "updated_at": now,
            }
        }
        self.secrets: dict[str, str] = {}  # imported keys' secrets (what the platform sent)
        self.requests: list[tuple[str, str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeSupabaseManagement":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.stack.set_jwt_keys(None)

    def status_of(self, kid: str) -> str:
        return str(self.keys[kid]["status"])

    def add_imported(self, kid: str, secret: str, status: str) -> None:
        """A key imported earlier (by an earlier rotation)."""
        with self._lock:
            self.keys[kid] = {
                "id": kid,
                "algorithm": "HS256",
                "status": status,
                "public_jwk": None,
                "created_at": "2026-01-01T00:00:00Z",
                "updated_at": "2026-01-01T00:00:00Z",
            }
            self.secrets[kid] = secret
            self._apply()

    def _apply(self) -> None:
        trusted = [Key(kid, secret) for kid, secret in self.secrets.items() if self.keys[kid]["status"] != "revoked"]
        self.stack.set_jwt_keys(Keyring(tuple(trusted)) if trusted else None)

    # ---- the API ---------------------------------------------------------------------------
    def answer(self, method: str, path: str, auth: str, body: Any) -> tuple[int, Any]:
        masked = json.loads(json.dumps(body)) if isinstance(body, dict) else body
        if isinstance(masked, dict) and isinstance(masked.get("private_jwk"), dict) and "k" in masked["private_jwk"]:
            masked["private_jwk"]["k"] = "<masked>"
        self.requests.append((method, path, masked))
        if auth != f"Bearer {self.token}":
            return 401, {"message": "Unauthorized"}
        prefix = f"/v1/projects/{self.ref}/config/auth/signing-keys"
        if not path.startswith("/v1/projects/"):
            return 404, {"message": "Cannot " + method + " " + path}
        if not path.startswith(prefix):
            return 404, {"message": "Project not found"}
        rest = path[len(prefix) :]
        with self._lock:
            if rest == "" and method == "GET":
                return 200, {"keys": list(self.keys.values())}
            if rest == "" and method == "POST":
                return self._create(body)
            if rest.startswith("/") and method == "PATCH":
                return self._patch(rest[1:], body)
        return 404, {"message": "Not found"}

    def _create(self, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or body.get("algorithm") not in ("HS256", "RS256", "ES256", "EdDSA"):
            return 400, {"message": "algorithm must be one of HS256, RS256, ES256, EdDSA"}
        status = body.get("status", "standby")
        if status not in ("standby", "in_use"):
            return 400, {"message": "status must be standby or in_use"}
        jwk = body.get("private_jwk")
        kid, secret = str(uuid.uuid4()), None
        if jwk is not None:
            if not isinstance(jwk, dict) or jwk.get("kty") != "oct" or body["algorithm"] != "HS256":
                return 400, {"message": "private_jwk must be an oct key for HS256"}
            try:
                secret = base64.urlsafe_b64decode(str(jwk["k"]) + "=" * (-len(str(jwk["k"])) % 4)).decode()
                kid = str(uuid.UUID(str(jwk.get("kid", kid))))
            except (KeyError, ValueError):
                return 400, {"message": "private_jwk: k must be base64url, kid a UUID"}
            if kid in self.keys:
                return 400, {"message": "a key with this kid exists"}
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if status == "in_use":
            self._demote_in_use()
        self.keys[kid] = {
            "id": kid,
            "algorithm": body["algorithm"],
            "status": status,
            "public_jwk": None,
            "created_at": now,
            "updated_at": now,
        }
        if secret is not None:
            self.secrets[kid] = secret
        self._apply()
        return 201, self.keys[kid]

    def _demote_in_use(self) -> None:
        for key in self.keys.values():
            if key["status"] == "in_use":
                key["status"] = "previously_used"

    def _patch(self, kid: str, body: Any) -> tuple[int, Any]:
        key = self.keys.get(kid)
        if key is None:
            return 404, {"message": "Signing key not found"}
        status = body.get("status") if isinstance(body, dict) else None
        if status not in STATUSES:
            return 400, {"message": f"status must be one of {', '.join(STATUSES)}"}
        if key["status"] == "in_use" and status in ("revoked", "standby"):
            return 400, {"message": "the key in use cannot be revoked or put on standby: rotate first"}
        if key["status"] == "revoked" and status != "revoked":
            return 400, {"message": "a revoked key stays revoked"}
        if status == "in_use" and key["status"] != "in_use":
            self._demote_in_use()
        key["status"] = status
        key["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._apply()
        return 200, key

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    status, payload = 400, {"message": "body is not JSON"}
                else:
                    status, payload = fake.answer(self.command, self.path, self.headers.get("authorization", ""), body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

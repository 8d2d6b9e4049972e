"""A local fake of GitHub's and Google's OAuth servers, speaking their real wire formats.

Served over real HTTP on loopback (tests.support.LiveServer + uvicorn), plain ASGI:

  GitHub  GET  /github/login/oauth/authorize     -> 302 redirect_uri?code&state (or ?error=access_denied)
          POST /github/login/oauth/access_token  -> JSON or form-encoded token; errors as 200 + error=...
          GET  /github/api/user, /github/api/user/emails   (Bearer token; 401 {"message": "Bad credentials"})
  Google  GET  /google/o/oauth2/v2/auth          -> 302 redirect_uri?code&state
          POST /google/token                     -> JSON with an RS256 id_token; 400 {"error": "invalid_grant"}
          GET  /google/oauth2/v3/certs           -> JWKS

Which account "signs in" is picked by GitHub's `login` / Google's `login_hint` parameter.
Clients (id, secret, redirect URIs) are registered per tenant; codes are single-use, bound to
client and redirect URI, and PKCE S256 is checked. Knobs make the provider misbehave.
Google's signing key rotates as Google's does (`rotate_key()`): the new key signs from then on
and the JWKS publishes it next to the previous one; `jwks_requests` counts JWKS fetches.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

GOOGLE_ISSUER = "https://accounts.google.com"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class FakeUser:
    login: str
    email: str | None
    name: str
    id: int = field(default_factory=lambda: secrets.randbelow(10**9) + 1000)
    verified: bool = True
    primary: bool = True


@dataclass
class Knobs:
    """Ways to make the provider misbehave; reset between tests."""

    token_status: int | None = None  # e.g. 500, 503: the token endpoint fails
    token_delay: float = 0.0  # seconds before the token endpoint answers (timeouts)
    github_token_format: str = "json"  # "form": GitHub's default form-encoded body
    github_bad_code: bool = False  # GitHub's 200 + error=bad_verification_code
    id_token_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {"aud": "other"}
    id_token_sign_with_other_key: bool = False
    id_token_kid: str | None = None  # a key id the JWKS does not publish (even after a refetch)
    id_token_alg_none: bool = False


class FakeOAuth:
    def __init__(self) -> None:
        self.users: dict[str, FakeUser] = {}
        self.clients: dict[str, tuple[str, set[str]]] = {}  # client_id -> (secret, redirect URIs)
        self.codes: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, FakeUser] = {}
        self.knobs = Knobs()
        self.token_requests: list[dict[str, str]] = []
        self._other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._published: list[tuple[str, rsa.RSAPrivateKey]] = []  # the signing key first
        self.jwks_requests = 0
        self.rotate_key()

    @property
    def kid(self) -> str:
        return self._published[0][0]

    @property
    def _key(self) -> rsa.RSAPrivateKey:
        return self._published[0][1]

    def rotate_key(self) -> str:
        """A new signing key (its kid returned); the previous one stays published, older ones go."""
        kid = "fake-" + secrets.token_hex(4)
        self._published = [(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))] + self._published[:1]
        return kid

    # ---- setup --------------------------------------------------------------------------
    def add_user(self, login: str, email: str | None, name: str = "", **kw: Any) -> FakeUser:
        user = self.users[login] = FakeUser(login, email, name or login, **kw)
        return user

    def register_client(self, client_id: str, client_secret: str, redirect_uri: str) -> None:
        self.clients[client_id] = (client_secret, {redirect_uri})

    def reset_knobs(self) -> None:
        self.knobs = Knobs()

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self._published:
            pub = key.public_key().public_numbers()
            n = pub.n.to_bytes((pub.n.bit_length() + 7) // 8, "big")
            keys.append(
                {
                    "kty": "RSA",
                    "alg": "RS256",
                    "use": "sig",
                    "kid": kid,
                    "n": b64url(n),
                    "e": b64url(pub.e.to_bytes(3, "big")),
                }
            )
        return {"keys": keys}

    def sign_id_token(
        self, claims: dict[str, Any], *, key: Any = None, alg: str = "RS256", kid: str | None = None
    ) -> str:
        header = {"alg": alg, "kid": kid or self.kid, "typ": "JWT"}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        if alg == "none":
            return signing_input + "."
        sig = (key or self._key).sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(sig)}"

    # ---- ASGI ---------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        query = dict(parse_qsl(scope.get("query_string", b"").decode()))
        status, out_headers, out = await self.route(scope["method"], scope["path"], query, headers, body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in out_headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": out})

    async def route(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if method == "GET" and path == "/github/login/oauth/authorize":
            return self.authorize("github", query, query.get("login"))
        if method == "GET" and path == "/google/o/oauth2/v2/auth":
            return self.authorize("google", query, query.get("login_hint"))
        if method == "POST" and path in ("/github/login/oauth/access_token", "/google/token"):
            if self.knobs.token_delay:
                await asyncio.sleep(self.knobs.token_delay)
            form = dict(parse_qsl(body.decode()))
            self.token_requests.append(form)
            if self.knobs.token_status:
                return self.knobs.token_status, {"content-type": "text/html"}, b"<h1>Server Error</h1>"
            if path.startswith("/github"):
                return self.github_token(form, headers)
            return self.google_token(form)
        if method == "GET" and path in ("/github/api/user", "/github/api/user/emails"):
            return self.github_api(path, headers)
        if method == "GET" and path == "/google/oauth2/v3/certs":
            self.jwks_requests += 1
            return _json(200, self.jwks())
        return _json(404, {"message": "Not Found"})

    def authorize(self, provider: str, q: dict[str, str], who: str | None) -> tuple[int, dict[str, str], bytes]:
        client = self.clients.get(q.get("client_id", ""))
        if client is None:
            return 404, {"content-type": "text/html"}, b"<h1>Not found: unknown client_id</h1>"
        redirect_uri = q.get("redirect_uri", "")
        if redirect_uri not in client[1]:
            return 400, {"content-type": "text/html"}, b"<h1>redirect_uri mismatch</h1>"
        state = q.get("state", "")
        if who == "deny" or who not in self.users:  # the user pressed "Cancel"
            params = {
                "error": "access_denied",
                "error_description": "The user has denied your application access.",
                "state": state,
            }
            return 302, {"location": f"{redirect_uri}?{urlencode(params)}"}, b""
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return 400, {"content-type": "text/html"}, b"<h1>PKCE S256 required by this fake</h1>"
        code = secrets.token_hex(10)
        self.codes[code] = {
            "provider": provider,
            "client_id": q["client_id"],
            "redirect_uri": redirect_uri,
            "challenge": q["code_challenge"],
            "user": self.users[who],
            "nonce": q.get("nonce"),
        }
        return 302, {"location": f"{redirect_uri}?{urlencode({'code': code, 'state': state})}"}, b""

    def _redeem(self, provider: str, form: dict[str, str]) -> tuple[dict[str, Any] | None, str]:
        client = self.clients.get(form.get("client_id", ""))
        if client is None or not secrets.compare_digest(client[0], form.get("client_secret", "")):
            return None, "incorrect_client_credentials" if provider == "github" else "invalid_client"
        grant = self.codes.pop(form.get("code", ""), None)  # single use, whatever happens next
        if grant is None or grant["provider"] != provider or grant["client_id"] != form["client_id"]:
            return None, "bad_verification_code" if provider == "github" else "invalid_grant"
        if grant["redirect_uri"] != form.get("redirect_uri"):
            return None, "redirect_uri_mismatch"
        verifier = form.get("code_verifier", "")
        if b64url(hashlib.sha256(verifier.encode()).digest()) != grant["challenge"]:
            return None, "invalid_grant"
        return grant, ""

    def github_token(self, form: dict[str, str], headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        grant, error = self._redeem("github", form)
        if self.knobs.github_bad_code:
            grant, error = None, "bad_verification_code"
        if grant is None:
            payload: dict[str, Any] = {
                "error": error,
                "error_description": "The code passed is incorrect or expired.",
                "error_uri": "https://docs.github.com/apps/troubleshooting",
            }
        else:
            token = "gho_" + secrets.token_hex(16)
            self.tokens[token] = grant["user"]
            payload = {"access_token": token, "token_type": "bearer", "scope": "read:user,user:email"}
        # GitHub answers 200 even for errors; JSON only when asked for it.
        if self.knobs.github_token_format == "json" and "json" in headers.get("accept", ""):
            return _json(200, payload)
        return 200, {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}, urlencode(payload).encode()

    def google_token(self, form: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        grant, error = self._redeem("google", form)
        if grant is None:
            return _json(
                401 if error == "invalid_client" else 400, {"error": error, "error_description": "Bad Request"}
            )
        user: FakeUser = grant["user"]
        token = "ya29." + secrets.token_hex(16)
        self.tokens[token] = user
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": GOOGLE_ISSUER,
            "azp": grant["client_id"],
            "aud": grant["client_id"],
            "sub": str(user.id),
            "iat": now,
            "exp": now + 3600,
            "name": user.name,
            "nonce": grant["nonce"],
            "at_hash": b64url(hashlib.sha256(token.encode()).digest()[:16]),
        }
        if user.email:
            claims.update({"email": user.email, "email_verified": user.verified})
        claims.update(self.knobs.id_token_overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        if self.knobs.id_token_alg_none:
            id_token = self.sign_id_token(claims, alg="none")
        else:
            id_token = self.sign_id_token(
                claims,
                key=self._other_key if self.knobs.id_token_sign_with_other_key else None,
                kid=self.knobs.id_token_kid,
            )
        return _json(
            200,
            {
                "access_token": token,
                "expires_in": 3599,
                "scope": "openid email profile",
                "token_type": "Bearer",
                "id_token": id_token,
            },
        )

    def github_api(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        user = self.tokens.get(token) if scheme.lower() in ("bearer", "token") else None
        if user is None:
            return _json(
                401,
                {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"},
            )
        if not headers.get("user-agent"):
            return _json(403, {"message": "Request forbidden by administrative rules."})
        if path.endswith("/emails"):
            emails = (
                []
                if user.email is None
                else [
                    {"email": user.email, "primary": user.primary, "verified": user.verified, "visibility": "private"},
                    {
                        "email": f"{user.id}+{user.login}@users.noreply.github.com",
                        "primary": False,
                        "verified": True,
                        "visibility": None,
                    },
                ]
            )
            return _json(200, emails)
        return _json(
            200,
            {
                "login": user.login,
                "id": user.id,
                "node_id": f"U_{user.id}",
                "type": "User",
                "name": user.name,
                "email": None,
                "site_admin": False,
            },
        )


def _json(status: int, data: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {"content-type": "application/json; charset=utf-8"}, json.dumps(data).encode()

"""The local "Google" of tests/oidc_google.mjs (npm `oidc-provider`) for the sign-in tests.

    with LocalGoogle.start() as google:         # the `local_google` fixture (module scope)
        google.discovery                          # /.well-known/openid-configuration, as served
        google.register_client(cid, secret, "https://<host>/auth/callback")
        google.worker_vars()                      # OAUTH_GOOGLE_*_URL from discovery, for a tenant Worker
        google.approve(authorize_url)             # the user at the provider: the callback URL it redirects to

The Worker learns the provider's endpoints as it learns the real Google's (the
OAUTH_GOOGLE_{AUTHORIZE,TOKEN,JWKS}_URL vars), here filled from the provider's own discovery
document rather than typed in.
"""

from __future__ import annotations

import os
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator
from urllib.parse import urljoin

import httpx
import pytest

from localrt.workerd import NODE, ROOT

SCRIPT = ROOT / "tests" / "oidc_google.mjs"
ACCOUNT = {"sub": "104857600012345678901", "email": "ada@oidc-test.example", "name": "Ada Lovelace"}


@dataclass
class LocalGoogle:
    process: subprocess.Popen[str]
    url: str
    discovery: dict[str, Any]
    output: list[str] = field(default_factory=list)  # what the provider printed (its errors, for a failing test)

    @classmethod
    def start(cls) -> "LocalGoogle":
        env = {
            **os.environ,
            "OIDC_TEST_SUB": ACCOUNT["sub"],
            "OIDC_TEST_EMAIL": ACCOUNT["email"],
            "OIDC_TEST_NAME": ACCOUNT["name"],
            "NODE_ENV": "test",
        }
        proc = subprocess.Popen(
            [str(NODE), str(SCRIPT), "0"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:  # oidc-provider prints warnings first; "ready <url>" once it listens
            if line.startswith("ready "):
                url = line.split()[1]
                break
        else:
            raise RuntimeError(f"oidc-provider did not start (exit {proc.wait()})")
        discovery = httpx.get(url + "/.well-known/openid-configuration", timeout=10).json()
        google = cls(proc, url, discovery)
        threading.Thread(
            target=lambda: google.output.extend(proc.stdout or []), daemon=True
        ).start()  # keep the pipe drained
        return google

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def register_client(self, client_id: str, client_secret: str, redirect_uri: str) -> None:
        r = httpx.post(
            self.url + "/__test__/clients",
            timeout=10,
            json={"client_id": client_id, "client_secret": client_secret, "redirect_uris": [redirect_uri]},
        )
        assert r.status_code == 201, r.text

    def worker_vars(self) -> dict[str, str]:
        d = self.discovery
        return {
            "OAUTH_GOOGLE_AUTHORIZE_URL": d["authorization_endpoint"],
            "OAUTH_GOOGLE_TOKEN_URL": d["token_endpoint"],
            "OAUTH_GOOGLE_JWKS_URL": d["jwks_uri"],
            "OAUTH_TIMEOUT_SECONDS": "5",
        }

    def approve(self, authorize_url: str, *, redirect_prefix: str) -> str:
        """Follow the provider's redirects (its interaction consents at once) to the client's redirect URI."""
        with httpx.Client(timeout=10, follow_redirects=False) as browser:  # keeps the provider's cookies
            url = authorize_url
            for _ in range(10):
                r = browser.get(url)
                assert r.status_code in (302, 303), f"{r.status_code} at {url}: {r.text[:500]}"
                url = urljoin(url, r.headers["location"])
                if url.startswith(redirect_prefix):
                    return url
        raise AssertionError("the provider never redirected back")


@pytest.fixture(scope="module")
def local_google() -> Iterator[LocalGoogle]:
    google = LocalGoogle.start()
    try:
        yield google
    finally:
        google.stop()

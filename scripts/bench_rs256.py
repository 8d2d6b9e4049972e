"""Benchmark: the Worker's pure-Python RS256 verification (shared/rs256.py) on CPython.

    .venv/bin/python scripts/bench_rs256.py [--rounds 200] [--out FILE]

It was a timed assertion in tests/test_auth_units.py (at most 10 ms per verify); timings
belong here, not in a test that a busy machine can fail. One run measures, interleaved on
the same key and token:
  - `verify_rs256` (the product's path: a 2048-bit key, e = 65537, 17 modular multiplications);
  - `cryptography`'s OpenSSL verify of the same token (the floor a C library gives);
  - HS256 verification of a tenant JWT (shared/jwt.py), the platform's other token check.
Reported: median and p95 per call in microseconds, and the ratios to the OpenSSL figure
(the ratios, measured in one run, are what to compare across machines).
"""
from __future__ import annotations

import argparse
import base64
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.jwt import HS256Signer, verify_hs256  # noqa: E402
from shared.rs256 import keys_from_jwks, verify_rs256  # noqa: E402


def b64(data: bytes | dict[str, object]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sample(fn: Callable[[], object], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        began = time.perf_counter()
        fn()
        out.append((time.perf_counter() - began) * 1e6)
    return out


def figures(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_us": round(statistics.median(ordered), 1),
            "p95_us": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args()

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key().public_numbers()
    jwks = {"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "k1",
                      "n": b64(pub.n.to_bytes(256, "big")), "e": b64(pub.e.to_bytes(3, "big"))}]}
    keys = keys_from_jwks(jwks)
    signing_input = f"{b64({'alg': 'RS256', 'kid': 'k1'})}.{b64({'sub': '1'})}"
    token = f"{signing_input}.{b64(key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()))}"
    signature = unb64(token.rsplit(".", 1)[1])
    hs_secret = "bench-secret-" + "x" * 32
    hs_token = HS256Signer(hs_secret).sign({"sub": "1", "exp": 2_000_000_000})

    cases: dict[str, Callable[[], object]] = {
        "rs256_python": lambda: verify_rs256(token, keys),
        "rs256_openssl": lambda: key.public_key().verify(signature, signing_input.encode(), padding.PKCS1v15(),
                                                         hashes.SHA256()),
        "hs256_python": lambda: verify_hs256(hs_token, hs_secret, now=1_900_000_000),
    }
    for fn in cases.values():  # warm up, and check each path accepts its token
        fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds // 10 or 1):  # interleaved in blocks: drift hits all alike
        for name, fn in cases.items():
            samples[name] += sample(fn, 10)
    out = {name: figures(s) for name, s in samples.items()}
    floor = out["rs256_openssl"]["median_us"] or 1.0
    report = {"python": platform.python_version(), "machine": platform.machine(), "rounds": args.rounds,
              "figures": out,
              "ratio_to_openssl": {name: round(f["median_us"] / floor, 1) for name, f in out.items()}}
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

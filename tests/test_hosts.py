"""Host normalisation: what the dispatcher accepts as a tenant host, and what it refuses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.hosts import InvalidHost, normalize_host


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("cozyartzmedia.com", "cozyartzmedia.com"),
        ("PARTNER1.CozyArtzMedia.com", "partner1.cozyartzmedia.com"),
        ("partner1.cozyartzmedia.com.", "partner1.cozyartzmedia.com"),
        ("partner1.cozyartzmedia.com.:8787", "partner1.cozyartzmedia.com"),
        ("partner-seo.com:443", "partner-seo.com"),
        ("  partner-seo.com  ", "partner-seo.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("localhost", "localhost"),
        ("a" * 63 + ".com", "a" * 63 + ".com"),
    ],
)
def test_normalises(raw: str, expected: str) -> None:
    assert normalize_host(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "   ",
        ".",
        "..",
        "a..b.com",
        ".a.com",
        "-a.com",
        "a-.com",
        "a_b.com",
        "a b.com",
        "a.com:",
        "a.com:-1",
        "a.com:99999",
        "a.com:80:80",
        "[::1]",
        "[::1]:8080",
        "user@a.com",
        "a.com/path",
        "a.com?x",
        "a.com#x",
        "a.com\r\nX-Tenant-Id: cozyartz",
        "a.com\x00",
        "a%2ecom",
        "a\\b.com",
        "a" * 64 + ".com",
        ".".join(["a" * 60] * 5),
        "\u2603\u2603..com",
        "*.cozyartzmedia.com",
    ],
)
def test_refuses_junk(raw: str | None) -> None:
    with pytest.raises(InvalidHost):
        normalize_host(raw)


@given(st.text(max_size=300))
def test_never_crashes_and_output_is_plain_ascii_dns(raw: str) -> None:
    try:
        host = normalize_host(raw)
    except InvalidHost:
        return
    assert host.isascii() and host == host.lower() and len(host) <= 253
    assert all(0 < len(label) <= 63 for label in host.split("."))
    assert normalize_host(host) == host  # idempotent

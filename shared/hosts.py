"""Host header normalisation: the first thing the dispatcher does with a request."""

from __future__ import annotations

import re

MAX_HOST_LENGTH = 253
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_PORT = re.compile(r"^[0-9]{1,5}$")


class InvalidHost(ValueError):
    """The Host header is missing, empty or not a DNS name we could route."""


def normalize_host(raw: str | None) -> str:
    """Lower-case, strip the port and one trailing dot, IDNA-encode to punycode.

    Raises InvalidHost for anything that is not a plain DNS name: empty, IP literals in
    brackets, user-info, paths, spaces, over-long names or labels.
    """
    if raw is None:
        raise InvalidHost("missing Host header")
    host = raw.strip()
    if not host:
        raise InvalidHost("empty Host header")
    if len(host) > MAX_HOST_LENGTH + 7:  # name + ":" + port + trailing dot
        raise InvalidHost("Host header too long")
    if host.startswith("["):
        raise InvalidHost("IP literals are not tenant hosts")
    if ":" in host:
        host, _, port = host.rpartition(":")
        if not _PORT.match(port) or int(port) > 65535:
            raise InvalidHost("malformed port in Host header")
    if host.endswith("."):
        host = host[:-1]
    if not host or any(c in host for c in "/\\@?#% \t\r\n"):
        raise InvalidHost("malformed Host header")
    host = host.lower()
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise InvalidHost("Host is not a valid internationalised domain name") from None
    if len(host) > MAX_HOST_LENGTH:
        raise InvalidHost("Host header too long")
    labels = host.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise InvalidHost("malformed Host header")
    return host

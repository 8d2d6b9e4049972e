"""Key material: the one home for key derivation, base64url and keyrings (standard library only).

Every secret that rotates is a *keyring*: several keys, each with a key id, so a rotation can
overlap (old and new both accepted) instead of cutting over. The text form, as Worker secrets,
`.dev.vars` lines and CLI output carry it:

    k2:<secret>,k1:<secret>:1767225600
    ^ active (signs, wraps)   ^ still accepted until that Unix time, then ignored

Entries are `kid:secret[:not_after]`, comma-separated; the first entry is the active one (new
signatures and new encryptions use it), the others are only accepted. A key id is 1-32 of
`[a-z0-9-]`, starting with a letter or digit; a secret is base64url/hex text (no `:` or `,`).
A bare secret without a key id (what every secret was before rotation existed) is the
keyring `{k0: secret}`: k0 is the *legacy* key id, and what it signs carries no key id at all,
so a keyring whose active key is k0 produces exactly the bytes the code produced before.

    ring = Keyring.parse(env_value)            # KeyringError on anything malformed
    ring.active.kid, ring.active.secret
    ring.get("k1", now=time.time())            # None: unknown, or past its not_after
    ring.format()                              # back to text
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass, replace

LEGACY_KID = "k0"
KID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}$"  # envelope key ids (the database checks the same)
# A keyring's key ids may be a UUID too: Supabase names the JWT signing keys it holds by one, and the
# tenants' tokens must carry that id (keys rotate jwt --remote).
_KID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,35}$")
_SECRET_RE = re.compile(r"^[A-Za-z0-9_=+/.-]+$")
_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*$")


class KeyringError(ValueError):
    """A keyring secret is malformed (the message never contains key material)."""


# ---- base64url (RFC 4648 section 5, unpadded) -------------------------------------------------


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict: only the base64url alphabet, no padding, no whitespace (the stdlib decoder would
    skip junk characters). ValueError otherwise."""
    if not isinstance(text, str) or not _B64URL_RE.match(text) or len(text) % 4 == 1:
        raise ValueError("malformed base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("malformed base64url") from None


# ---- derivation ------------------------------------------------------------------------------


def derive_hex(secret: str | bytes, label: str) -> str:
    """HMAC-SHA256(secret, label) as hex: a purpose- and tenant-bound key from a master secret."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, label.encode(), hashlib.sha256).hexdigest()


def new_secret(nbytes: int = 32) -> str:
    """A fresh random secret as base64url text (32 bytes: an AES-256 or HMAC-SHA256 key)."""
    import secrets  # only key generation (the tooling) needs it, not the Workers' start

    return b64url_encode(secrets.token_bytes(nbytes))


# ---- keyrings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    kid: str
    secret: str
    not_after: int | None = None  # Unix time after which the key is no longer accepted

    @property
    def legacy(self) -> bool:
        return self.kid == LEGACY_KID

    def usable(self, now: float | None) -> bool:
        return self.not_after is None or now is None or now <= self.not_after

    def key_bytes(self) -> bytes:
        """The secret as raw key bytes (base64url text of exactly 32 bytes), for AES-256."""
        try:
            raw = b64url_decode(self.secret)
        except ValueError:
            raise KeyringError(f"key {self.kid}: not base64url") from None
        if len(raw) != 32:
            raise KeyringError(f"key {self.kid}: must be 32 bytes, not {len(raw)}")
        return raw

    def text(self) -> str:
        return f"{self.kid}:{self.secret}" + (f":{self.not_after}" if self.not_after is not None else "")


@dataclass(frozen=True)
class Keyring:
    keys: tuple[Key, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyringError("a keyring needs at least one key")
        kids = [k.kid for k in self.keys]
        if len(set(kids)) != len(kids):
            raise KeyringError("duplicate key id in keyring")
        if self.keys[0].not_after is not None:
            raise KeyringError("the active (first) key cannot carry an expiry")

    @classmethod
    def parse(cls, text: str) -> "Keyring":
        text = (text or "").strip()
        if not text:
            raise KeyringError("keyring is empty")
        if ":" not in text and "," not in text:  # a bare secret: the legacy single key
            return cls((Key(LEGACY_KID, _secret(text, LEGACY_KID)),))
        keys = []
        for entry in text.split(","):
            parts = entry.strip().split(":")
            if len(parts) not in (2, 3) or not _KID_RE.match(parts[0]):
                raise KeyringError("keyring entries are kid:secret[:not_after]")
            not_after = None
            if len(parts) == 3:
                if not parts[2].isdigit() or len(parts[2]) > 12:
                    raise KeyringError(f"key {parts[0]}: not_after must be a Unix time")
                not_after = int(parts[2])
            keys.append(Key(parts[0], _secret(parts[1], parts[0]), not_after))
        return cls(tuple(keys))

    @classmethod
    def single(cls, kid: str, secret: str) -> "Keyring":
        if not _KID_RE.match(kid):
            raise KeyringError("bad key id")
        return cls((Key(kid, _secret(secret, kid)),))

    @property
    def active(self) -> Key:
        return self.keys[0]

    def get(self, kid: str, *, now: float | None) -> Key | None:
        """The key with this id while it is accepted; None when unknown or expired."""
        for key in self.keys:
            if key.kid == kid:
                return key if key.usable(now) else None
        return None

    def accepted(self, now: float | None) -> tuple[Key, ...]:
        return tuple(k for k in self.keys if k.usable(now))

    def kids(self) -> list[str]:
        return [k.kid for k in self.keys]

    def format(self) -> str:
        if len(self.keys) == 1 and self.keys[0].legacy:
            return self.keys[0].secret  # stays a bare secret, readable by code that predates keyrings
        return ",".join(k.text() for k in self.keys)

    def rotated(self, new: Key, *, retire_after: int, now: float) -> "Keyring":
        """`new` becomes active; every current key stays accepted until `retire_after` (the old
        active one) or its own expiry; keys already expired at `now` are dropped."""
        if new.kid in self.kids():
            raise KeyringError(f"key id {new.kid} is already in the keyring")
        kept = [
            replace(k, not_after=k.not_after if k.not_after is not None else retire_after)
            for k in self.keys
            if k.usable(now)
        ]
        return Keyring((replace(new, not_after=None), *kept))

    def staged(self, new: Key) -> "Keyring":
        """`new` accepted (not active yet): what verifiers hold before signers switch to it."""
        if new.kid in self.kids():
            raise KeyringError(f"key id {new.kid} is already in the keyring")
        return Keyring((*self.keys, replace(new, not_after=None)))

    def active_only(self) -> "Keyring":
        """Just the active key: what a signer needs (it never verifies)."""
        return Keyring((self.keys[0],))

    def without_expired(self, now: float) -> "Keyring":
        return Keyring(tuple(k for k in self.keys if k.usable(now)))

    def next_kid(self, prefix: str = "k") -> str:
        """k1, k2, … one past the highest numbered id with this prefix."""
        highest = 0
        for kid in self.kids():
            if kid.startswith(prefix) and kid[len(prefix) :].isdigit():
                highest = max(highest, int(kid[len(prefix) :]))
        return f"{prefix}{highest + 1}"


def _secret(value: str, kid: str) -> str:
    value = value.strip()
    if not value or not _SECRET_RE.match(value):
        raise KeyringError(f"key {kid}: secret missing or has characters a keyring cannot hold")
    return value

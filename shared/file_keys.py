"""Tenant file names and the R2 keys they live under: the pure rules (no I/O).

Every tenant's objects share one R2 bucket, so the key is the isolation:

    tenants/<tenant_id>/files/<name>

`<tenant_id>` comes from the dispatcher's verified context, never from the request; `<name>`
is what the user typed, after `normalize_name`. A name is refused (FileNameError, the API's
400 `invalid_file_name`) rather than repaired when it holds anything that could read as a
different path to some other program, or to a person:

* empty, over MAX_NAME_BYTES (UTF-8) in all, a segment over MAX_SEGMENT_BYTES, deeper than
  MAX_DEPTH segments;
* absolute (`/x`), a trailing or doubled `/`, a `.` or `..` segment (or any all-dots one), a
  segment with leading or trailing white space;
* a backslash, NUL or any other control character (Unicode Cc), format characters (Cf: the
  bidi overrides and isolates U+202A–U+202E, U+2066–U+2069, marks, zero-width joiners and
  spaces), line/paragraph separators, white space other than U+0020, surrogates, private-use
  and unassigned code points;
* characters that look like a path separator or a dot but are not one: U+2215 DIVISION
  SLASH, U+2044 FRACTION SLASH, U+FF0F FULLWIDTH SOLIDUS, U+29F8 BIG SOLIDUS, U+FF3C, U+2216,
  U+29F5, U+29F9, U+FE68, U+2024 ONE DOT LEADER, U+FF0E, U+FE52, ... (any character whose
  compatibility form holds `/`, `\\` or `.` without being that character, plus a list of
  look-alikes compatibility mapping does not catch).

Names are NFC-normalised first, so `é` typed as `e` + U+0301 and as U+00E9 is one file.
"""

from __future__ import annotations

import re
import unicodedata

from shared.models import TENANT_ID_RE

MAX_NAME_BYTES = 480  # R2 keys may hold 1,024 bytes; the audit log's target column 500 characters
MAX_SEGMENT_BYTES = 255  # what most file systems allow for one name
MAX_DEPTH = 16

TENANTS_PREFIX = "tenants/"
FILES_DIR = "files/"

# Look-alikes of "/", "\" and "." that NFKC does not map onto them (checked by tests).
CONFUSABLE_SEPARATORS = frozenset(
    "\u2215\u2044\u29f8\u29f5\u29f9\u2216\u27cb\u27cd\u1735\u2571\u2572\u29f6\u29f7\u20e5"
    "\ufe68\uff0f\uff3c\u2024\u2025\u2026\uff0e\ufe52\u0337\u0338"
)
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_NOT_A_NAME = re.compile(r"^\.+$")


class FileNameError(ValueError):
    """A file name the platform will not store; the message says why, in words for the user."""


def _check_char(ch: str) -> None:
    if ch == "\\":
        raise FileNameError("File names may not contain a backslash.")
    if ch == "\x00":
        raise FileNameError("File names may not contain NUL.")
    category = unicodedata.category(ch)
    if category in _REFUSED_CATEGORIES:
        raise FileNameError(f"File names may not contain control, format or invisible characters (U+{ord(ch):04X}).")
    if category == "Zs" and ch != " ":
        raise FileNameError(f"File names may contain only the plain space as white space (U+{ord(ch):04X}).")
    if ch in CONFUSABLE_SEPARATORS:
        raise FileNameError(f"File names may not contain characters that look like '/', '\\' or '.' (U+{ord(ch):04X}).")
    if ch not in "/." and any(c in "/\\." for c in unicodedata.normalize("NFKC", ch)):
        raise FileNameError(f"File names may not contain characters that look like '/', '\\' or '.' (U+{ord(ch):04X}).")


def normalize_name(raw: object) -> str:
    """The stored form of a user's file name (NFC), or FileNameError."""
    if not isinstance(raw, str) or not raw:
        raise FileNameError("A file name is required.")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise FileNameError("File names must be Unicode text.") from None
    if len(raw) > MAX_NAME_BYTES * 4:  # before normalising: NFC of a huge string is work for nothing
        raise FileNameError(f"File names are at most {MAX_NAME_BYTES} bytes.")
    name = unicodedata.normalize("NFC", raw)
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise FileNameError(f"File names are at most {MAX_NAME_BYTES} bytes.")
    for ch in name:
        _check_char(ch)
    if name.startswith("/"):
        raise FileNameError("File names are relative: no leading '/'.")
    segments = name.split("/")
    if len(segments) > MAX_DEPTH:
        raise FileNameError(f"File names have at most {MAX_DEPTH} folder levels.")
    for segment in segments:
        if not segment:
            raise FileNameError("File names may not have an empty folder ('//') or end with '/'.")
        if _NOT_A_NAME.match(segment):
            raise FileNameError("'.' and '..' are not file or folder names.")
        if segment != segment.strip():
            raise FileNameError("File and folder names may not start or end with a space.")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise FileNameError(f"Each file or folder name is at most {MAX_SEGMENT_BYTES} bytes.")
    return name


def normalize_prefix(raw: object) -> str:
    """A listing filter: '' (everything) or a name prefix whose complete segments are valid
    names; a trailing '/' selects a folder."""
    if raw is None or raw == "":
        return ""
    if not isinstance(raw, str):
        raise FileNameError("A prefix must be text.")
    folder = raw.endswith("/")
    name = normalize_name(raw[:-1] if folder else raw)
    return name + "/" if folder else name


def tenant_root(tenant_id: str) -> str:
    """`tenants/<tenant_id>/`: everything one tenant holds in the bucket (files and any later kinds)."""
    if not isinstance(tenant_id, str) or not TENANT_ID_RE.match(tenant_id):
        raise ValueError("invalid tenant id")
    return f"{TENANTS_PREFIX}{tenant_id}/"


def files_prefix(tenant_id: str) -> str:
    """`tenants/<tenant_id>/files/`: where a tenant's uploaded files live."""
    return tenant_root(tenant_id) + FILES_DIR


def object_key(tenant_id: str, name: str) -> str:
    """The R2 key of a tenant's file. `name` must come from normalize_name (checked again)."""
    if normalize_name(name) != name:
        raise FileNameError("not a normalised file name")
    return files_prefix(tenant_id) + name


def name_of(tenant_id: str, key: str) -> str | None:
    """The file name of an R2 key under this tenant's files, or None for any other key."""
    prefix = files_prefix(tenant_id)
    return key[len(prefix) :] if key.startswith(prefix) and len(key) > len(prefix) else None


def download_filename(name: str) -> str:
    """`Content-Disposition: attachment` with the last segment of the name: a quoted ASCII
    fallback and the exact name as RFC 8187 `filename*` (UTF-8, percent-encoded)."""
    base = name.rsplit("/", 1)[-1]
    ascii_name = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\;%' else "_" for c in base) or "download"
    encoded = "".join(
        c if re.match(r"[A-Za-z0-9!#$&+\-.^_`|~]", c) else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in base
    )
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{encoded}"

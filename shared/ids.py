"""Identifier shapes, one home: what a tenant id, a profile id, a script name and a request id look like.

Each is a regex string (for pydantic `Field(pattern=...)`) and its compiled form.
"""

from __future__ import annotations

import re

TENANT_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"  # profiles.id, lower-case
SCRIPT_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
REQUEST_ID_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"

TENANT_ID_RE = re.compile(TENANT_ID_PATTERN)
UUID_RE = re.compile(UUID_PATTERN)
SCRIPT_NAME_RE = re.compile(SCRIPT_NAME_PATTERN)
REQUEST_ID_RE = re.compile(REQUEST_ID_PATTERN)

"""The role vocabulary, one home: a profile's `tenant_role` (the `profiles.tenant_role` check in SQL).

`RoleName` is the string type for tokens and request bodies, `Role` the enum the Worker's
authorisation layer ranks; they name the same three roles.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal, get_args

RoleName = Literal["client", "admin", "super_admin"]


class Role(str, Enum):
    CLIENT = "client"
    ADMIN = "admin"
    SUPER_ADMIN = "super_admin"


RANK: dict[Role, int] = {Role.CLIENT: 0, Role.ADMIN: 1, Role.SUPER_ADMIN: 2}
assert set(get_args(RoleName)) == {r.value for r in Role} == {r.value for r in RANK}

"""Who is calling: the authorisation layer endpoints declare (`requires admin`).

The session middleware (tenant_worker.auth) verifies the session cookie against the tenant
the dispatcher resolved and puts a Principal in `call.state["principal"]`; handlers call
`require(call)` or `require(call, Role.ADMIN)`.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.roles import RANK as _RANK
from shared.roles import Role
from tenant_worker.inbound_http import ApiError, Call

PRINCIPAL = "principal"


@dataclass(frozen=True)
class Principal:
    user_id: str
    tenant_id: str
    role: Role
    email: str | None = None
    display_name: str | None = None

    def at_least(self, role: Role) -> bool:
        return _RANK[self.role] >= _RANK[role]


def require(call: Call, role: Role = Role.CLIENT) -> Principal:
    """The signed-in principal of this tenant with at least `role`; 401/403 otherwise."""
    principal = call.state.get(PRINCIPAL)
    if not isinstance(principal, Principal):
        raise ApiError(401, "unauthenticated", "Sign in first.")
    if principal.tenant_id != call.tenant.tenant_id:  # belt and braces: the session check did this
        raise ApiError(401, "unauthenticated", "Sign in first.")
    if not principal.at_least(role):
        raise ApiError(403, "forbidden", f"This needs the {role.value} role.")
    return principal

"""The platform's own names, in one place: its DNS zone and its primary tenant.

Both are facts of this deployment, not per-Worker settings: the zone is also the one the
operator's CLI (controlplane.model), the domain rules (shared.domains) and the demo seed
(localrt.demo) use, and the primary tenant is the platform itself. The Workers never read
them from vars: a tenant learns whether it is the primary tenant from the dispatcher's signed
context (`tenant_type`), never from a var it could be deployed with.
"""

from __future__ import annotations

PLATFORM_ZONE = "cozyartzmedia.com"
PRIMARY_TENANT_ID = "cozyartz"

"""GET /api/health: who answered, for operators and the dispatcher's smoke tests."""

from __future__ import annotations

from tenant_worker.inbound_http import Call, Reply, Route, json_reply


async def health(call: Call) -> Reply:
    t = call.tenant
    return json_reply(
        {
            "status": "ok",
            "tenant_id": t.tenant_id,
            "tenant_type": t.tenant_type.value,
            "tier": t.tier.value,
            "host": t.host,
            "request_id": t.request_id,
            "version": call.services.config.worker_version,
        }
    )


ROUTES = [Route("GET", "/api/health", health, "health")]

"""Tenant Worker entry: thin. All decisions live in tenant_worker.app."""
from workers import WorkerEntrypoint

from tenant_worker.app import app_for
from tenant_worker.usage_meter import UsageMeter  # noqa: F401  (the USAGE Durable Object class)


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        return await app_for(self.env).handle(request, self.ctx.waitUntil)

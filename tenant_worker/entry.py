"""Tenant Worker entry: thin. All decisions live in tenant_worker.app."""

from workers import WorkerEntrypoint

from shared.config import ConfigError
from tenant_worker.app import app_for, misconfigured
from tenant_worker.usage_meter import UsageMeter  # noqa: F401  (the USAGE Durable Object class)


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        try:
            app = app_for(self.env)
        except ConfigError:  # logged once, with the variables' names, when the isolate started
            return misconfigured(request)
        return await app.handle(request, self.ctx.waitUntil)  # the runtime's Response, unwrapped

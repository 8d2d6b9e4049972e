"""Dispatch Worker entry: thin. All decisions live in dispatcher.app (requests) and
dispatcher.health (the cron: health checks of every tenant)."""
from workers import WorkerEntrypoint

from dispatcher.app import dispatcher_for


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        return await dispatcher_for(self.env).handle(request, self.ctx.waitUntil)

    async def scheduled(self, controller, env=None, ctx=None):
        from dispatcher.health import run_scheduled  # only the cron pays for these imports

        await run_scheduled(self.env, dispatcher_for(self.env), self.ctx.waitUntil)

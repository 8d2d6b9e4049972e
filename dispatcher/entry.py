"""Dispatch Worker entry: thin. All decisions live in dispatcher.app (requests) and
dispatcher.health (the cron: health checks of every tenant)."""

from workers import WorkerEntrypoint

from dispatcher.app import dispatcher_for, misconfigured
from shared.config import ConfigError


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        try:
            dispatcher = dispatcher_for(self.env)
        except ConfigError:  # logged once, with the variables' names, when the isolate started
            return misconfigured(request)
        return await dispatcher.serve(request, self.ctx.waitUntil)  # the runtime's Response, unwrapped

    async def scheduled(self, controller, env=None, ctx=None):
        from dispatcher.health import run_scheduled  # only the cron pays for these imports

        try:
            dispatcher = dispatcher_for(self.env)
        except ConfigError:
            return
        await run_scheduled(self.env, dispatcher, self.ctx.waitUntil)

"""Dispatch Worker entry: thin. All decisions live in dispatcher.app."""
from workers import WorkerEntrypoint

from dispatcher.app import dispatcher_for


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        return await dispatcher_for(self.env).handle(request, self.ctx.waitUntil)

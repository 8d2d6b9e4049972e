"""A test-only tenant script that burns CPU past any tier's limit."""
from workers import Response, WorkerEntrypoint


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        x = 0
        for i in range(3_000_000):
            x += i * i
        return Response(str(x))

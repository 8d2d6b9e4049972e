"""A test-only tenant script that throws."""
from workers import WorkerEntrypoint


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        raise RuntimeError("database password is hunter2")

"""A test-only tenant script that records the headers it received."""
from workers import Response, WorkerEntrypoint

SEEN: list[dict[str, str]] = []


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        SEEN.append({k.lower(): v for k, v in request.headers.items()})
        return Response("ok")

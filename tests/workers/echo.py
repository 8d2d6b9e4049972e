"""A test-only tenant script (a real Python Worker on workerd): answers with the headers it got."""

import json

from workers import Response, WorkerEntrypoint


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        seen = {k.lower(): v for k, v in request.headers.items()}
        return Response(json.dumps({"headers": seen, "url": request.url}), headers={"content-type": "application/json"})

"""/healthz (the process answers), /readyz (the database and every target are ready:
``app.propagation.Readiness``) and /metrics (Prometheus). No bearer token: these are for
the orchestrator and the scraper on loopback."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from scimgate.api.pipeline import Api


class HealthRoutes:
    def __init__(self, api: Api) -> None:
        self.api = api

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        ok, detail = await run_in_threadpool(self.api.readiness.check)
        return JSONResponse(
            {"status": "ready" if ok else "unready", **detail}, status_code=200 if ok else 503
        )

    async def metrics(self, request: Request) -> Response:
        body, ctype = await run_in_threadpool(self.api.metrics.render)
        return Response(body, media_type=ctype)

"""The ASGI application: one explicit route table over the route modules (``api.routes``),
and SCIM error bodies for unknown paths and methods."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scimgate.api import http
from scimgate.api.pipeline import Api
from scimgate.api.routes.bulk import BulkRoutes
from scimgate.api.routes.discovery import DiscoveryRoutes
from scimgate.api.routes.health import HealthRoutes
from scimgate.api.routes.resources import ResourceRoutes
from scimgate.scim import errors

__all__ = ["Api", "build_app", "routes"]

SCIM = "/scim/v2"
WRITES = ["PUT", "PATCH", "DELETE"]


async def not_allowed(request: Request) -> Response:
    return http.error_response(
        errors.MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
    )


async def not_found(request: Request, exc: Exception) -> Response:
    return http.error_response(errors.NotFound(f"no such endpoint: {request.url.path}"))


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    return await not_allowed(request)


def resource_routes(r: ResourceRoutes, plural: str) -> list[Route]:
    base = f"{SCIM}/{plural}"
    return [
        Route(base, r.list, methods=["GET"]),
        Route(base, r.create, methods=["POST"]),
        Route(base, not_allowed, methods=WRITES),
        Route(base + "/.search", r.search, methods=["POST"]),
        Route(base + "/{id}", r.get, methods=["GET"]),
        Route(base + "/{id}", r.write, methods=WRITES),
        Route(base + "/{id}", not_allowed, methods=["POST"]),
    ]


def routes(api: Api) -> list[Route]:
    """Every endpoint, in matching order."""
    discovery = DiscoveryRoutes(api)
    health = HealthRoutes(api)
    return [
        *resource_routes(ResourceRoutes(api, "User"), "Users"),
        *resource_routes(ResourceRoutes(api, "Group"), "Groups"),
        *resource_routes(ResourceRoutes(api, "Agent"), "Agents"),
        *resource_routes(ResourceRoutes(api, "AgenticApplication"), "AgenticApplications"),
        Route(f"{SCIM}/.search", ResourceRoutes(api, "*").search, methods=["POST"]),
        Route(f"{SCIM}/Bulk", BulkRoutes(api).bulk, methods=["POST"]),
        Route(f"{SCIM}/ServiceProviderConfig", discovery.service_provider_config, methods=["GET"]),
        Route(f"{SCIM}/ResourceTypes", discovery.resource_types, methods=["GET"]),
        Route(f"{SCIM}/ResourceTypes/{{id}}", discovery.resource_types, methods=["GET"]),
        Route(f"{SCIM}/Schemas", discovery.schemas, methods=["GET"]),
        Route(f"{SCIM}/Schemas/{{id:path}}", discovery.schemas, methods=["GET"]),
        Route(f"{SCIM}/Me", discovery.me, methods=["GET", "POST", *WRITES]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", health.metrics, methods=["GET"]),
    ]


def build_app(api: Api) -> Starlette:
    app = Starlette(
        routes=routes(api), exception_handlers={404: not_found, 405: method_not_allowed}
    )
    app.state.api = api
    return app

"""Discovery (RFC 7644 §4): /ServiceProviderConfig, /ResourceTypes, /Schemas, and /Me
(answered 501: SCIM clients here are IdPs). Behind the bearer token like every endpoint."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from scimgate.api import http
from scimgate.api.pipeline import Api
from scimgate.audit.log import Actor
from scimgate.scim import discovery, errors
from scimgate.scim.schema import RESOURCE_TYPES


class DiscoveryRoutes:
    def __init__(self, api: Api) -> None:
        self.api = api

    async def service_provider_config(self, request: Request) -> Response:
        s = self.api.settings
        return await self.api.call(
            request,
            "/ServiceProviderConfig",
            lambda actor, _body: http.scim_response(
                discovery.service_provider_config(
                    http.base_url(request),
                    max_operations=s.bulk_max_operations,
                    max_payload=s.bulk_max_payload_bytes,
                    max_results=s.max_results,
                )
            ),
        )

    async def resource_types(self, request: Request) -> Response:
        rid = request.path_params.get("id")

        def work(actor: Actor, _body: Any) -> Response:
            base = http.base_url(request)
            if rid is None:
                return http.scim_response(
                    discovery.list_response(discovery.all_resource_types(base))
                )
            if rid not in RESOURCE_TYPES:
                raise errors.NotFound(f"ResourceType {rid} not found")
            return http.scim_response(discovery.resource_type(rid, base))

        return await self.api.call(request, "/ResourceTypes", work)

    async def schemas(self, request: Request) -> Response:
        rid = request.path_params.get("id")

        def work(actor: Actor, _body: Any) -> Response:
            base = http.base_url(request)
            if rid is None:
                return http.scim_response(discovery.list_response(discovery.all_schemas(base)))
            doc = discovery.schema(rid, base)
            if doc is None:
                raise errors.NotFound(f"Schema {rid} not found")
            return http.scim_response(doc)

        return await self.api.call(request, "/Schemas", work)

    async def me(self, request: Request) -> Response:
        def work(actor: Actor, _body: Any) -> Response:
            raise errors.NotImplementedScim(
                "/Me is not supported: SCIM clients here are IdPs, not end users"
            )

        return await self.api.call(request, "/Me", work)

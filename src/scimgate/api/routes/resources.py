"""/Users and /Groups (RFC 7644 §3.3 to §3.6): create, get, list and search, replace, patch,
delete; /.search at the root pages across both types (§3.4.3)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from scimgate.api import http
from scimgate.api.pipeline import Api, WriteResultResponse
from scimgate.app.service import is_user_name_lookup
from scimgate.audit.log import Actor
from scimgate.scim import discovery, errors
from scimgate.scim.etag import not_modified
from scimgate.scim.resource import project
from scimgate.scim.schema import RESOURCE_TYPES, SEARCH_REQUEST_SCHEMA


def wants_members(attrs: list[str] | None, excluded: list[str] | None) -> bool:
    """Whether a projection keeps Group ``members`` (a group may have a million)."""
    if excluded and any(
        a.lower().endswith("members") or a.lower().startswith("members") for a in excluded
    ):
        return False
    if attrs is not None:
        return any(a.lower().split(":")[-1].startswith("members") for a in attrs)
    return True


class ResourceRoutes:
    """The endpoints of one resource type (``rtype`` "User" or "Group"; "*" for the root
    /.search)."""

    def __init__(self, api: Api, rtype: str) -> None:
        self.api = api
        self.rtype = rtype
        self.endpoint = f"/{rtype}s"

    def _list_or_search(
        self,
        request: Request,
        params: dict[str, Any],
        attrs: list[str] | None,
        excluded: list[str] | None,
    ) -> Response:
        s = self.api.settings
        # RFC 7644 §3.4.2: every parameter type-checked, whether from a query or a body.
        start = http.int_param(params.get("startindex"), "startIndex", 1)
        count = http.int_param(params.get("count"), "count", s.default_count)
        count = max(0, min(count, s.max_results))
        sort_order = http.str_param(params.get("sortorder"), "sortOrder")
        if sort_order and sort_order.lower() not in ("ascending", "descending"):
            raise errors.InvalidValue("sortOrder must be ascending or descending")
        total, found = self.api.service.search_types(
            [self.rtype] if self.rtype != "*" else list(RESOURCE_TYPES),
            http.base_url(request),
            filter_text=http.str_param(params.get("filter"), "filter"),
            sort_by=http.str_param(params.get("sortby"), "sortBy"),
            sort_order=sort_order,
            start_index=start,
            count=count,
            include_members=wants_members(attrs, excluded),
        )
        resources = [project(r, RESOURCE_TYPES[name], attrs, excluded) for name, r in found]
        return http.scim_response(
            discovery.list_response(resources, total=total, start_index=max(start, 1))
        )

    async def list(self, request: Request) -> Response:
        def work(actor: Actor, _body: Any) -> Response:
            # Parameters are checked inside the work: after authentication, as SCIM errors.
            q = http.query(request)
            return self._list_or_search(request, q, *http.projection(q))

        given = {k.lower(): v for k, v in request.query_params.items()}  # unchecked: a hint
        return await self.api.call(
            request,
            self.endpoint,
            work,
            inline=self.rtype == "User"
            and is_user_name_lookup(given.get("filter"), given.get("sortby")),
        )

    async def search(self, request: Request) -> Response:
        def work(actor: Actor, body: Any) -> Response:
            if not isinstance(body, dict):
                raise errors.InvalidSyntax("a SearchRequest must be a JSON object")
            schemas = body.get("schemas")
            if schemas is not None and SEARCH_REQUEST_SCHEMA not in (
                schemas if isinstance(schemas, list) else []
            ):
                raise errors.InvalidSyntax(f"schemas must contain {SEARCH_REQUEST_SCHEMA}")
            params = {k.lower(): v for k, v in body.items()}
            return self._list_or_search(request, params, *http.projection(params))

        return await self.api.call(
            request, "/.search", work, body_limit=self.api.settings.max_body_bytes
        )

    async def create(self, request: Request) -> Response:
        rtype = self.rtype

        def work(actor: Actor, body: Any) -> WriteResultResponse:
            attrs, excluded = http.projection(http.query(request))
            result = self.api.service.create(rtype, body, actor, http.base_url(request))
            assert result.resource is not None
            res = result.resource
            self.api.metrics.writes.labels(rtype, "create").inc()
            return WriteResultResponse(
                http.scim_response(
                    project(res, RESOURCE_TYPES[rtype], attrs, excluded),
                    201,
                    {"Location": res["meta"]["location"], "ETag": res["meta"]["version"]},
                ),
                result,
            )

        return await self.api.call(
            request, self.endpoint, work, body_limit=self.api.settings.max_body_bytes
        )

    async def get(self, request: Request) -> Response:
        rtype = self.rtype
        rid = request.path_params["id"]
        if_none_match = request.headers.get("if-none-match")

        def work(actor: Actor, _body: Any) -> Response:
            attrs, excluded = http.projection(http.query(request))
            res = self.api.service.get(
                rtype, rid, http.base_url(request), include_members=wants_members(attrs, excluded)
            )
            tag = res["meta"]["version"]
            if not_modified(if_none_match, tag):
                return Response(status_code=304, headers={"ETag": tag})
            return http.scim_response(
                project(res, RESOURCE_TYPES[rtype], attrs, excluded), 200, {"ETag": tag}
            )

        # One user is one indexed read; a group may have a million members.
        return await self.api.call(request, f"/{rtype}s/{{id}}", work, inline=rtype == "User")

    async def write(self, request: Request) -> Response:
        """PUT, PATCH or DELETE of one resource."""
        rtype = self.rtype
        rid = request.path_params["id"]
        method = request.method
        if_match = request.headers.get("if-match")
        api = self.api

        def work(actor: Actor, body: Any) -> WriteResultResponse:
            attrs, excluded = http.projection(http.query(request))
            base = http.base_url(request)
            rt = RESOURCE_TYPES[rtype]
            if method == "DELETE":
                result = api.service.delete(rtype, rid, actor, base, if_match)
                api.metrics.writes.labels(rtype, "delete").inc()
                return WriteResultResponse(Response(status_code=204), result)
            if method == "PUT":
                result = api.service.replace(rtype, rid, body, actor, base, if_match)
                api.metrics.writes.labels(rtype, "replace").inc()
            else:
                want_members = (
                    rtype == "Group" and attrs is not None and wants_members(attrs, excluded)
                )
                result = api.service.patch(
                    rtype, rid, body, actor, base, if_match, want_members=want_members
                )
                api.metrics.writes.labels(rtype, "patch").inc()
                if rtype == "Group" and attrs is None:
                    # Group PATCH answers 204 (RFC 7644 §3.5.2): returning every member of a
                    # large group after a one-member change is what makes peers O(n).
                    res = result.resource or {}
                    return WriteResultResponse(
                        Response(
                            status_code=204,
                            headers={"ETag": res.get("meta", {}).get("version", "")},
                        ),
                        result,
                    )
            res = result.resource or {}
            return WriteResultResponse(
                http.scim_response(
                    project(res, rt, attrs, excluded), 200, {"ETag": res["meta"]["version"]}
                ),
                result,
            )

        limit = api.settings.max_body_bytes if method in ("PUT", "PATCH") else None
        return await api.call(request, f"/{rtype}s/{{id}}", work, body_limit=limit)

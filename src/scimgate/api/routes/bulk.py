"""/Bulk (RFC 7644 §3.7): the request within maxPayloadSize, each operation run by the
Bulk use case (``app.bulk``)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from scimgate.api import http
from scimgate.api.pipeline import Api, WriteResultResponse
from scimgate.app.bulk import run_bulk
from scimgate.app.service import WriteResult
from scimgate.audit.log import Actor


class BulkRoutes:
    def __init__(self, api: Api) -> None:
        self.api = api

    async def bulk(self, request: Request) -> Response:
        s = self.api.settings

        def work(actor: Actor, body: Any) -> WriteResultResponse:
            response, results = run_bulk(
                self.api.service,
                body,
                actor,
                http.base_url(request),
                max_operations=s.bulk_max_operations,
            )
            merged = WriteResult(None, [c for r in results for c in r.changes])
            return WriteResultResponse(http.scim_response(response, 200), merged)

        # Over maxPayloadSize: 413 (RFC 7644 §3.7.4), from the body reader. Text is checked
        # per operation (run_bulk), so that one bad operation fails alone (§3.7.3).
        return await self.api.call(
            request, "/Bulk", work, body_limit=s.bulk_max_payload_bytes, check_text=False
        )

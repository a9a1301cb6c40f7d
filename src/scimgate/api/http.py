"""HTTP helpers shared by the routes: SCIM responses, bodies, query parameters."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from scimgate.scim import errors

SCIM_CONTENT_TYPE = "application/scim+json"
_ACCEPTED_TYPES = ("application/scim+json", "application/json")


def scim_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(payload, status_code=status, headers=headers, media_type=SCIM_CONTENT_TYPE)


def error_response(exc: errors.ScimError) -> Response:
    headers = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="scimgate"'
    return scim_response(exc.body(), exc.status, headers)


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request body as JSON: 415 for other media types, 413 beyond max_bytes, 400 for
    anything that is not well-formed JSON (RFC 7644 §3.12 invalidSyntax)."""
    ctype = request.headers.get("content-type", "")
    media = ctype.split(";", 1)[0].strip().lower()
    if media and media not in _ACCEPTED_TYPES:
        raise errors.UnsupportedMediaType(
            f"Content-Type {media!r} is not supported; use application/scim+json"
        )
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > max_bytes:
                raise errors.PayloadTooLarge(f"request body over {max_bytes} bytes")
        except ValueError:
            raise errors.InvalidSyntax("bad Content-Length") from None
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise errors.PayloadTooLarge(f"request body over {max_bytes} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # The connection closed mid-body (the client left, or its body deadline passed).
        raise errors.ScimError("request body not received in full", status=408) from None
    raw = b"".join(chunks)
    if not raw.strip():
        raise errors.InvalidSyntax("request body is empty")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        detail = str(exc) if isinstance(exc, ValueError) else "JSON nested too deeply"
        raise errors.InvalidSyntax(f"request body is not valid JSON: {detail}") from None


def query(request: Request) -> dict[str, str]:
    """Query parameters with case-insensitive names (IdPs differ in case)."""
    return {k.lower(): v for k, v in request.query_params.items()}


def csv_param(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def int_param(value: Any, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise errors.InvalidValue(f"{name} must be an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise errors.InvalidValue(f"{name} must be an integer") from None


def base_url(request: Request) -> str:
    # The SCIM base URL as the client reached it: the scheme from a trusted proxy's
    # X-Forwarded-Proto (api/forwarded.py), the host from the Host header.
    return str(request.base_url).rstrip("/") + "/scim/v2"

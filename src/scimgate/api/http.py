"""HTTP helpers shared by the routes: SCIM responses, bodies, query parameters."""

from __future__ import annotations

import json
import math
import re
import uuid
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from scimgate.scim import errors, text

# Query parameter values (filter, attributes, sortBy, ...): longer ones are refused (400).
MAX_QUERY_VALUE_CHARS = 8192
# A client's X-Request-ID is kept only when short and of a safe charset (it lands in logs,
# the audit trail and a response header); otherwise the request gets an id of our own.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# startIndex and count beyond this are clamped (SQL OFFSET/LIMIT are 64-bit; RFC 7644
# §3.4.2.4 lets a provider answer fewer results than asked).
MAX_INDEX = 2**31 - 1

SCIM_CONTENT_TYPE = "application/scim+json"
_ACCEPTED_TYPES = ("application/scim+json", "application/json")


def scim_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # backslashreplace: a lone surrogate (only ever echoed client text) becomes a JSON \\u
    # escape instead of failing the response; well-formed text encodes as before.
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8", "backslashreplace"
    )
    return Response(payload, status_code=status, headers=headers, media_type=SCIM_CONTENT_TYPE)


def error_response(exc: errors.ScimError) -> Response:
    headers = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="scimgate"'
    if isinstance(exc, errors.TooManyRequests):
        headers["Retry-After"] = str(exc.retry_after)
    return scim_response(exc.body(), exc.status, headers)


async def read_json(request: Request, max_bytes: int, *, check_text: bool = True) -> Any:
    """The request body as JSON: 415 for other media types, 413 beyond max_bytes, 400 for
    anything that is not well-formed UTF-8 JSON (RFC 7644 §3.12 invalidSyntax) or that holds
    a lone surrogate, NUL or deep nesting (``check_text=False``: the caller checks the parts,
    ``scim.text.check_document``)."""
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
    return text.parse_json(raw, check=check_text)


def query(request: Request) -> dict[str, str]:
    """Query parameters with case-insensitive names (IdPs differ in case), each a bounded
    string without NUL (the server decodes %-escapes as UTF-8 with replacement, so no lone
    surrogate can appear)."""
    params = {k.lower(): v for k, v in request.query_params.items()}
    for name, value in params.items():
        if len(value) > MAX_QUERY_VALUE_CHARS:
            raise errors.InvalidValue(
                f"query parameter {text.echo(name)!r} is longer than {MAX_QUERY_VALUE_CHARS}"
            )
        if problem := text.char_problem(value):
            raise errors.InvalidValue(f"query parameter {text.echo(name)!r} {problem}")
    return params


def csv_param(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def names_param(value: Any, name: str) -> list[str] | None:
    """``attributes`` / ``excludedAttributes`` (RFC 7644 §3.4.2.5, §3.4.3): a list of
    attribute names in a SearchRequest, a comma-separated string in a query (both taken)."""
    if value is None or isinstance(value, str):
        return csv_param(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value  # scim.resource.project splits "a,b" items too
    raise errors.InvalidValue(f"{name} must be an array of attribute names")


def projection(params: dict[str, Any]) -> tuple[list[str] | None, list[str] | None]:
    """``attributes`` / ``excludedAttributes`` (lower-cased names) of a query or a
    SearchRequest, type-checked."""
    return (
        names_param(params.get("attributes"), "attributes"),
        names_param(params.get("excludedattributes"), "excludedAttributes"),
    )


def str_param(value: Any, name: str) -> str | None:
    """A parameter that must be a string when present (filter, sortBy, sortOrder)."""
    if value is None or isinstance(value, str):
        return value
    raise errors.InvalidValue(f"{name} must be a string")


def int_param(value: Any, name: str, default: int) -> int:
    """An integer parameter (startIndex, count): a JSON number or a decimal string."""
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise errors.InvalidValue(f"{name} must be an integer")
    if isinstance(value, float) and not math.isfinite(value):
        raise errors.InvalidValue(f"{name} must be an integer")
    try:
        number = int(value)
    except (ValueError, OverflowError):
        raise errors.InvalidValue(f"{name} must be an integer") from None
    return max(-MAX_INDEX, min(number, MAX_INDEX))


def base_url(request: Request) -> str:
    # The SCIM base URL as the client reached it: the scheme from a trusted proxy's
    # X-Forwarded-Proto (api/forwarded.py), the host from the Host header.
    return str(request.base_url).rstrip("/") + "/scim/v2"


def request_id(request: Request) -> str:
    given = request.headers.get("x-request-id")
    return given if given is not None and _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex

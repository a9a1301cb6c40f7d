"""Bulk operations (RFC 7644 §3.7): each operation in its own transaction, bulkId
references resolved, failOnErrors honoured.

Every operation gets its own status in a 200 response (§3.7.3): an invalid one (a lone
surrogate in its data, a bad path, ...) is a 4xx entry and the others go on. An *unexpected*
error (a bug, the database gone) rolls back that operation's transaction, is reported as a
500 entry with an RFC 7644 §3.12 error body (the stack trace only in the log), and ends the
request as if failOnErrors had been reached: the operations before it stay committed and
reported, the ones after it are not processed and not listed, so a client resubmits exactly
those. A bulk request is never answered 500 once one of its operations committed.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from scimgate.app.service import ScimService, WriteResult
from scimgate.audit.log import Actor
from scimgate.scim import errors, text
from scimgate.scim.schema import BULK_REQUEST_SCHEMA, BULK_RESPONSE_SCHEMA

_PATH_RE = re.compile(r"^/(Users|Groups|Agents|AgenticApplications)(?:/([^/]+))?$")
_TYPE_OF_ENDPOINT = {
    "Users": "User",
    "Groups": "Group",
    "Agents": "Agent",
    "AgenticApplications": "AgenticApplication",
}
_BULK_REF = re.compile(r"^bulkId:(.+)$")
log = logging.getLogger("scimgate.bulk")


class _Unresolved(Exception):
    pass


def _resolve_refs(value: Any, ids: dict[str, str]) -> Any:
    """Replace "bulkId:x" strings by the id created for x (RFC 7644 §3.7.2)."""
    if isinstance(value, str):
        m = _BULK_REF.match(value)
        if m:
            if m.group(1) not in ids:
                raise _Unresolved(m.group(1))
            return ids[m.group(1)]
        return value
    if isinstance(value, list):
        return [_resolve_refs(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _resolve_refs(v, ids) for k, v in value.items()}
    return value


def run_bulk(
    service: ScimService, body: Any, actor: Actor, base_url: str, *, max_operations: int
) -> tuple[dict[str, Any], list[WriteResult]]:
    if not isinstance(body, dict):
        raise errors.InvalidSyntax("a BulkRequest must be a JSON object")
    # The body was parsed without the text walk: the envelope here, each operation alone.
    text.check_document({k: v for k, v in body.items() if k != "Operations"})
    schemas = body.get("schemas")
    if not isinstance(schemas, list) or BULK_REQUEST_SCHEMA not in schemas:
        raise errors.InvalidSyntax(f"schemas must contain {BULK_REQUEST_SCHEMA}")
    ops = body.get("Operations")
    if not isinstance(ops, list) or not ops:
        raise errors.InvalidSyntax("Operations must be a non-empty array")
    if len(ops) > max_operations:
        raise errors.PayloadTooLarge(
            f"{len(ops)} operations exceed maxOperations ({max_operations})"
        )
    fail_on = body.get("failOnErrors")
    if fail_on is not None and (
        not isinstance(fail_on, int) or isinstance(fail_on, bool) or fail_on < 1
    ):
        raise errors.InvalidValue("failOnErrors must be a positive integer")

    ids: dict[str, str] = {}
    results: list[WriteResult] = []
    responses: list[dict[str, Any] | None] = [None] * len(ops)
    pending = list(range(len(ops)))
    error_count = 0
    # Operations may reference bulkIds defined later (RFC 7644 §3.7.2); retry deferred ones
    # while each pass makes progress.
    while pending and (fail_on is None or error_count < fail_on):
        deferred: list[int] = []
        for i in pending:
            if fail_on is not None and error_count >= fail_on:
                break
            try:
                responses[i], result = _run_one(service, ops[i], ids, actor, base_url)
                if result is not None:
                    results.append(result)
            except _Unresolved:
                deferred.append(i)
                continue
            except Exception:
                log.exception("bulk operation failed unexpectedly", extra={"operation": i})
                responses[i] = _error_entry(
                    ops[i],
                    errors.ScimError(
                        "internal error: this operation was rolled back and the ones after "
                        "it were not processed",
                        status=500,
                    ),
                )
                pending = deferred = []
                break
            if int(responses[i]["status"]) >= 400:  # type: ignore[index]
                error_count += 1
        if not pending:
            break
        if len(deferred) == len(pending):
            for i in deferred:
                responses[i] = _error_entry(
                    ops[i],
                    errors.InvalidValue(
                        "bulkId reference cannot be resolved (unknown or circular)"
                    ),
                )
                error_count += 1
            break
        pending = deferred
    return {
        "schemas": [BULK_RESPONSE_SCHEMA],
        "Operations": [r for r in responses if r is not None],
    }, results


def _echoable(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 256 and text.char_problem(value) is None


def _error_entry(op: Any, exc: errors.ScimError) -> dict[str, Any]:
    entry: dict[str, Any] = {"status": str(exc.status), "response": exc.body()}
    if isinstance(op, dict):
        # Echo method and bulkId only when they are short, well-formed strings.
        if _echoable(op.get("method")):
            entry["method"] = op["method"]
        if _echoable(op.get("bulkId")):
            entry["bulkId"] = op["bulkId"]
    return entry


def _run_one(
    service: ScimService, op: Any, ids: dict[str, str], actor: Actor, base_url: str
) -> tuple[dict[str, Any], WriteResult | None]:
    try:
        if not isinstance(op, dict):
            raise errors.InvalidSyntax("each operation must be an object")
        text.check_document(op, "operation")
        raw_method = op.get("method")
        method = raw_method.upper() if isinstance(raw_method, str) else ""
        path = op.get("path")
        bulk_id = op.get("bulkId")
        if method not in ("POST", "PUT", "PATCH", "DELETE"):
            raise errors.InvalidSyntax(f"unsupported bulk method {text.echo(raw_method)!r}")
        if not isinstance(path, str):
            raise errors.InvalidSyntax("each operation needs a path")
        if bulk_id is not None and not isinstance(bulk_id, str):
            raise errors.InvalidValue("bulkId must be a string")
        if "/bulkId:" in path:
            ref = path.split("/bulkId:", 1)[1]
            if ref not in ids:
                raise _Unresolved(ref)
            path = path.split("/bulkId:", 1)[0] + "/" + ids[ref]
        m = _PATH_RE.match(path)
        if not m:
            raise errors.InvalidPath(f"bad bulk path {text.echo(path, 128)!r}")
        rtype = _TYPE_OF_ENDPOINT[m.group(1)]
        rid = m.group(2)
        data = _resolve_refs(op.get("data"), ids)
        if_match = op.get("version")
        if if_match is not None and not isinstance(if_match, str):
            raise errors.InvalidValue("version must be a string (an ETag)")
        entry: dict[str, Any] = {"method": method}
        if bulk_id is not None:
            entry["bulkId"] = bulk_id
        if method == "POST":
            if rid is not None:
                raise errors.InvalidPath(f"POST goes to /{m.group(1)}")
            if not isinstance(bulk_id, str) or not bulk_id:
                raise errors.InvalidSyntax("POST operations need a bulkId")
            result = service.create(rtype, data, actor, base_url)
            assert result.resource is not None
            ids[bulk_id] = result.resource["id"]
            return {
                **entry,
                "location": result.resource["meta"]["location"],
                "version": result.resource["meta"]["version"],
                "status": "201",
            }, result
        if rid is None:
            raise errors.InvalidPath(f"{method} needs /{m.group(1)}/<id>")
        if method == "DELETE":
            result = service.delete(rtype, rid, actor, base_url, if_match)
            return {**entry, "location": f"{base_url}/{m.group(1)}/{rid}", "status": "204"}, result
        if method == "PUT":
            result = service.replace(rtype, rid, data, actor, base_url, if_match)
        else:
            result = service.patch(rtype, rid, data, actor, base_url, if_match)
        res = result.resource or {}
        return {
            **entry,
            "location": f"{base_url}/{m.group(1)}/{rid}",
            "version": res.get("meta", {}).get("version"),
            "status": "200",
        }, result
    except errors.ScimError as exc:
        return _error_entry(op, exc), None

"""SCIM as the tests speak it: the RFC 7643/7644 URNs, request bodies, and the calls that
create users and groups (each asserting it succeeded) over an httpx client of a real
server.

The URNs are written out here, not imported from ``scimgate.scim.schema``: a test must
fail if the product's constants drift from the RFCs.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import httpx

# RFC 7643 §8.7.1 / RFC 7644 §3.1 (schemas) and §3.1, §3.4.3, §3.5.2, §3.7, §3.12 (messages)
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
SEARCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK_REQUEST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"


def tag() -> str:
    """A short unique suffix: tests share one server per backend, so names must not clash."""
    return uuid.uuid4().hex[:10]


def user_body(
    user_name: str, /, *, email: str | None = None, email_type: str | None = None, **extra: Any
) -> dict[str, Any]:
    """A User POST/PUT body; ``email`` becomes the one primary e-mail (of ``email_type``)."""
    body: dict[str, Any] = {"schemas": [USER_SCHEMA], "userName": user_name}
    if email is not None:
        address: dict[str, Any] = {"value": email}
        if email_type is not None:
            address["type"] = email_type
        body["emails"] = [{**address, "primary": True}]
    return {**body, **extra}


def new_user(scim: httpx.Client, user_name: str | None = None, /, **extra: Any) -> dict[str, Any]:
    """POST /Users (a unique userName unless given); the created resource."""
    r = scim.post("/Users", json=user_body(user_name or f"u-{tag()}@example.com", **extra))
    assert r.status_code == 201, r.text
    return dict(r.json())


def post_user(
    scim: httpx.Client, user_name: str, /, *, email: str | None = None, **extra: Any
) -> httpx.Response:
    """POST /Users with ``email`` (default: the userName) as its primary e-mail, the
    identity the demo policy keys on; the response, not checked (the caller asserts)."""
    return scim.post("/Users", json=user_body(user_name, email=email or user_name, **extra))


def create_user(scim: httpx.Client, user_name: str, email: str | None = None, **extra: Any) -> str:
    """:func:`post_user`, asserted created; the new id."""
    r = post_user(scim, user_name, email=email, **extra)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def new_group(
    scim: httpx.Client, name: str | None = None, members: Sequence[str] = ()
) -> dict[str, Any]:
    """POST /Groups (a unique displayName unless given) with these member ids."""
    body = {
        "schemas": [GROUP_SCHEMA],
        "displayName": name or f"g-{tag()}",
        "members": [{"value": m} for m in members],
    }
    r = scim.post("/Groups", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def patch_body(*ops: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_SCHEMA], "Operations": list(ops)}


def patch(scim: httpx.Client, path: str, *ops: dict[str, Any]) -> httpx.Response:
    """PATCH ``path`` with these operations (not checked: the caller asserts)."""
    return scim.patch(path, json=patch_body(*ops))


def set_active(scim: httpx.Client, user_id: str, active: bool) -> httpx.Response:
    return patch(scim, f"/Users/{user_id}", {"op": "replace", "path": "active", "value": active})


def deactivate(scim: httpx.Client, user_id: str) -> None:
    """PATCH active=false (what every IdP sends to deprovision), asserted."""
    r = set_active(scim, user_id, False)
    assert r.status_code in (200, 204), r.text

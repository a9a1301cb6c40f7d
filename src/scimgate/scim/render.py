"""Stored rows as SCIM resources (RFC 7643 §3.1): schemas, attributes, ``groups`` /
``members`` with their ``$ref``, and ``meta`` (resourceType, created, lastModified,
location, version).

Does: shape the JSON a client gets from what the store holds, pure.
Does not: read rows (``scimgate.store.resources`` does), or project attributes
(``scim.resource.project``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from scimgate.scim.etag import etag
from scimgate.scim.schema import ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, USER_SCHEMA

_ENDPOINTS = {"User": "Users", "Group": "Groups", "Agent": "Agents"}


class UserRecord(Protocol):
    """What a stored user row gives (``store.resources.UserRow``)."""

    @property
    def id(self) -> str: ...
    @property
    def user_name(self) -> str: ...
    @property
    def active(self) -> bool: ...
    @property
    def attrs(self) -> dict[str, Any]: ...
    @property
    def version(self) -> int: ...
    @property
    def created(self) -> str: ...
    @property
    def last_modified(self) -> str: ...


class GroupRecord(Protocol):
    """What a stored group row gives (``store.resources.GroupRow``)."""

    @property
    def id(self) -> str: ...
    @property
    def display_name(self) -> str: ...
    @property
    def attrs(self) -> dict[str, Any]: ...
    @property
    def version(self) -> int: ...
    @property
    def created(self) -> str: ...
    @property
    def last_modified(self) -> str: ...


def user_resource(
    row: UserRecord, base_url: str, groups: Sequence[tuple[str, str]] = ()
) -> dict[str, Any]:
    """A User; ``groups`` are its direct groups as (group id, displayName)."""
    schemas = [USER_SCHEMA]
    if ENTERPRISE_USER_SCHEMA in row.attrs:
        schemas.append(ENTERPRISE_USER_SCHEMA)
    out: dict[str, Any] = {"schemas": schemas, "id": row.id, **row.attrs}
    out["userName"] = row.user_name
    out["active"] = row.active
    if groups:
        # RFC 7643 §4.1.2: groups are read-only, derived from the groups' members.
        out["groups"] = [
            {"value": gid, "$ref": f"{base_url}/Groups/{gid}", "display": name, "type": "direct"}
            for gid, name in groups
        ]
    out["meta"] = {
        "resourceType": "User",
        "created": row.created,
        "lastModified": row.last_modified,
        "location": f"{base_url}/Users/{row.id}",
        "version": etag(row.version),
    }
    return out


def group_resource(
    row: GroupRecord, base_url: str, members: Sequence[dict[str, Any]] | None
) -> dict[str, Any]:
    """A Group; ``members`` as the store lists them (value, type, display), or None."""
    out: dict[str, Any] = {"schemas": [GROUP_SCHEMA], "id": row.id, **row.attrs}
    out["displayName"] = row.display_name
    if members:
        out["members"] = [
            {**m, "$ref": f"{base_url}/{_ENDPOINTS.get(m['type'], 'Groups')}/{m['value']}"}
            for m in members
        ]
    out["meta"] = {
        "resourceType": "Group",
        "created": row.created,
        "lastModified": row.last_modified,
        "location": f"{base_url}/Groups/{row.id}",
        "version": etag(row.version),
    }
    return out

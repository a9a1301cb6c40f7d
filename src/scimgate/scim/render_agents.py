"""Stored agent rows as SCIM resources (draft-abbey-scim-agent-extension-00 §3-§4,
draft-wzdk-scim-agent-resource-00 §2): ``owners`` with their ``$ref``, the read-only
``groups`` and ``applications``, an application's ``agents``, and ``meta``.

Does: shape the JSON a client gets from what the store holds, pure.
Does not: read rows (``scimgate.store.agents``), or project attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from scimgate.scim.etag import etag
from scimgate.scim.schema import AGENT_SCHEMA, AGENTIC_APPLICATION_SCHEMA

_ENDPOINTS = {"User": "Users", "Group": "Groups"}


class AgentRecord(Protocol):
    """What a stored agent or application row gives (``store.agents``)."""

    @property
    def id(self) -> str: ...
    @property
    def attrs(self) -> dict[str, Any]: ...
    @property
    def version(self) -> int: ...
    @property
    def created(self) -> str: ...
    @property
    def last_modified(self) -> str: ...


def _meta(kind: str, endpoint: str, row: AgentRecord, base_url: str) -> dict[str, Any]:
    return {
        "resourceType": kind,
        "created": row.created,
        "lastModified": row.last_modified,
        "location": f"{base_url}/{endpoint}/{row.id}",
        "version": etag(row.version),
    }


def agent_resource(
    row: AgentRecord,
    base_url: str,
    groups: Sequence[tuple[str, str]] = (),
    applications: Sequence[tuple[str, str, str]] = (),
) -> dict[str, Any]:
    """An Agent; ``groups`` as (group id, displayName), ``applications`` as (id, name, kind)."""
    out: dict[str, Any] = {"schemas": [AGENT_SCHEMA], "id": row.id, **row.attrs}
    owners = out.get("owners")
    if owners:
        out["owners"] = [
            {**o, "$ref": f"{base_url}/{_ENDPOINTS.get(o.get('type', ''), 'Users')}/{o['value']}"}
            for o in owners
        ]
    parent = out.get("parent")
    if isinstance(parent, dict) and parent.get("value"):
        out["parent"] = {**parent, "$ref": f"{base_url}/Agents/{parent['value']}"}
    if groups:
        out["groups"] = [
            {"value": gid, "$ref": f"{base_url}/Groups/{gid}", "display": name, "type": "direct"}
            for gid, name in groups
        ]
    if applications:
        out["applications"] = [
            {
                "value": aid,
                "$ref": f"{base_url}/AgenticApplications/{aid}",
                "display": name,
                "type": kind,
            }
            for aid, name, kind in applications
        ]
    out["meta"] = _meta("Agent", "Agents", row, base_url)
    return out


def application_resource(
    row: AgentRecord, base_url: str, agents: Sequence[tuple[str, str, str]] = ()
) -> dict[str, Any]:
    """An AgenticApplication; ``agents`` as (agent id, name, kind)."""
    attrs = {k: v for k, v in row.attrs.items() if k != "agents"}  # the links say which
    out: dict[str, Any] = {"schemas": [AGENTIC_APPLICATION_SCHEMA], "id": row.id, **attrs}
    if agents:
        out["agents"] = [
            {"value": aid, "$ref": f"{base_url}/Agents/{aid}", "display": name, "type": kind}
            for aid, name, kind in agents
        ]
    out["meta"] = _meta("AgenticApplication", "AgenticApplications", row, base_url)
    return out

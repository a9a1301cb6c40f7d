"""Discovery documents (RFC 7644 §4, RFC 7643 §5-§7): what we announce is what we enforce."""

from __future__ import annotations

from typing import Any

from scimgate.scim.schema import (
    AGENT_SCHEMA,
    AGENTIC_APPLICATION_SCHEMA,
    ALL_SCHEMAS,
    LIST_RESPONSE_SCHEMA,
    RESOURCE_TYPE_SCHEMA,
    RESOURCE_TYPES,
    SPC_SCHEMA,
)

AGENT_SCHEMAS = (AGENT_SCHEMA, AGENTIC_APPLICATION_SCHEMA)


def service_provider_config(
    base_url: str, *, max_operations: int, max_payload: int, max_results: int
) -> dict[str, Any]:
    return {
        "schemas": [SPC_SCHEMA],
        "documentationUri": "https://github.com/scimgate/scimgate/blob/main/docs/README.md",
        "patch": {"supported": True},
        "bulk": {"supported": True, "maxOperations": max_operations, "maxPayloadSize": max_payload},
        "filter": {"supported": True, "maxResults": max_results},
        "changePassword": {"supported": False},
        "sort": {"supported": True},
        "etag": {"supported": True},
        # draft-abbey-scim-agent-extension-00 §5: a provider serving agents announces it.
        "agentExtension": {
            "supported": True,
            "agentsSupported": True,
            "agenticApplicationsSupported": True,
        },
        "authenticationSchemes": [
            {
                "type": "oauthbearertoken",
                "name": "OAuth Bearer Token",
                "description": "Bearer token made with `scimgate token create`",
                "specUri": "https://www.rfc-editor.org/info/rfc6750",
                "primary": True,
            }
        ],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": f"{base_url}/ServiceProviderConfig",
        },
    }


def resource_type(name: str, base_url: str) -> dict[str, Any]:
    rt = RESOURCE_TYPES[name]
    return {
        "schemas": [RESOURCE_TYPE_SCHEMA],
        "id": rt.name,
        "name": rt.name,
        "endpoint": rt.endpoint,
        "description": rt.schema.description,
        "schema": rt.schema.id,
        "schemaExtensions": [{"schema": e.id, "required": False} for e in rt.extensions],
        "meta": {"resourceType": "ResourceType", "location": f"{base_url}/ResourceTypes/{rt.name}"},
    }


def schema(schema_id: str, base_url: str) -> dict[str, Any] | None:
    for s in ALL_SCHEMAS:
        # The agent drafts' examples write their URNs in lower case: found either way.
        if s.id == schema_id or (s.id in AGENT_SCHEMAS and s.id.lower() == schema_id.lower()):
            return s.to_scim(f"{base_url}/Schemas/{s.id}")
    return None


def list_response(
    resources: list[dict[str, Any]], *, total: int | None = None, start_index: int = 1
) -> dict[str, Any]:
    return {
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": len(resources) if total is None else total,
        "startIndex": start_index,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }


def all_resource_types(base_url: str) -> list[dict[str, Any]]:
    return [resource_type(n, base_url) for n in RESOURCE_TYPES]


def all_schemas(base_url: str) -> list[dict[str, Any]]:
    return [s.to_scim(f"{base_url}/Schemas/{s.id}") for s in ALL_SCHEMAS]

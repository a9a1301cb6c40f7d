"""Declarative SCIM schemas (RFC 7643 §4, §4.3, §7) and attribute-path resolution.

One table of attribute definitions serves three purposes: payload validation, filter
compilation (type and ``caseExact`` per attribute) and the ``/Schemas`` discovery document,
so what we announce is exactly what we enforce.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE_USER_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
# draft-abbey-scim-agent-extension-00 §3 and draft-wzdk-scim-agent-resource-00 §2 (the
# drafts' own ResourceType example writes ":agent" in lower case: URNs match case-blind).
AGENT_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Agent"
AGENTIC_APPLICATION_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:AgenticApplication"
LIST_RESPONSE_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_OP_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SEARCH_REQUEST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
BULK_REQUEST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
SPC_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
RESOURCE_TYPE_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SCHEMA_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Schema"


@dataclass(frozen=True)
class Attribute:
    """One attribute definition (RFC 7643 §7)."""

    name: str
    type: str = "string"
    multi_valued: bool = False
    required: bool = False
    case_exact: bool = False
    mutability: str = "readWrite"
    returned: str = "default"
    uniqueness: str = "none"
    sub_attributes: tuple[Attribute, ...] = ()
    canonical_values: tuple[str, ...] = ()
    reference_types: tuple[str, ...] = ()
    description: str = ""
    # Longest accepted value in characters; None: the bound of its type (scim.resource).
    max_length: int | None = None

    def sub(self, name: str) -> Attribute | None:
        lowered = name.lower()
        for sub in self.sub_attributes:
            if sub.name.lower() == lowered:
                return sub
        return None

    def to_scim(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "multiValued": self.multi_valued,
            "description": self.description or self.name,
            "required": self.required,
            "mutability": self.mutability,
            "returned": self.returned,
        }
        if self.type in ("string", "reference", "binary"):
            out["caseExact"] = self.case_exact
            out["uniqueness"] = self.uniqueness
        if self.canonical_values:
            out["canonicalValues"] = list(self.canonical_values)
        if self.reference_types:
            out["referenceTypes"] = list(self.reference_types)
        if self.sub_attributes:
            out["subAttributes"] = [s.to_scim() for s in self.sub_attributes]
        return out


@dataclass(frozen=True)
class Schema:
    id: str
    name: str
    description: str
    attributes: tuple[Attribute, ...]

    def attribute(self, name: str) -> Attribute | None:
        lowered = name.lower()
        for attr in self.attributes:
            if attr.name.lower() == lowered:
                return attr
        return None

    def to_scim(self, location: str) -> dict[str, Any]:
        return {
            "schemas": [SCHEMA_SCHEMA],
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "attributes": [a.to_scim() for a in self.attributes],
            "meta": {"resourceType": "Schema", "location": location},
        }


@dataclass(frozen=True)
class ResourceType:
    name: str
    endpoint: str
    schema: Schema
    extensions: tuple[Schema, ...] = field(default_factory=tuple)

    @property
    def schema_ids(self) -> tuple[str, ...]:
        return (self.schema.id, *(e.id for e in self.extensions))

    def extension(self, urn: str) -> Schema | None:
        lowered = urn.lower()
        for ext in self.extensions:
            if ext.id.lower() == lowered:
                return ext
        return None


def _multi(
    name: str,
    *,
    types: tuple[str, ...] = (),
    value_type: str = "string",
    extra: tuple[Attribute, ...] = (),
    description: str = "",
    value_max_length: int | None = None,
) -> Attribute:
    """A standard multi-valued complex attribute (RFC 7643 §2.4): value/display/type/primary."""
    return Attribute(
        name,
        type="complex",
        multi_valued=True,
        description=description,
        sub_attributes=(
            Attribute("value", type=value_type, max_length=value_max_length),
            Attribute("display"),
            Attribute("type", canonical_values=types),
            Attribute("primary", type="boolean"),
            *extra,
        ),
    )


_ID = Attribute(
    "id", case_exact=True, mutability="readOnly", returned="always", uniqueness="server"
)
# Identifiers and names an IdP matches on: 256 characters (docs/operations.md, "Input limits").
NAME_LENGTH = 256
_EXTERNAL_ID = Attribute("externalId", case_exact=True, max_length=NAME_LENGTH)
_META = Attribute(
    "meta",
    type="complex",
    mutability="readOnly",
    sub_attributes=(
        Attribute("resourceType", case_exact=True, mutability="readOnly"),
        Attribute("created", type="dateTime", mutability="readOnly"),
        Attribute("lastModified", type="dateTime", mutability="readOnly"),
        Attribute(
            "location",
            type="reference",
            case_exact=True,
            mutability="readOnly",
            reference_types=("uri",),
        ),
        Attribute("version", case_exact=True, mutability="readOnly"),
    ),
)

USER = Schema(
    USER_SCHEMA,
    "User",
    "User Account",
    (
        Attribute("userName", required=True, uniqueness="server", max_length=NAME_LENGTH),
        Attribute(
            "name",
            type="complex",
            sub_attributes=(
                Attribute("formatted"),
                Attribute("familyName"),
                Attribute("givenName"),
                Attribute("middleName"),
                Attribute("honorificPrefix"),
                Attribute("honorificSuffix"),
            ),
        ),
        Attribute("displayName", max_length=NAME_LENGTH),
        Attribute("nickName"),
        Attribute("profileUrl", type="reference", reference_types=("external",)),
        Attribute("title"),
        Attribute("userType"),
        Attribute("preferredLanguage"),
        Attribute("locale"),
        Attribute("timezone"),
        Attribute("active", type="boolean"),
        Attribute("password", mutability="writeOnly", returned="never"),
        _multi("emails", types=("work", "home", "other"), value_max_length=NAME_LENGTH),
        _multi("phoneNumbers", types=("work", "home", "mobile", "fax", "pager", "other")),
        _multi("ims", types=("aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo")),
        _multi("photos", types=("photo", "thumbnail"), value_type="reference"),
        Attribute(
            "addresses",
            type="complex",
            multi_valued=True,
            sub_attributes=(
                Attribute("formatted"),
                Attribute("streetAddress"),
                Attribute("locality"),
                Attribute("region"),
                Attribute("postalCode"),
                Attribute("country"),
                Attribute("type", canonical_values=("work", "home", "other")),
                Attribute("primary", type="boolean"),
            ),
        ),
        Attribute(
            "groups",
            type="complex",
            multi_valued=True,
            mutability="readOnly",
            sub_attributes=(
                Attribute("value", mutability="readOnly"),
                Attribute(
                    "$ref",
                    type="reference",
                    mutability="readOnly",
                    reference_types=("User", "Group"),
                ),
                Attribute("display", mutability="readOnly"),
                Attribute("type", mutability="readOnly", canonical_values=("direct", "indirect")),
            ),
        ),
        _multi("entitlements"),
        _multi("roles"),
        _multi("x509Certificates", value_type="binary"),
    ),
)

ENTERPRISE_USER = Schema(
    ENTERPRISE_USER_SCHEMA,
    "EnterpriseUser",
    "Enterprise User",
    (
        Attribute("employeeNumber"),
        Attribute("costCenter"),
        Attribute("organization"),
        Attribute("division"),
        Attribute("department"),
        Attribute(
            "manager",
            type="complex",
            sub_attributes=(
                Attribute("value", max_length=NAME_LENGTH),
                Attribute("$ref", type="reference", reference_types=("User",)),
                Attribute("displayName", mutability="readOnly"),
            ),
        ),
    ),
)

GROUP = Schema(
    GROUP_SCHEMA,
    "Group",
    "Group",
    (
        Attribute("displayName", required=True, uniqueness="server", max_length=NAME_LENGTH),
        Attribute(
            "members",
            type="complex",
            multi_valued=True,
            sub_attributes=(
                Attribute("value", case_exact=True, mutability="immutable", max_length=NAME_LENGTH),
                Attribute(
                    "$ref",
                    type="reference",
                    mutability="immutable",
                    reference_types=("User", "Group", "Agent"),
                ),
                Attribute("display", mutability="immutable"),
                Attribute(
                    "type", mutability="immutable", canonical_values=("User", "Group", "Agent")
                ),
            ),
        ),
    ),
)


def _ref_list(
    name: str,
    *,
    reference_types: tuple[str, ...],
    types: tuple[str, ...] = (),
    mutability: str = "readWrite",
    description: str = "",
) -> Attribute:
    """A multi-valued reference list (value, $ref, display[, type]): owners, agents, …"""
    subs: tuple[Attribute, ...] = (
        Attribute("value", case_exact=True, mutability=mutability, max_length=NAME_LENGTH),
        Attribute("$ref", type="reference", mutability=mutability, reference_types=reference_types),
        Attribute("display", mutability=mutability),
    )
    if types:
        subs += (Attribute("type", mutability=mutability, canonical_values=types),)
    return Attribute(
        name,
        type="complex",
        multi_valued=True,
        mutability=mutability,
        sub_attributes=subs,
        description=description,
    )


# Both drafts' attribute names: abbey-00 (name, agentType, protocols, parent, owners,
# subject, applications…) and wzdk-00 (agentUserName, owners).
AGENT = Schema(
    AGENT_SCHEMA,
    "Agent",
    "An AI agent or other machine identity (draft-abbey-scim-agent-extension-00, "
    "draft-wzdk-scim-agent-resource-00)",
    (
        # abbey-00 §3.1: required; a wzdk-00 body without it takes its agentUserName
        # (scimgate.app.agents.with_default_name), so both drafts' creates succeed.
        Attribute("name", required=True, max_length=NAME_LENGTH),
        Attribute("agentUserName", uniqueness="server", max_length=NAME_LENGTH),
        Attribute("displayName", max_length=NAME_LENGTH),
        Attribute("description"),
        Attribute("agentType", max_length=NAME_LENGTH),
        Attribute("active", type="boolean"),
        # Correlates with the ``sub`` of the agent's tokens (abbey-00 §3.1).
        Attribute("subject", case_exact=True, max_length=NAME_LENGTH),
        _ref_list("owners", reference_types=("User", "Group"), types=("User", "Group")),
        Attribute(
            "parent",
            type="complex",
            sub_attributes=(
                Attribute("value", case_exact=True, max_length=NAME_LENGTH),
                Attribute("$ref", type="reference", reference_types=("Agent",)),
                Attribute("display"),
            ),
        ),
        Attribute(
            "protocols",
            type="complex",
            multi_valued=True,
            sub_attributes=(
                Attribute("type", canonical_values=("A2A", "OpenAPI", "MCP-Client", "MCP-Server")),
                Attribute("specificationUrl", type="reference", reference_types=("external",)),
            ),
        ),
        _multi("entitlements"),
        _multi("roles"),
        Attribute(
            "groups",
            type="complex",
            multi_valued=True,
            mutability="readOnly",
            sub_attributes=(
                Attribute("value", mutability="readOnly"),
                Attribute(
                    "$ref", type="reference", mutability="readOnly", reference_types=("Group",)
                ),
                Attribute("display", mutability="readOnly"),
                Attribute("type", mutability="readOnly", canonical_values=("direct",)),
            ),
        ),
        _ref_list(
            "applications",
            reference_types=("AgenticApplication",),
            types=("owned", "authorized", "guest"),
            mutability="readOnly",
        ),
        _multi("x509Certificates", value_type="binary"),
    ),
)

AGENTIC_APPLICATION = Schema(
    AGENTIC_APPLICATION_SCHEMA,
    "AgenticApplication",
    "An application agents act in (draft-abbey-scim-agent-extension-00 §4)",
    (
        Attribute("name", required=True, max_length=NAME_LENGTH),
        Attribute("displayName", max_length=NAME_LENGTH),
        Attribute("description"),
        Attribute("active", type="boolean"),
        Attribute(
            "applicationUrls",
            type="complex",
            multi_valued=True,
            sub_attributes=(
                Attribute("type", canonical_values=("ssoEndpoint", "loginPage", "api", "homepage")),
                Attribute("value", type="reference", reference_types=("external",)),
                Attribute("primary", type="boolean"),
            ),
        ),
        Attribute("lastAccessed", type="dateTime", mutability="readOnly"),
        Attribute(
            "oAuthConfiguration",
            type="complex",
            multi_valued=True,
            sub_attributes=(
                # Okta's cid / Entra's azp+appid / RFC 9068 client_id of the app's tokens.
                Attribute("clientId", case_exact=True, max_length=NAME_LENGTH),
                Attribute("audienceUri", type="reference", reference_types=("uri",)),
                Attribute("issuerUri", type="reference", reference_types=("uri",)),
                Attribute(
                    "redirectUri", type="reference", multi_valued=True, reference_types=("uri",)
                ),
            ),
        ),
        _ref_list("agents", reference_types=("Agent",), types=("owned", "authorized", "guest")),
        Attribute(
            "externalIdentifiers",
            type="complex",
            multi_valued=True,
            sub_attributes=(Attribute("type"), Attribute("value"), Attribute("system")),
        ),
    ),
)

# Attributes every resource has (RFC 7643 §3.1); not part of any schema's attribute list.
COMMON_ATTRIBUTES: tuple[Attribute, ...] = (_ID, _EXTERNAL_ID, _META)

USER_TYPE = ResourceType("User", "/Users", USER, (ENTERPRISE_USER,))
GROUP_TYPE = ResourceType("Group", "/Groups", GROUP)
AGENT_TYPE = ResourceType("Agent", "/Agents", AGENT)
AGENTIC_APPLICATION_TYPE = ResourceType(
    "AgenticApplication", "/AgenticApplications", AGENTIC_APPLICATION
)
RESOURCE_TYPES: dict[str, ResourceType] = {
    "User": USER_TYPE,
    "Group": GROUP_TYPE,
    "Agent": AGENT_TYPE,
    "AgenticApplication": AGENTIC_APPLICATION_TYPE,
}
ALL_SCHEMAS: tuple[Schema, ...] = (USER, ENTERPRISE_USER, GROUP, AGENT, AGENTIC_APPLICATION)
CORE_SCHEMAS = (USER_SCHEMA, GROUP_SCHEMA, AGENT_SCHEMA, AGENTIC_APPLICATION_SCHEMA)


@dataclass(frozen=True)
class AttrRef:
    """A resolved attribute path: ``[urn:]attr[.sub]`` (RFC 7644 §3.10)."""

    schema: str  # the URN of the schema that defines the attribute
    attribute: Attribute
    sub: Attribute | None = None

    @property
    def is_extension(self) -> bool:
        return self.schema not in CORE_SCHEMAS

    @property
    def target(self) -> Attribute:
        return self.sub or self.attribute

    def dotted(self) -> str:
        return self.attribute.name + ("." + self.sub.name if self.sub else "")


def split_urn(path: str, rtype: ResourceType) -> tuple[str, str]:
    """Split ``urn:...:User:name.givenName`` into (schema URN, ``name.givenName``).

    Only URNs of schemas of this resource type are recognised (RFC 7644 §3.10); an
    unqualified path belongs to the core schema.
    """
    lowered = path.lower()
    for sid in sorted(rtype.schema_ids, key=len, reverse=True):
        if lowered.startswith(sid.lower() + ":"):
            return sid, path[len(sid) + 1 :]
        if lowered == sid.lower():
            return sid, ""
    return rtype.schema.id, path


def resolve(path: str, rtype: ResourceType) -> AttrRef | None:
    """Resolve ``[urn:]attr[.sub]`` against a resource type; None when unknown."""
    schema_id, rest = split_urn(path, rtype)
    if not rest:
        return None
    head, _, sub_name = rest.partition(".")
    if schema_id == rtype.schema.id:
        attr = rtype.schema.attribute(head)
        if attr is None:
            attr = next((a for a in COMMON_ATTRIBUTES if a.name.lower() == head.lower()), None)
    else:
        ext = rtype.extension(schema_id)
        attr = ext.attribute(head) if ext else None
    if attr is None:
        return None
    if not sub_name:
        return AttrRef(schema_id, attr)
    sub = attr.sub(sub_name)
    if sub is None or "." in sub_name:
        return None
    return AttrRef(schema_id, attr, sub)

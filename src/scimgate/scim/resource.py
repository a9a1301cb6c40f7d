"""Resource payload validation, normalisation and projection (RFC 7643; RFC 7644 §3.4.2.5).

Does: turn the parsed JSON of a POST/PUT body (or a PATCH result) into canonical SCIM JSON —
canonical attribute-name case, extension attributes under their URN, ``schemas`` derived from
the data, read-only / write-only / null values dropped, every value type-checked against the
schema table in :mod:`scimgate.scim.schema`; apply ``attributes`` / ``excludedAttributes``.
Does not: uniqueness (the store), immutability against a stored value (needs the stored
resource), PATCH (``scimgate.scim.patch``), any I/O.

Choices where the RFC leaves room, all in favour of what real IdPs send:

* A non-array value for a multi-valued attribute is accepted as a one-element array
  (``"emails": {"value": ...}``); an empty array means unassigned (RFC 7643 §2.5).
* A bare string for a single-valued complex attribute that has a ``value`` sub-attribute
  (``manager``) means ``{"value": <string>}`` — Entra ID sends it that way.
* Boolean attributes accept the strings ``"true"``/``"false"`` in any case (Entra ID's
  ``"active": "False"``); all other types are strict.
* ``schemas`` may be missing or list URIs we do not know (Entra ID's legacy ones): it is
  always recomputed from the data, never stored as sent.
* ``canonicalValues`` are not enforced (RFC 7643 §7 lets the provider choose), except for
  ``members.type`` which the store needs: ``User``/``Group``, case-insensitively.
* Duplicate keys after case folding (``userName`` and ``UserName``) are an error: we will
  not guess which one the client meant.
* Modes ``create`` and ``replace`` behave the same here (read-only input is ignored, RFC 7644
  §3.3/§3.5.1); ``patch-result`` keeps read-only values because they come from the stored
  resource, not from the client (the PATCH engine rejects client writes to them).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scimgate.scim.errors import InvalidSyntax, InvalidValue
from scimgate.scim.schema import (
    COMMON_ATTRIBUTES,
    GROUP,
    Attribute,
    ResourceType,
    Schema,
    resolve,
    split_urn,
)
from scimgate.scim.text import check_string

MODES = ("create", "replace", "patch-result")
# Longest string per attribute type, in characters (Attribute.max_length overrides: 256 for
# userName, displayName, externalId, emails.value, ids). Real IdPs stay far below: Okta
# caps usernames and e-mails at 100, Entra ID's UPN at 113 and displayName at 256, and its
# longest string attribute (streetAddress) at 1024; a URL over 2048 fails in browsers; a
# base64 X.509 certificate chain fits in 16384. docs/operations.md "Input limits".
MAX_CHARS = {"string": 1024, "reference": 2048, "binary": 16384, "dateTime": 64}
MAX_MULTI_VALUES = 200  # per multi-valued attribute; Group.members is exempt (store-managed)


def _defined(attr: Attribute | None) -> Attribute:
    if attr is None:  # pragma: no cover - schema table bug
        raise RuntimeError("schema table lacks an attribute resource.py relies on")
    return attr


MEMBERS = _defined(GROUP.attribute("members"))  # Group.members: rows in the store
_MEMBER_TYPES = {c.lower(): c for c in _defined(MEMBERS.sub("type")).canonical_values}
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)


@dataclass(frozen=True)
class Member:
    """One group member as the store keeps it (``display``/``$ref`` are derived, not stored)."""

    value: str
    type: str = "User"


def _fail(path: str, message: str) -> InvalidValue:
    return InvalidValue(f"attribute '{path}': {message}")


def _core_or_common(schema: Schema, name: str) -> Attribute | None:
    attr = schema.attribute(name)
    if attr is None:
        lowered = name.lower()
        attr = next((a for a in COMMON_ATTRIBUTES if a.name.lower() == lowered), None)
    return attr


def qualified(schema_id: str, rtype: ResourceType, dotted: str) -> str:
    """Name an attribute for error details: URN-qualified for extension attributes."""
    return dotted if schema_id == rtype.schema.id else f"{schema_id}:{dotted}"


# --- value checks (RFC 7643 §2.3) ------------------------------------------------------------


def _check_string(value: Any, path: str, what: str = "a string", limit: int = 1024) -> str:
    if not isinstance(value, str):
        raise _fail(path, f"expected {what}, got {_json_type(value)}")
    # Well-formed (no lone surrogate, no NUL) and bounded, before anything is stored.
    return check_string(value, path, limit)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def coerce_boolean(value: Any, path: str) -> bool:
    """RFC 7643 §2.3.2 boolean; Entra ID's ``"True"``/``"False"`` strings are accepted."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered == "true":
            return True
        if lowered == "false":
            return False
    raise _fail(path, f"expected a boolean, got {_json_type(value)}")


def _scalar(attr: Attribute, value: Any, path: str) -> Any:
    kind = attr.type
    limit = attr.max_length or MAX_CHARS.get(kind, MAX_CHARS["string"])
    if kind in ("string", "reference"):
        return _check_string(value, path, limit=limit)
    if kind == "boolean":
        return coerce_boolean(value, path)
    if kind == "integer":  # RFC 7643 §2.3.4: no fractional part
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, f"expected an integer, got {_json_type(value)}")
        return value
    if kind == "decimal":  # RFC 7643 §2.3.3
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(path, f"expected a decimal number, got {_json_type(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise _fail(path, "expected a finite decimal number")
        return value
    if kind == "dateTime":  # RFC 7643 §2.3.5 (xsd:dateTime, written as RFC 3339)
        text = _check_string(value, path, "a dateTime string", limit)
        if not _RFC3339.fullmatch(text):
            raise _fail(path, "expected an RFC 3339 dateTime such as 2008-01-23T04:56:22Z")
        try:
            datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
        except ValueError:
            raise _fail(path, "not a valid date and time") from None
        return text
    if kind == "binary":  # RFC 7643 §2.3.6: base64 (RFC 4648 §4)
        text = _check_string(value, path, "a base64 string", limit)
        try:
            base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise _fail(path, "expected base64-encoded binary") from None
        return text
    raise _fail(path, f"unsupported attribute type {kind!r}")  # pragma: no cover - schema bug


def _complex(attr: Attribute, value: Any, path: str, *, keep_readonly: bool) -> Any:
    if isinstance(value, str) and not attr.multi_valued and attr.sub("value") is not None:
        value = {"value": value}  # Entra ID sends manager as a bare id
    if not isinstance(value, dict):
        raise _fail(path, f"expected an object, got {_json_type(value)}")
    found: dict[str, Any] = {}
    for key, raw in value.items():
        sub = attr.sub(key) if isinstance(key, str) else None
        if sub is None:
            raise _fail(f"{path}.{key}", "unknown sub-attribute")
        if sub.name in found:
            raise _fail(f"{path}.{sub.name}", "given more than once (names are case-insensitive)")
        found[sub.name] = raw
    out: dict[str, Any] = {}
    for sub in attr.sub_attributes:  # canonical order
        if sub.name not in found:
            continue
        if sub.returned == "never" or (sub.mutability == "readOnly" and not keep_readonly):
            continue
        normalised = normalise_value(
            sub, found[sub.name], f"{path}.{sub.name}", keep_readonly=keep_readonly
        )
        if normalised is not None:
            out[sub.name] = normalised
    if attr is MEMBERS and out:
        _check_member(out, path)
    return out or None


def _check_member(element: dict[str, Any], path: str) -> None:
    if not element.get("value"):
        raise _fail(f"{path}.value", "a member needs a non-empty value (the member's id)")
    kind = element.get("type")
    if kind is not None:
        if kind.lower() not in _MEMBER_TYPES:
            raise _fail(f"{path}.type", "member type must be 'User', 'Group' or 'Agent'")
        element["type"] = _MEMBER_TYPES[kind.lower()]


def _single(attr: Attribute, value: Any, path: str, *, keep_readonly: bool) -> Any:
    if value is None:
        return None  # RFC 7643 §2.5: null is unassigned
    if attr.type == "complex":
        return _complex(attr, value, path, keep_readonly=keep_readonly)
    return _scalar(attr, value, path)


def normalise_value(attr: Attribute, value: Any, path: str, *, keep_readonly: bool = False) -> Any:
    """Validate and normalise one attribute's value; ``None`` means unassigned.

    ``path`` names the attribute in error details. Used by :func:`normalise` and by the PATCH
    engine for operation values.
    """
    if value is None:
        return None
    if not attr.multi_valued:
        if isinstance(value, list):
            raise _fail(path, "expected a single value, got an array")
        return _single(attr, value, path, keep_readonly=keep_readonly)
    items = value if isinstance(value, list) else [value]
    if attr is not MEMBERS and len(items) > MAX_MULTI_VALUES:
        raise _fail(path, f"more than {MAX_MULTI_VALUES} values")
    out = []
    for index, item in enumerate(items):
        if isinstance(item, list):
            raise _fail(f"{path}[{index}]", "nested arrays are not allowed")
        normalised = _single(attr, item, f"{path}[{index}]", keep_readonly=keep_readonly)
        if normalised is not None:
            out.append(normalised)
    check_primary(out, path)
    return out or None  # RFC 7643 §2.5: an empty array is unassigned


def check_primary(values: list[Any], path: str) -> None:
    """RFC 7643 §2.4: the primary value ``true`` appears at most once."""
    primaries = sum(1 for v in values if isinstance(v, dict) and v.get("primary") is True)
    if primaries > 1:
        raise _fail(path, "more than one value has primary set to true")


# --- whole resources --------------------------------------------------------------------------


def _schemas_claimed(value: Any) -> None:
    """Check the shape of the ``schemas`` input; its content is recomputed, never stored."""
    if value is None or isinstance(value, str):
        return
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidValue("attribute 'schemas': expected an array of URI strings")


def normalise(payload: Any, rtype: ResourceType, *, mode: str) -> dict[str, Any]:
    """Validate a resource body and return it as canonical SCIM JSON (see module docstring)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if not isinstance(payload, dict):
        raise InvalidSyntax(f"a {rtype.name} must be a JSON object, got {_json_type(payload)}")
    keep_readonly = mode == "patch-result"
    # (schema id, canonical attribute name) -> raw value, first pass for duplicates and lookup
    found: dict[str, dict[str, tuple[Attribute, Any]]] = {sid: {} for sid in rtype.schema_ids}

    def place(schema_id: str, attr: Attribute, raw: Any) -> None:
        bucket = found[schema_id]
        if attr.name in bucket:
            name = qualified(schema_id, rtype, attr.name)
            raise _fail(name, "given more than once (names are case-insensitive)")
        bucket[attr.name] = (attr, raw)

    for key, raw in payload.items():
        if not isinstance(key, str):  # pragma: no cover - JSON keys are strings
            raise InvalidSyntax("object keys must be strings")
        if key.lower() == "schemas":
            _schemas_claimed(raw)
            continue
        ext = rtype.extension(key)
        if ext is not None:  # RFC 7643 §3.3: extension attributes nest under the URN
            if raw is None:
                continue
            if not isinstance(raw, dict):
                raise _fail(ext.id, f"expected an object, got {_json_type(raw)}")
            for sub_key, sub_raw in raw.items():
                attr = ext.attribute(sub_key)
                if attr is None:
                    raise _fail(f"{ext.id}:{sub_key}", "unknown attribute")
                place(ext.id, attr, sub_raw)
            continue
        schema_id, rest = split_urn(key, rtype)
        if schema_id == rtype.schema.id:
            attr = _core_or_common(rtype.schema, rest) if "." not in rest else None
        else:  # URN-qualified extension attribute as a top-level key
            ref = resolve(key, rtype)
            attr = ref.attribute if ref is not None and ref.sub is None else None
        if attr is None:
            raise _fail(key, f"unknown attribute for resource type {rtype.name}")
        place(schema_id, attr, raw)

    out: dict[str, Any] = {"schemas": [rtype.schema.id]}
    core = found[rtype.schema.id]
    head = [a for a in COMMON_ATTRIBUTES if a.name != "meta"]
    for attr in (*head, *rtype.schema.attributes):
        if attr.name in core:
            _emit(out, rtype.schema.id, attr, core[attr.name][1], rtype, keep_readonly)
    for ext in rtype.extensions:
        ext_out: dict[str, Any] = {}
        for attr in ext.attributes:
            if attr.name in found[ext.id]:
                _emit(ext_out, ext.id, attr, found[ext.id][attr.name][1], rtype, keep_readonly)
        if ext_out:
            out[ext.id] = ext_out
            out["schemas"].append(ext.id)
    if "meta" in core:
        meta = next(a for a in COMMON_ATTRIBUTES if a.name == "meta")
        _emit(out, rtype.schema.id, meta, core["meta"][1], rtype, keep_readonly)
    _check_required(out, rtype)
    return out


def _emit(
    out: dict[str, Any],
    schema_id: str,
    attr: Attribute,
    raw: Any,
    rtype: ResourceType,
    keep_readonly: bool,
) -> None:
    # RFC 7643 §7 "writeOnly"/"returned: never": password. scimgate only gates access and never
    # authenticates anyone, so it keeps no password (not even a hash): less to leak.
    if attr.returned == "never" or attr.mutability == "writeOnly":
        return
    # RFC 7644 §3.3 / §3.5.1: read-only input (id, meta, groups) is ignored, not an error —
    # Okta and Entra ID send them back to us.
    if attr.mutability == "readOnly" and not keep_readonly:
        return
    value = normalise_value(
        attr, raw, qualified(schema_id, rtype, attr.name), keep_readonly=keep_readonly
    )
    if value is not None:
        out[attr.name] = value


def _check_required(resource: dict[str, Any], rtype: ResourceType) -> None:
    """RFC 7643 §2.2 ``required``: userName (User), displayName (Group)."""
    for attr in rtype.schema.attributes:
        if attr.required and attr.name not in resource:
            raise _fail(attr.name, "required attribute is missing")
    for ext in rtype.extensions:
        data = resource.get(ext.id)
        for attr in ext.attributes:
            if attr.required and (data is None or attr.name not in data):
                raise _fail(f"{ext.id}:{attr.name}", "required attribute is missing")


def split_members(resource: dict[str, Any]) -> tuple[dict[str, Any], tuple[Member, ...] | None]:
    """Split a normalised Group into (resource without members, members or None if absent).

    Members live in their own table; ``None`` lets a PUT caller tell "not sent" from "[]".
    """
    rest = {k: v for k, v in resource.items() if k != "members"}
    if "members" not in resource:
        return rest, None
    return rest, tuple(member_from(m) for m in resource["members"])


def member_from(element: dict[str, Any]) -> Member:
    """A Member from a normalised ``members`` element (``display``/``$ref`` dropped)."""
    return Member(str(element["value"]), str(element.get("type") or "User"))


# --- projection (RFC 7644 §3.4.2.5) -----------------------------------------------------------

# (schema id, attribute name) -> None for the whole attribute, else a set of sub-attribute names
_Selection = dict[tuple[str, str], set[str] | None]


def _selection(paths: list[str] | None, rtype: ResourceType) -> _Selection | None:
    if paths is None:
        return None
    selected: _Selection = {}

    def add(key: tuple[str, str], sub: str | None) -> None:
        if sub is None:
            selected[key] = None
        elif key not in selected:
            selected[key] = {sub}
        else:
            subs = selected[key]
            if subs is not None:
                subs.add(sub)

    for raw in paths:
        if not isinstance(raw, str):  # the list may come straight from a .search body
            raise InvalidValue("attributes and excludedAttributes must be attribute names")
        for path in raw.split(","):  # tolerate an unsplit "a,b" query parameter value
            path = path.strip()
            if not path:
                continue
            schema = next(
                (s for s in (rtype.schema, *rtype.extensions) if s.id.lower() == path.lower()), None
            )
            if schema is not None:  # a bare schema URN selects all of its attributes
                for attr in schema.attributes:
                    add((schema.id, attr.name), None)
                continue
            ref = resolve(path, rtype)
            if ref is None:
                continue  # unknown names select nothing (RFC 7644 is silent; lenient)
            add((ref.schema, ref.attribute.name), ref.sub.name if ref.sub else None)
    return selected


def project(
    resource: dict[str, Any],
    rtype: ResourceType,
    attributes: list[str] | None,
    excluded: list[str] | None,
) -> dict[str, Any]:
    """Apply ``attributes`` / ``excludedAttributes`` (RFC 7644 §3.4.2.5) to a canonical resource.

    ``returned: always`` attributes (``id``) always stay, ``never`` never appear, ``request``
    only when named in ``attributes``. ``schemas`` always stays; ``meta`` stays unless excluded.
    When both lists are given, ``attributes`` selects and ``excluded`` then removes.
    """
    wanted = _selection(attributes, rtype)
    unwanted = _selection(excluded, rtype) or {}
    out: dict[str, Any] = {}
    for key, value in resource.items():
        if key == "schemas":
            out[key] = value
            continue
        ext = rtype.extension(key)
        if ext is not None:
            if isinstance(value, dict):
                inner = {}
                for name, sub_value in value.items():
                    attr = ext.attribute(name)
                    if attr is not None:
                        kept = _project_attr(ext.id, attr, sub_value, wanted, unwanted)
                        if kept is not None:
                            inner[attr.name] = kept
                if inner:
                    out[ext.id] = inner
            continue
        attr = _core_or_common(rtype.schema, key)
        if attr is None:
            continue
        kept = _project_attr(rtype.schema.id, attr, value, wanted, unwanted)
        if kept is not None:
            out[attr.name] = kept
    return out


def _project_attr(
    schema_id: str,
    attr: Attribute,
    value: Any,
    wanted: _Selection | None,
    unwanted: _Selection,
) -> Any:
    key = (schema_id, attr.name)
    if attr.returned == "never":
        return None
    if attr.returned == "always":
        return _project_subs(attr, value, None, set())
    if key in unwanted and unwanted[key] is None:
        return None
    subs: set[str] | None = None
    if wanted is not None and attr.name != "meta":
        if key not in wanted:
            return None
        subs = wanted[key]
    elif attr.returned == "request":
        return None
    return _project_subs(attr, value, subs, unwanted.get(key) or set())


def _project_subs(attr: Attribute, value: Any, only: set[str] | None, drop: set[str]) -> Any:
    if not attr.sub_attributes:
        return value

    def element(item: Any) -> Any:
        if not isinstance(item, dict):
            return item
        kept = {}
        for name, sub_value in item.items():
            sub = attr.sub(name)
            if sub is None or sub.returned == "never":
                continue
            if sub.returned != "always":
                if only is not None and sub.name not in only:
                    continue
                if sub.name in drop or (sub.returned == "request" and not only):
                    continue
            kept[name] = sub_value
        return kept or None

    if isinstance(value, list):
        items = [e for e in (element(v) for v in value) if e is not None]
        return items or None
    return element(value)

"""A SCIM filter evaluated against one JSON object (RFC 7644 §3.4.2.2): what a PATCH on a
multi-valued attribute selects (``emails[type eq "work"]``, RFC 7644 §3.5.2), with the
semantics the SQL compiler (``scimgate.store.filter_sql``) gives a list filter. Pure."""

from __future__ import annotations

import contextlib
from typing import Any

from scimgate.scim.errors import InvalidFilter
from scimgate.scim.filter import (
    ORDER_OPS,
    SUBSTRING_OPS,
    And,
    Node,
    Not,
    Or,
    Present,
    Value,
    ValuePath,
    normalize_datetime,
)
from scimgate.scim.schema import Attribute

_MISSING = object()


def _get(obj: Any, name: str) -> Any:
    """Case-insensitive key lookup (RFC 7643 §2.1: attribute names are case-insensitive)."""
    if not isinstance(obj, dict):
        return _MISSING
    if name in obj:
        return obj[name]
    lowered = name.lower()
    for key, val in obj.items():
        if isinstance(key, str) and key.lower() == lowered:
            return val
    return _MISSING


def _is_present(value: Any) -> bool:
    # RFC 7644 §3.4.2.2 "pr": has a non-empty value (null, "", [] and {} are not values).
    return value is not _MISSING and value is not None and value not in ("", [], {})


def _resolve_def(parent: Attribute | None, parts: list[str]) -> Attribute | None:
    current = parent
    for part in parts:
        if current is None:
            return None
        current = current.sub(part)
    return current


def _check(op: str, expected: Value, attr: Attribute | None, path: str) -> None:
    """Reject comparisons RFC 7644 §3.4.2.2 does not define (400 invalidFilter)."""
    declared = attr.type if attr is not None else None
    if isinstance(expected, bool) or declared == "boolean":
        # "boolean and binary attributes SHALL cause a failed response ... with gt/ge/lt/le"
        if op not in ("eq", "ne"):
            raise InvalidFilter(
                f"operator '{op}' is not defined for the boolean attribute {path!r}"
            )
        if declared not in (None, "boolean"):
            raise InvalidFilter(f"{path!r} is of type {declared}; true/false cannot match it")
        if not isinstance(expected, bool):
            raise InvalidFilter(f"{path!r} is boolean; compare it with true or false")
    elif isinstance(expected, int | float):
        if declared not in (None, "integer", "decimal"):
            raise InvalidFilter(f"{path!r} is of type {declared}; a number cannot match it")
        if op in SUBSTRING_OPS:
            raise InvalidFilter(f"operator '{op}' is not defined for numbers")
    elif isinstance(expected, str):
        if declared not in (None, "string", "reference", "binary", "dateTime"):
            raise InvalidFilter(f"{path!r} is of type {declared}; a string cannot match it")
        if declared == "binary" and op in ORDER_OPS:
            raise InvalidFilter(f"operator '{op}' is not defined for the binary attribute {path!r}")
        if declared == "dateTime" and op not in SUBSTRING_OPS:
            try:
                normalize_datetime(expected)
            except ValueError as exc:
                raise InvalidFilter(f"{path!r} is a dateTime: {exc}") from None


def _equal_or_ordered(actual: Any, op: str, expected: Value, attr: Attribute | None) -> bool:
    """``actual op expected`` for one present value; false when the JSON types differ."""
    if isinstance(expected, bool):
        return op == "eq" and isinstance(actual, bool) and actual == expected
    if isinstance(expected, int | float):
        if not isinstance(actual, int | float) or isinstance(actual, bool):
            return False
        return _ordered(actual, op, expected)
    if not isinstance(actual, str) or expected is None:
        return False
    exp_s, act_s = expected, actual
    if attr is not None and attr.type == "dateTime" and op not in SUBSTRING_OPS:
        exp_s = normalize_datetime(exp_s)
        with contextlib.suppress(ValueError):
            act_s = normalize_datetime(act_s)
    elif not (attr is not None and attr.case_exact):
        # RFC 7643 §2.2: caseExact defaults to false.
        exp_s, act_s = exp_s.lower(), act_s.lower()
    if op == "co":
        return exp_s in act_s
    if op == "sw":
        return act_s.startswith(exp_s)
    if op == "ew":
        return act_s.endswith(exp_s)
    return _ordered(act_s, op, exp_s)


def _ordered(actual: Any, op: str, expected: Any) -> bool:
    if op == "eq":
        return bool(actual == expected)
    if op == "ne":
        return bool(actual != expected)
    if op == "gt":
        return bool(actual > expected)
    if op == "ge":
        return bool(actual >= expected)
    if op == "lt":
        return bool(actual < expected)
    return bool(actual <= expected)


def _lookup(element: dict[str, Any], path: str) -> tuple[Any, list[str]]:
    """The value at ``[urn:]attr[.sub]`` in ``element`` and the dotted names used."""
    obj: Any = element
    urn, colon, rest = path.rpartition(":")
    if colon:
        inner = _get(element, urn)
        # A core-schema URN prefix qualifies attributes stored at the top level.
        obj = inner if inner is not _MISSING else element
    parts = rest.split(".")
    for part in parts:
        if isinstance(obj, list):
            collected = [_get(o, part) for o in obj]
            obj = [v for v in collected if v is not _MISSING]
        else:
            obj = _get(obj, part)
            if obj is _MISSING:
                return _MISSING, parts
    return obj, parts


def matches(node: Node, element: dict[str, Any], parent: Attribute | None = None) -> bool:
    """Evaluate ``node`` against one JSON object (RFC 7644 §3.4.2.2 rules).

    ``parent`` describes ``element``: its ``sub_attributes`` give each attribute's type and
    ``caseExact`` (e.g. the ``emails`` Attribute when matching one e-mail entry). Without
    it, strings compare case-insensitively (RFC 7643 §2.2 default).

    Semantics shared with the SQL compiler (``scimgate.store.filter_sql``):

    * ``ne`` is the complement of ``eq`` for a single value, so an absent or null
      single-valued attribute matches ``ne``;
    * a multi-valued attribute matches when ANY of its values matches, so one with no
      values matches no comparison, ``ne`` included;
    * ``eq null`` means "not present" and ``ne null`` means "present" (``pr``);
    * ordering operators on booleans raise InvalidFilter.
    """
    if isinstance(node, And):
        return matches(node.left, element, parent) and matches(node.right, element, parent)
    if isinstance(node, Or):
        return matches(node.left, element, parent) or matches(node.right, element, parent)
    if isinstance(node, Not):
        return not matches(node.inner, element, parent)
    if isinstance(node, ValuePath):
        items, parts = _lookup(element, node.attr)
        attr = _resolve_def(parent, parts)
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            return False
        return any(isinstance(it, dict) and matches(node.filter, it, attr) for it in items)
    value, parts = _lookup(element, node.path)
    if isinstance(node, Present):
        if isinstance(value, list):
            return any(_is_present(v) for v in value)
        return _is_present(value)
    attr = _resolve_def(parent, parts)
    # Multi-valued when the attribute or its parent (emails.value) is.
    multi = isinstance(value, list) or any(
        d is not None and d.multi_valued
        for d in (_resolve_def(parent, parts[: i + 1]) for i in range(len(parts)))
    )
    if attr is not None and attr.type == "complex":
        value_attr = attr.sub("value")
        if not (attr.multi_valued and value_attr is not None):
            raise InvalidFilter(f"{node.path!r} is complex: name one of its sub-attributes")
        # RFC 7644 §3.4.2.2: "emails co x" compares the "value" sub-attribute.
        attr = value_attr
        if isinstance(value, list):
            value = [_get(v, "value") if isinstance(v, dict) else v for v in value]
    op, expected = node.op, node.value
    if expected is None:
        if op not in ("eq", "ne"):
            raise InvalidFilter(f"operator '{op}' cannot compare with null")
        present = (
            any(_is_present(v) for v in value) if isinstance(value, list) else _is_present(value)
        )
        return not present if op == "eq" else present
    _check(op, expected, attr, node.path)
    if isinstance(value, list):
        values = value
    elif multi and (value is _MISSING or value is None):
        values = []  # no values: nothing can match, not even "ne"
    else:
        values = [value]
    for v in values:
        if v is _MISSING or v is None:
            hit = op == "ne"
        elif op == "ne":
            hit = not _equal_or_ordered(v, "eq", expected, attr)
        else:
            hit = _equal_or_ordered(v, op, expected, attr)
        if hit:
            return True
    return False

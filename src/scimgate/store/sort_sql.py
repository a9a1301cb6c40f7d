"""Compile ``sortBy`` / ``sortOrder`` (RFC 7644 §3.4.2.3) to ORDER BY over store/tables.py,
on SQLite and PostgreSQL, with the attribute resolution of ``store.filter_sql``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, Text, case, func, literal, select
from sqlalchemy.sql.elements import ColumnElement, UnaryExpression

from scimgate.scim.errors import InvalidFilter, InvalidValue
from scimgate.scim.schema import ResourceType
from scimgate.store.filter_predicates import STRING_TYPES, Col, Const, JsonElements
from scimgate.store.filter_sql import Resolver


def sort_key(path: str, rtype: ResourceType, dialect: str) -> ColumnElement[Any]:
    """The ORDER BY expression for ``sortBy`` (RFC 7644 §3.4.2.3).

    Strings that are not caseExact sort case-folded, all strings by code point. A
    multi-valued attribute sorts by its primary value, else its first value (RFC 7644
    §3.4.2.3). The key is NULL for resources without the attribute: RFC 7644 §3.4.2.3
    puts those last in ascending and first in descending order; :func:`order_by` does.

    An unknown or unsortable attribute raises InvalidValue (400 invalidValue): sortBy is a
    parameter value, not a filter; RFC 7644 §3.12 invalidValue covers a value "not
    compatible with the operation or attribute type", while invalidFilter is about
    filter syntax and filter comparisons.
    """
    r = Resolver(rtype, dialect)
    d = r.d
    ref = r.ref(path, InvalidValue)
    attr = ref.attribute
    if attr.multi_valued:
        if attr.type != "complex" or (ref.sub is not None and ref.sub.type == "complex"):
            raise InvalidValue(f"cannot sort by {path!r}")
        elems = r.elements(ref)
        if not isinstance(elems, JsonElements):
            raise InvalidValue(f"cannot sort by {path!r}")
        sub = ref.sub or attr.sub("value")
        if sub is None:
            raise InvalidValue(f"cannot sort by {path!r}: name a sub-attribute")
        src = d.json_array_elements(elems.table.c.attrs, elems.keys, ordinal=True)
        doc = d.element_doc(src)
        text = d.json_text(doc, (sub.name,))
        key = text if sub.case_exact else func.lower(text, type_=Text)
        position = src.c.n if d.pg else src.c.key
        q = (
            select(d.ordered(key))
            .select_from(src)
            .where(d.json_type(doc, (sub.name,)) == "string")  # elements with a value
            .order_by((d.json_type(doc, ("primary",)) == "true").desc(), position)
            .limit(1)
            .correlate(elems.table)
        )
        return q.scalar_subquery()
    try:
        o = r.scalar(ref, path)
    except InvalidFilter as exc:
        raise InvalidValue(exc.detail) from None
    t = o.attr
    if t.type == "complex":
        raise InvalidValue(f"cannot sort by the complex attribute {path!r}: name a sub-attribute")
    if isinstance(o, Const):
        return literal(o.value, String)
    if isinstance(o, Col):
        expr = o.expr
    elif t.type in STRING_TYPES:
        expr = case((d.json_type(o.doc, o.keys) == "string", d.json_text(o.doc, o.keys)))
    elif t.type == "boolean":
        expr = case(
            (d.json_type(o.doc, o.keys) == "false", literal(0)),
            (d.json_type(o.doc, o.keys) == "true", literal(1)),
        )
    else:
        expr = d.json_number(o.doc, o.keys)
    if t.type in STRING_TYPES:
        if not (t.case_exact or t.type == "dateTime" or (isinstance(o, Col) and o.lowered)):
            expr = func.lower(expr, type_=Text)
        expr = d.ordered(expr)
    return expr


def order_by(
    path: str, rtype: ResourceType, dialect: str, *, descending: bool = False
) -> UnaryExpression[Any]:
    """``ORDER BY`` term for sortBy/sortOrder: resources without a value last when
    ascending, first when descending (RFC 7644 §3.4.2.3). Add a unique tie-breaker
    (``id``) after it for stable pagination."""
    key = sort_key(path, rtype, dialect)
    return key.desc().nulls_first() if descending else key.asc().nulls_last()

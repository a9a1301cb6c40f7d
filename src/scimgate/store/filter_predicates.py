"""The operands of a compiled filter (a column, a value inside the JSON column, a constant)
and the two-valued predicates over them (RFC 7644 §3.4.2.2 operators; semantics in
``store.filter_sql``); multi-valued attributes as element sources for EXISTS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, Text, and_, false, func, literal, not_, or_, select, true
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.schema import Table

from scimgate.scim.errors import InvalidFilter
from scimgate.scim.filter import ORDER_OPS, SUBSTRING_OPS, Value, normalize_datetime
from scimgate.scim.schema import Attribute
from scimgate.store.sql_dialect import LIKE_ESCAPE, Bool, Dialect, like_escape
from scimgate.store.tables import groups, members, users

STRING_TYPES = ("string", "reference", "binary", "dateTime")


# --------------------------------------------------------------------------- operands


@dataclass(frozen=True)
class Col:
    """A table column. ``lowered``: the column holds the Python-lower-cased value."""

    expr: ColumnElement[Any]
    attr: Attribute
    lowered: bool = False


@dataclass(frozen=True)
class Json:
    """The value at ``keys`` inside the JSON document ``doc``."""

    doc: ColumnElement[Any]
    keys: tuple[str, ...]
    attr: Attribute


@dataclass(frozen=True)
class Const:
    """A value every resource of the type has (meta.resourceType, groups.type)."""

    value: str
    attr: Attribute


Operand = Col | Json | Const


# --------------------------------------------------------------------------- predicates


def _type_check(op: str, value: Value, attr: Attribute, path: str) -> None:
    if attr.type == "complex":
        raise InvalidFilter(f"{path!r} is complex: name one of its sub-attributes")
    if isinstance(value, bool):
        if attr.type != "boolean":
            raise InvalidFilter(f"{path!r} is of type {attr.type}; true/false cannot match it")
        if op not in ("eq", "ne"):
            # RFC 7644 §3.4.2.2: gt/ge/lt/le on a boolean "SHALL" fail with invalidFilter.
            raise InvalidFilter(
                f"operator '{op}' is not defined for the boolean attribute {path!r}"
            )
    elif isinstance(value, int | float):
        if attr.type not in ("integer", "decimal"):
            raise InvalidFilter(f"{path!r} is of type {attr.type}; a number cannot match it")
        if op in SUBSTRING_OPS:
            raise InvalidFilter(f"operator '{op}' is not defined for the number attribute {path!r}")
    elif isinstance(value, str):
        if attr.type == "boolean":
            raise InvalidFilter(f"{path!r} is boolean; compare it with true or false")
        if attr.type not in STRING_TYPES:
            raise InvalidFilter(f"{path!r} is of type {attr.type}; a string cannot match it")
        if attr.type == "binary" and op in ORDER_OPS:
            # RFC 7644 §3.4.2.2: binary attributes cannot be ordered.
            raise InvalidFilter(f"operator '{op}' is not defined for the binary attribute {path!r}")


def _normalise(op: str, value: str, attr: Attribute, path: str) -> str:
    if attr.type == "dateTime" and op not in SUBSTRING_OPS:
        try:
            return normalize_datetime(value)
        except ValueError as exc:
            raise InvalidFilter(f"{path!r} is a dateTime: {exc}") from None
    return value


def _py_compare(actual: str, op: str, expected: str, attr: Attribute) -> bool:
    if not attr.case_exact:
        actual, expected = actual.lower(), expected.lower()
    results = {
        "eq": actual == expected,
        "ne": actual != expected,
        "co": expected in actual,
        "sw": actual.startswith(expected),
        "ew": actual.endswith(expected),
        "gt": actual > expected,
        "ge": actual >= expected,
        "lt": actual < expected,
        "le": actual <= expected,
    }
    return results[op]


class Predicates:
    def __init__(self, d: Dialect) -> None:
        self.d = d

    def present(self, o: Operand) -> Bool:
        d = self.d
        if isinstance(o, Const):
            return true()
        if isinstance(o, Col):
            if o.attr.type in STRING_TYPES:
                return and_(o.expr.is_not(None), o.expr != "")
            return o.expr.is_not(None)
        tag = d.json_type(o.doc, o.keys)
        if o.attr.type == "complex":
            return and_(tag == "object", not_(d.json_is_empty_object(o.doc, o.keys)))
        # A JSON value of another type than declared is treated as present too.
        return and_(
            tag.not_in(["", "null"]), or_(tag != "string", d.json_text(o.doc, o.keys) != "")
        )

    def compare(self, o: Operand, op: str, value: Value, path: str) -> Bool:
        attr = o.attr
        if value is None:
            if op not in ("eq", "ne"):
                raise InvalidFilter(f"operator '{op}' cannot compare with null")
            p = self.present(o)
            return not_(p) if op == "eq" else p
        _type_check(op, value, attr, path)
        if op == "ne":
            # Complement of eq (module docstring): absent/null matches "ne".
            return not_(self._positive(o, "eq", value, path))
        return self._positive(o, op, value, path)

    def _positive(self, o: Operand, op: str, value: str | int | float | bool, path: str) -> Bool:
        """``op`` (not ne) for a non-null value; false when the attribute is absent."""
        d = self.d
        attr = o.attr
        if isinstance(o, Const):
            assert isinstance(value, str)
            return (
                true()
                if _py_compare(o.value, op, _normalise(op, value, attr, path), attr)
                else false()
            )
        if isinstance(value, bool):
            if isinstance(o, Col):
                return and_(o.expr.is_not(None), o.expr == literal(value))
            return d.json_type(o.doc, o.keys) == ("true" if value else "false")
        if isinstance(value, int | float):
            guard: Bool
            num: ColumnElement[Any]
            if isinstance(o, Col):
                guard, num = o.expr.is_not(None), o.expr
            else:
                guard, num = d.json_type(o.doc, o.keys) == "number", d.json_number(o.doc, o.keys)
            return and_(guard, _apply(num, op, literal(value)))
        text: ColumnElement[Any]
        sguard: Bool
        if isinstance(o, Col):
            sguard, text = o.expr.is_not(None), o.expr
        else:
            sguard, text = d.json_type(o.doc, o.keys) == "string", d.json_text(o.doc, o.keys)
        guard = sguard
        value = _normalise(op, value, attr, path)
        if attr.case_exact or attr.type == "dateTime":
            return and_(guard, self._exact(text, op, value))
        # caseExact=false (RFC 7643 §2.2): fold both sides.
        # A *_lower column holds Python-lowered text: lower the value the same way.
        lowered = isinstance(o, Col) and o.lowered
        hay = text if lowered else func.lower(text, type_=Text)

        def fold(s: str) -> ColumnElement[Any]:
            return literal(s.lower(), Text) if lowered else func.lower(literal(s, Text), type_=Text)

        if op in SUBSTRING_OPS:
            if value == "":
                return guard
            esc = like_escape(value)
            pattern = {"co": f"%{esc}%", "sw": f"{esc}%", "ew": f"%{esc}"}[op]
            return and_(guard, hay.like(fold(pattern), escape=LIKE_ESCAPE))
        needle: ColumnElement[Any] = fold(value)
        if op in ORDER_OPS:
            return and_(guard, _apply(d.ordered(hay), op, needle))
        return and_(guard, hay == needle)

    def _exact(self, text: ColumnElement[Any], op: str, value: str) -> Bool:
        """Case-sensitive comparison: no LIKE (case-insensitive on SQLite)."""
        d = self.d
        v = literal(value, Text)
        if op == "eq":
            return text == v
        if op in ORDER_OPS:
            return _apply(d.ordered(text), op, v)
        if value == "":
            return true()
        if op == "co":
            return d.contains(text, value)
        n = len(value)  # Python counts code points, like length() on both databases
        if op == "sw":
            return func.substr(text, 1, n, type_=Text) == v
        # ew
        length = func.length(text, type_=Integer)
        return and_(length >= n, func.substr(text, length - n + 1, type_=Text) == v)


def _apply(left: ColumnElement[Any], op: str, right: ColumnElement[Any]) -> Bool:
    if op == "eq":
        return left == right
    if op == "gt":
        return left > right
    if op == "ge":
        return left >= right
    if op == "lt":
        return left < right
    if op == "le":
        return left <= right
    raise AssertionError(op)


# --------------------------------------------------------------------------- multi-valued


class Elements:
    """The values of one multi-valued attribute of the outer row, as a FROM clause.

    One instance = one alias, so every condition given to :meth:`exists` constrains the
    SAME element (RFC 7644 §3.4.2.2: ``emails[type eq "work" and value co "x"]``).
    """

    attr: Attribute

    def operand(self, sub: Attribute, path: str) -> Operand:
        raise NotImplementedError

    def exists(self, cond: Bool | None) -> Bool:
        raise NotImplementedError


class JsonElements(Elements):
    def __init__(self, d: Dialect, table: Table, keys: tuple[str, ...], attr: Attribute):
        self.table = table
        self.attr = attr
        self.keys = keys
        self.src = d.json_array_elements(table.c.attrs, keys)
        self.doc = d.element_doc(self.src)

    def operand(self, sub: Attribute, path: str) -> Operand:
        return Json(self.doc, (sub.name,), sub)

    def exists(self, cond: Bool | None) -> Bool:
        q = select(literal(1)).select_from(self.src).correlate(self.table)
        return q.where(cond).exists() if cond is not None else q.exists()


class UserGroups(Elements):
    """User ``groups`` (RFC 7643 §4.1.2), from the members table: direct memberships."""

    def __init__(self, attr: Attribute, owner: Table = users):
        self.attr = attr
        self.owner = owner  # users, or agents (their ``groups`` are the same rows)
        self.m = members.alias()
        self.g = groups.alias()

    def operand(self, sub: Attribute, path: str) -> Operand:
        name = sub.name.lower()
        if name == "value":
            return Col(self.m.c.group_id, sub)
        if name == "display":
            return Col(self.g.c.display_name_lower, sub, lowered=True)
        if name == "type":
            return Const("direct", sub)
        raise InvalidFilter(f"{path!r} is not filterable")

    def exists(self, cond: Bool | None) -> Bool:
        q = (
            select(literal(1))
            .select_from(self.m.join(self.g, self.g.c.id == self.m.c.group_id))
            .where(self.m.c.member_id == self.owner.c.id)
            .correlate(self.owner)
        )
        return q.where(cond).exists() if cond is not None else q.exists()


class GroupMembers(Elements):
    """Group ``members`` (RFC 7643 §4.2) from the members table. ``display`` and ``$ref``
    are not stored there, so they are not filterable."""

    def __init__(self, attr: Attribute):
        self.attr = attr
        self.m = members.alias()

    def operand(self, sub: Attribute, path: str) -> Operand:
        name = sub.name.lower()
        if name == "value":
            return Col(self.m.c.member_id, sub)
        if name == "type":
            return Col(self.m.c.member_type, sub)
        raise InvalidFilter(f"{path!r} is not filterable")

    def exists(self, cond: Bool | None) -> Bool:
        q = select(literal(1)).select_from(self.m).where(self.m.c.group_id == groups.c.id)
        q = q.correlate(groups)
        return q.where(cond).exists() if cond is not None else q.exists()

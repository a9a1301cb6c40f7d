"""Compile SCIM filters (RFC 7644 §3.4.2.2) and sortBy (§3.4.2.3) to SQL over store/tables.py.

The whole filter runs in the database, on SQLite and on PostgreSQL. Attributes with their
own column (userName, externalId, active, displayName, meta.*, group memberships) use the
column; everything else is read from the JSON column ``attrs`` (``json_extract``/
``json_each`` on SQLite, ``jsonb_extract_path``/``jsonb_array_elements`` on PostgreSQL).

Semantics (shared with ``scimgate.scim.filter.matches``):

* Every predicate is two-valued (never SQL NULL): an absent attribute makes a comparison
  *false*, so ``NOT`` (RFC 7644 ``not``) is the exact complement.
* ``ne``: for a single-valued attribute, ``x ne v`` is ``not (x eq v)``; an absent or null
  attribute therefore matches ``ne``. RFC 7644 §3.4.2.2 only says "the attribute and
  operator values are not identical"; the complement is what clients expect from
  ``ne`` and keeps ``not (x eq v)`` and ``x ne v`` equal. For a multi-valued attribute
  the filter matches when ANY value matches (RFC 7644 §3.4.2.2), so ``emails.value ne v``
  matches a user with at least one e-mail that is not v, and never one without e-mails.
* ``eq null`` means "not present" and ``ne null`` means "present" (``pr``); other
  operators with null → invalidFilter.
* ``pr``: present, not JSON null, and for strings not empty; for a multi-valued
  attribute, at least one value; for a complex one, a non-empty object.
* Values must match the attribute type (string ↔ JSON string, boolean ↔ true/false);
  ordering (gt/ge/lt/le) on booleans is invalidFilter (RFC 7644 §3.4.2.2). Strings
  order by code point (PostgreSQL: ``COLLATE "C"``, SQLite: BINARY), case-folded first
  when the attribute is not caseExact.
* caseExact=false (RFC 7643 §2.2): ``lower()`` on both sides. co/sw/ew then use LIKE with
  ``%``/``_``/``\\`` escaped (ESCAPE '\\'). caseExact=true co/sw/ew avoid LIKE (SQLite LIKE
  ignores ASCII case): ``instr``/``strpos`` and ``substr``. SQLite's ``lower()`` folds
  ASCII only, so non-ASCII letters stay case-sensitive there.
* ``members.display``/``members.$ref`` (Groups) and ``groups.$ref``, ``meta.location``,
  ``meta.version`` (both types) are not stored in a filterable form → invalidFilter
  "not filterable". ``password`` (returned=never, RFC 7643 §4.1.1) → invalidFilter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Integer,
    Numeric,
    String,
    Text,
    and_,
    case,
    collate,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement, UnaryExpression
from sqlalchemy.sql.expression import FromClause
from sqlalchemy.sql.schema import Table

from scimgate.scim.errors import InvalidFilter, InvalidValue
from scimgate.scim.filter import (
    ORDER_OPS,
    SUBSTRING_OPS,
    And,
    Compare,
    Node,
    Not,
    Or,
    Present,
    Value,
    ValuePath,
    normalize_datetime,
)
from scimgate.scim.schema import (
    COMMON_ATTRIBUTES,
    USER_SCHEMA,
    Attribute,
    AttrRef,
    ResourceType,
    resolve,
)
from scimgate.store.tables import groups, members, users

DIALECTS = ("sqlite", "postgresql")
_STRING_TYPES = ("string", "reference", "binary", "dateTime")
_LIKE_ESCAPE = "\\"

Bool = ColumnElement[bool]


# --------------------------------------------------------------------------- operands


@dataclass(frozen=True)
class _Col:
    """A table column. ``lowered``: the column holds the Python-lower-cased value."""

    expr: ColumnElement[Any]
    attr: Attribute
    lowered: bool = False


@dataclass(frozen=True)
class _Json:
    """The value at ``keys`` inside the JSON document ``doc``."""

    doc: ColumnElement[Any]
    keys: tuple[str, ...]
    attr: Attribute


@dataclass(frozen=True)
class _Const:
    """A value every resource of the type has (meta.resourceType, groups.type)."""

    value: str
    attr: Attribute


_Operand = _Col | _Json | _Const


class _Dialect:
    """The JSON and string functions that differ between SQLite and PostgreSQL."""

    def __init__(self, name: str) -> None:
        if name not in DIALECTS:
            raise ValueError(f"unsupported dialect {name!r} (expected one of {DIALECTS})")
        self.name = name
        self.pg = name == "postgresql"

    @staticmethod
    def _sqlite_path(keys: tuple[str, ...]) -> str:
        # SQLite JSON path with quoted labels: keys contain ":" and "." (URNs).
        return "$" + "".join(f'."{k}"' for k in keys)

    def json_type(self, doc: ColumnElement[Any], keys: tuple[str, ...]) -> ColumnElement[str]:
        """A normalised JSON type tag, never NULL: string, number, true, false, null,
        object, array, or '' when absent."""
        if self.pg:
            node = func.jsonb_extract_path(doc, *keys, type_=JSONB)
            raw: ColumnElement[str] = case(
                (
                    func.jsonb_typeof(node) == "boolean",
                    func.jsonb_extract_path_text(doc, *keys, type_=Text),
                ),
                else_=func.jsonb_typeof(node, type_=Text),
            )
        else:
            raw = case(
                (func.json_type(doc, self._sqlite_path(keys)) == "text", literal("string")),
                (
                    func.json_type(doc, self._sqlite_path(keys)).in_(["integer", "real"]),
                    literal("number"),
                ),
                else_=func.json_type(doc, self._sqlite_path(keys), type_=Text),
            )
        return func.coalesce(raw, literal(""), type_=Text)

    def json_text(self, doc: ColumnElement[Any], keys: tuple[str, ...]) -> ColumnElement[str]:
        if self.pg:
            return func.jsonb_extract_path_text(doc, *keys, type_=Text)
        return func.json_extract(doc, self._sqlite_path(keys), type_=Text)

    def json_number(self, doc: ColumnElement[Any], keys: tuple[str, ...]) -> ColumnElement[Any]:
        if self.pg:
            # CASE keeps the cast away from non-numbers (AND does not short-circuit in PG).
            return case(
                (
                    self.json_type(doc, keys) == "number",
                    func.cast(func.jsonb_extract_path_text(doc, *keys), Numeric),
                ),
                else_=None,
            )
        return func.json_extract(doc, self._sqlite_path(keys), type_=Numeric)

    def json_is_empty_object(self, doc: ColumnElement[Any], keys: tuple[str, ...]) -> Bool:
        if self.pg:
            return func.jsonb_extract_path(doc, *keys, type_=JSONB) == func.cast(
                literal("{}", Text), JSONB
            )
        return func.json_extract(doc, self._sqlite_path(keys), type_=Text) == "{}"

    def json_array_elements(
        self, doc: ColumnElement[Any], keys: tuple[str, ...], *, ordinal: bool = False
    ) -> FromClause:
        """One row per element of the JSON array at ``keys`` (none if absent/not an array);
        column ``value`` is the element (JSON), ``n`` its position when ``ordinal``."""
        is_array = self.json_type(doc, keys) == "array"
        if self.pg:
            arr = case((is_array, func.jsonb_extract_path(doc, *keys)), else_=None)
            fn = func.jsonb_array_elements(arr, type_=JSONB)
            if ordinal:
                return fn.table_valued("value", with_ordinality="n").render_derived().alias()
            return fn.table_valued("value").render_derived().alias()
        arr = case((is_array, func.json_extract(doc, self._sqlite_path(keys))), else_=None)
        if ordinal:
            return func.json_each(arr).table_valued("value", "type", "key").alias()
        return func.json_each(arr).table_valued("value", "type").alias()

    def element_doc(self, src: FromClause) -> ColumnElement[Any]:
        """The element of :meth:`json_array_elements` as a JSON object, NULL otherwise.

        SQLite's json_each gives a string element as raw text, on which json_extract
        would fail ("malformed JSON"); PostgreSQL's jsonb functions return NULL anyway.
        """
        if self.pg:
            return src.c.value
        return case((src.c.type == "object", src.c.value), else_=None)

    def ordered(self, expr: ColumnElement[Any]) -> ColumnElement[Any]:
        """Code-point order on both databases (SQLite BINARY is already code-point)."""
        return collate(expr, "C") if self.pg else expr

    def contains(self, hay: ColumnElement[Any], needle: str) -> Bool:
        if self.pg:
            return func.strpos(hay, literal(needle, Text), type_=Integer) > 0
        return func.instr(hay, literal(needle, Text), type_=Integer) > 0


def _like_escape(value: str) -> str:
    return (
        value.replace(_LIKE_ESCAPE, _LIKE_ESCAPE * 2)
        .replace("%", _LIKE_ESCAPE + "%")
        .replace("_", _LIKE_ESCAPE + "_")
    )


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
        if attr.type not in _STRING_TYPES:
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


class _Predicates:
    def __init__(self, d: _Dialect) -> None:
        self.d = d

    def present(self, o: _Operand) -> Bool:
        d = self.d
        if isinstance(o, _Const):
            return true()
        if isinstance(o, _Col):
            if o.attr.type in _STRING_TYPES:
                return and_(o.expr.is_not(None), o.expr != "")
            return o.expr.is_not(None)
        tag = d.json_type(o.doc, o.keys)
        if o.attr.type == "complex":
            return and_(tag == "object", not_(d.json_is_empty_object(o.doc, o.keys)))
        # A JSON value of another type than declared is treated as present too.
        return and_(
            tag.not_in(["", "null"]), or_(tag != "string", d.json_text(o.doc, o.keys) != "")
        )

    def compare(self, o: _Operand, op: str, value: Value, path: str) -> Bool:
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

    def _positive(self, o: _Operand, op: str, value: str | int | float | bool, path: str) -> Bool:
        """``op`` (not ne) for a non-null value; false when the attribute is absent."""
        d = self.d
        attr = o.attr
        if isinstance(o, _Const):
            assert isinstance(value, str)
            return (
                true()
                if _py_compare(o.value, op, _normalise(op, value, attr, path), attr)
                else false()
            )
        if isinstance(value, bool):
            if isinstance(o, _Col):
                return and_(o.expr.is_not(None), o.expr == literal(value))
            return d.json_type(o.doc, o.keys) == ("true" if value else "false")
        if isinstance(value, int | float):
            guard: Bool
            num: ColumnElement[Any]
            if isinstance(o, _Col):
                guard, num = o.expr.is_not(None), o.expr
            else:
                guard, num = d.json_type(o.doc, o.keys) == "number", d.json_number(o.doc, o.keys)
            return and_(guard, _apply(num, op, literal(value)))
        text: ColumnElement[Any]
        sguard: Bool
        if isinstance(o, _Col):
            sguard, text = o.expr.is_not(None), o.expr
        else:
            sguard, text = d.json_type(o.doc, o.keys) == "string", d.json_text(o.doc, o.keys)
        guard = sguard
        value = _normalise(op, value, attr, path)
        if attr.case_exact or attr.type == "dateTime":
            return and_(guard, self._exact(text, op, value))
        # caseExact=false (RFC 7643 §2.2): fold both sides.
        # A *_lower column holds Python-lowered text: lower the value the same way.
        lowered = isinstance(o, _Col) and o.lowered
        hay = text if lowered else func.lower(text, type_=Text)

        def fold(s: str) -> ColumnElement[Any]:
            return literal(s.lower(), Text) if lowered else func.lower(literal(s, Text), type_=Text)

        if op in SUBSTRING_OPS:
            if value == "":
                return guard
            esc = _like_escape(value)
            pattern = {"co": f"%{esc}%", "sw": f"{esc}%", "ew": f"%{esc}"}[op]
            return and_(guard, hay.like(fold(pattern), escape=_LIKE_ESCAPE))
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


class _Elements:
    """The values of one multi-valued attribute of the outer row, as a FROM clause.

    One instance = one alias, so every condition given to :meth:`exists` constrains the
    SAME element (RFC 7644 §3.4.2.2: ``emails[type eq "work" and value co "x"]``).
    """

    attr: Attribute

    def operand(self, sub: Attribute, path: str) -> _Operand:
        raise NotImplementedError

    def exists(self, cond: Bool | None) -> Bool:
        raise NotImplementedError


class _JsonElements(_Elements):
    def __init__(self, d: _Dialect, table: Table, keys: tuple[str, ...], attr: Attribute):
        self.table = table
        self.attr = attr
        self.keys = keys
        self.src = d.json_array_elements(table.c.attrs, keys)
        self.doc = d.element_doc(self.src)

    def operand(self, sub: Attribute, path: str) -> _Operand:
        return _Json(self.doc, (sub.name,), sub)

    def exists(self, cond: Bool | None) -> Bool:
        q = select(literal(1)).select_from(self.src).correlate(self.table)
        return q.where(cond).exists() if cond is not None else q.exists()


class _UserGroups(_Elements):
    """User ``groups`` (RFC 7643 §4.1.2), from the members table: direct memberships."""

    def __init__(self, attr: Attribute):
        self.attr = attr
        self.m = members.alias()
        self.g = groups.alias()

    def operand(self, sub: Attribute, path: str) -> _Operand:
        name = sub.name.lower()
        if name == "value":
            return _Col(self.m.c.group_id, sub)
        if name == "display":
            return _Col(self.g.c.display_name_lower, sub, lowered=True)
        if name == "type":
            return _Const("direct", sub)
        raise InvalidFilter(f"{path!r} is not filterable")

    def exists(self, cond: Bool | None) -> Bool:
        q = (
            select(literal(1))
            .select_from(self.m.join(self.g, self.g.c.id == self.m.c.group_id))
            .where(self.m.c.member_id == users.c.id)
            .correlate(users)
        )
        return q.where(cond).exists() if cond is not None else q.exists()


class _GroupMembers(_Elements):
    """Group ``members`` (RFC 7643 §4.2) from the members table. ``display`` and ``$ref``
    are not stored there, so they are not filterable."""

    def __init__(self, attr: Attribute):
        self.attr = attr
        self.m = members.alias()

    def operand(self, sub: Attribute, path: str) -> _Operand:
        name = sub.name.lower()
        if name == "value":
            return _Col(self.m.c.member_id, sub)
        if name == "type":
            return _Col(self.m.c.member_type, sub)
        raise InvalidFilter(f"{path!r} is not filterable")

    def exists(self, cond: Bool | None) -> Bool:
        q = select(literal(1)).select_from(self.m).where(self.m.c.group_id == groups.c.id)
        q = q.correlate(groups)
        return q.where(cond).exists() if cond is not None else q.exists()


# --------------------------------------------------------------------------- resolution

_USER_COLUMNS: dict[str, ColumnElement[Any]] = {
    "id": users.c.id,
    "externalid": users.c.external_id,
    "active": users.c.active,
    "displayname": users.c.display_name,
}
_GROUP_COLUMNS: dict[str, ColumnElement[Any]] = {
    "id": groups.c.id,
    "externalid": groups.c.external_id,
}


class _Resolver:
    def __init__(self, rtype: ResourceType, dialect: str) -> None:
        self.rtype = rtype
        self.d = _Dialect(dialect)
        self.preds = _Predicates(self.d)
        if rtype.name == "User":
            self.table = users
        elif rtype.name == "Group":
            self.table = groups
        else:
            raise ValueError(f"no table for resource type {rtype.name!r}")

    def ref(self, path: str, error: type[InvalidFilter] | type[InvalidValue]) -> AttrRef:
        ref = resolve(path, self.rtype)
        if ref is None:
            raise error(f"unknown attribute {path!r} for resource type {self.rtype.name}")
        if ref.attribute.returned == "never" or (ref.sub and ref.sub.returned == "never"):
            raise error(f"{path!r} is not filterable")
        return ref

    def is_common(self, ref: AttrRef) -> bool:
        return not ref.is_extension and any(ref.attribute is a for a in COMMON_ATTRIBUTES)

    def scalar(self, ref: AttrRef, path: str) -> _Operand:
        """The operand of a single-valued attribute (or ``meta`` sub-attribute)."""
        attr, sub = ref.attribute, ref.sub
        name = attr.name.lower()
        t = self.table
        if self.is_common(ref) or not ref.is_extension:
            if name == "meta":
                if sub is None:
                    return _Col(t.c.created, attr)  # always present: "meta pr" is true
                sname = sub.name.lower()
                if sname == "created":
                    return _Col(t.c.created, sub)
                if sname == "lastmodified":
                    return _Col(t.c.last_modified, sub)
                if sname == "resourcetype":
                    return _Const(self.rtype.name, sub)
                raise InvalidFilter(f"{path!r} is not filterable")
            cols = _USER_COLUMNS if t is users else _GROUP_COLUMNS
            if sub is None and name in cols:
                return _Col(cols[name], attr)
            if sub is None and name == "username" and t is users:
                return _Col(users.c.user_name_lower, attr, lowered=True)
            if sub is None and name == "displayname" and t is groups:
                return _Col(groups.c.display_name_lower, attr, lowered=True)
        keys: tuple[str, ...] = (ref.schema,) if ref.is_extension else ()
        keys += (attr.name,) + ((sub.name,) if sub else ())
        return _Json(t.c.attrs, keys, sub or attr)

    def elements(self, ref: AttrRef) -> _Elements:
        attr = ref.attribute
        if attr.type != "complex":
            raise InvalidFilter(f"{attr.name!r}: multi-valued simple attributes are not supported")
        if self.table is users and not ref.is_extension and attr.name == "groups":
            return _UserGroups(attr)
        if self.table is groups and not ref.is_extension and attr.name == "members":
            return _GroupMembers(attr)
        keys = ((ref.schema,) if ref.is_extension else ()) + (attr.name,)
        return _JsonElements(self.d, self.table, keys, attr)


# --------------------------------------------------------------------------- compiler


class _Scope:
    """Resolves the paths of one filter level: the resource, or inside ``attr[...]``."""

    def predicate(self, path: str, op: str, value: Value) -> Bool:
        raise NotImplementedError

    def value_path(self, node: ValuePath) -> Bool:
        raise InvalidFilter(f"nested filter on {node.attr!r} inside '[...]' is not allowed")


class _ResourceScope(_Scope):
    def __init__(self, r: _Resolver) -> None:
        self.r = r

    def predicate(self, path: str, op: str, value: Value) -> Bool:
        r = self.r
        ref = r.ref(path, InvalidFilter)
        if not ref.attribute.multi_valued:
            o = r.scalar(ref, path)
            return r.preds.present(o) if op == "pr" else r.preds.compare(o, op, value, path)
        elems = r.elements(ref)
        if ref.sub is None:
            if op == "pr":
                return elems.exists(None)
            if value is None and op in ("eq", "ne"):
                any_value = elems.exists(None)
                return not_(any_value) if op == "eq" else any_value
            # RFC 7644 §3.4.2.2: "emails co x" compares emails.value.
            sub = ref.attribute.sub("value")
            if sub is None:
                raise InvalidFilter(f"{path!r} is complex: name one of its sub-attributes")
        else:
            sub = ref.sub
        o = elems.operand(sub, path)
        if op == "pr":
            return elems.exists(r.preds.present(o))
        if value is None and op in ("eq", "ne"):
            # eq null = not present (no element has it), ne null = present.
            any_value = elems.exists(r.preds.present(o))
            return not_(any_value) if op == "eq" else any_value
        # ANY element matches (RFC 7644 §3.4.2.2), for ne too.
        return elems.exists(r.preds.compare(o, op, value, path))

    def value_path(self, node: ValuePath) -> Bool:
        r = self.r
        ref = r.ref(node.attr, InvalidFilter)
        if ref.sub is not None or ref.attribute.type != "complex":
            raise InvalidFilter(f"'[...]' needs a complex attribute, {node.attr!r} is not one")
        if ref.attribute.multi_valued:
            elems = r.elements(ref)
            return elems.exists(_compile(node.filter, _ElementScope(r, elems)))
        # Single-valued complex (name[givenName eq "x"]): the same object, no EXISTS.
        return _compile(node.filter, _ComplexScope(r, ref))


class _ElementScope(_Scope):
    def __init__(self, r: _Resolver, elems: _Elements) -> None:
        self.r = r
        self.elems = elems

    def predicate(self, path: str, op: str, value: Value) -> Bool:
        sub = self.elems.attr.sub(path)
        if sub is None:
            raise InvalidFilter(f"unknown sub-attribute {path!r} of {self.elems.attr.name!r}")
        full = f"{self.elems.attr.name}.{sub.name}"
        o = self.elems.operand(sub, full)
        if op == "pr":
            return self.r.preds.present(o)
        return self.r.preds.compare(o, op, value, full)


class _ComplexScope(_Scope):
    def __init__(self, r: _Resolver, ref: AttrRef) -> None:
        self.r = r
        self.ref = ref

    def predicate(self, path: str, op: str, value: Value) -> Bool:
        sub = self.ref.attribute.sub(path)
        if sub is None:
            raise InvalidFilter(f"unknown sub-attribute {path!r} of {self.ref.attribute.name!r}")
        ref = AttrRef(self.ref.schema, self.ref.attribute, sub)
        full = ref.dotted()
        o = self.r.scalar(ref, full)
        return self.r.preds.present(o) if op == "pr" else self.r.preds.compare(o, op, value, full)


def _flatten(node: Node, kind: type[And] | type[Or]) -> list[Node]:
    # Iterative: long "a and b and c ..." chains must not recurse once per term.
    out: list[Node] = []
    stack: list[Node] = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, kind):
            stack.append(n.right)
            stack.append(n.left)
        else:
            out.append(n)
    return out


def _compile(node: Node, scope: _Scope) -> Bool:
    if isinstance(node, And):
        return and_(*(_compile(n, scope) for n in _flatten(node, And)))
    if isinstance(node, Or):
        return or_(*(_compile(n, scope) for n in _flatten(node, Or)))
    if isinstance(node, Not):
        return not_(_compile(node.inner, scope))
    if isinstance(node, ValuePath):
        return scope.value_path(node)
    if isinstance(node, Present):
        return scope.predicate(node.path, "pr", None)
    assert isinstance(node, Compare)
    return scope.predicate(node.path, node.op, node.value)


def compile_filter(node: Node, rtype: ResourceType, dialect: str) -> ColumnElement[bool]:
    """A WHERE clause selecting the rows of ``rtype``'s table that match ``node``.

    ``dialect`` is "sqlite" or "postgresql". Unknown attributes and comparisons that RFC
    7644 §3.4.2.2 does not define raise InvalidFilter.
    """
    return _compile(node, _ResourceScope(_Resolver(rtype, dialect)))


def user_name_equality(node: Node | None, rtype: ResourceType) -> str | None:
    """The value of a ``userName eq "…"`` filter on Users (what IdPs send before every
    create), else None. Such a filter is answered by one lookup on the case-folded
    userName column, which is what :func:`compile_filter` compiles it to as well."""
    if (
        isinstance(node, Compare)
        and node.op == "eq"
        and isinstance(node.value, str)
        and rtype.name == "User"
        and node.path.lower() in _USER_NAME_PATHS
    ):
        return node.value
    return None


_USER_NAME_PATHS = ("username", USER_SCHEMA.lower() + ":username")


# --------------------------------------------------------------------------- sortBy


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
    r = _Resolver(rtype, dialect)
    d = r.d
    ref = r.ref(path, InvalidValue)
    attr = ref.attribute
    if attr.multi_valued:
        if attr.type != "complex" or (ref.sub is not None and ref.sub.type == "complex"):
            raise InvalidValue(f"cannot sort by {path!r}")
        elems = r.elements(ref)
        if not isinstance(elems, _JsonElements):
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
    if isinstance(o, _Const):
        return literal(o.value, String)
    if isinstance(o, _Col):
        expr = o.expr
    elif t.type in _STRING_TYPES:
        expr = case((d.json_type(o.doc, o.keys) == "string", d.json_text(o.doc, o.keys)))
    elif t.type == "boolean":
        expr = case(
            (d.json_type(o.doc, o.keys) == "false", literal(0)),
            (d.json_type(o.doc, o.keys) == "true", literal(1)),
        )
    else:
        expr = d.json_number(o.doc, o.keys)
    if t.type in _STRING_TYPES:
        if not (t.case_exact or t.type == "dateTime" or (isinstance(o, _Col) and o.lowered)):
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

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

from typing import Any

from sqlalchemy import and_, func, not_, or_
from sqlalchemy.sql.elements import ColumnElement

from scimgate.scim.errors import InvalidFilter, InvalidValue
from scimgate.scim.filter import And, Compare, Node, Not, Or, Present, Value, ValuePath
from scimgate.scim.schema import (
    COMMON_ATTRIBUTES,
    GROUP,
    USER_SCHEMA,
    AttrRef,
    ResourceType,
    resolve,
)
from scimgate.store.filter_agents import AgentApplications, ApplicationAgents
from scimgate.store.filter_predicates import (
    Col,
    Const,
    Elements,
    GroupMembers,
    Json,
    JsonElements,
    Operand,
    Predicates,
    UserGroups,
)
from scimgate.store.sql_dialect import Bool, Dialect
from scimgate.store.tables import agentic_applications, agents, groups, members, users

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
_AGENT_COLUMNS: dict[str, ColumnElement[Any]] = {
    "id": agents.c.id,
    "externalid": agents.c.external_id,
    "active": agents.c.active,
    "displayname": agents.c.display_name,
    "subject": agents.c.subject,
}
_APPLICATION_COLUMNS: dict[str, ColumnElement[Any]] = {
    "id": agentic_applications.c.id,
    "externalid": agentic_applications.c.external_id,
    "active": agentic_applications.c.active,
    "displayname": agentic_applications.c.display_name,
}
# Case-insensitive names kept lowered in their own column (RFC 7643 §2.2 caseExact=false).
_LOWERED_COLUMNS: dict[str, dict[str, ColumnElement[Any]]] = {
    "scim_users": {"username": users.c.user_name_lower},
    "scim_groups": {"displayname": groups.c.display_name_lower},
    "scim_agents": {"name": agents.c.name_lower,
                    "agentusername": agents.c.agent_user_name_lower},
    "scim_agentic_applications": {"name": agentic_applications.c.name_lower},
}  # fmt: skip
_COLUMNS = {
    "scim_users": _USER_COLUMNS,
    "scim_groups": _GROUP_COLUMNS,
    "scim_agents": _AGENT_COLUMNS,
    "scim_agentic_applications": _APPLICATION_COLUMNS,
}


class Resolver:
    def __init__(self, rtype: ResourceType, dialect: str) -> None:
        self.rtype = rtype
        self.d = Dialect(dialect)
        self.preds = Predicates(self.d)
        if rtype.name == "User":
            self.table = users
        elif rtype.name == "Group":
            self.table = groups
        elif rtype.name == "Agent":
            self.table = agents
        elif rtype.name == "AgenticApplication":
            self.table = agentic_applications
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

    def scalar(self, ref: AttrRef, path: str) -> Operand:
        """The operand of a single-valued attribute (or ``meta`` sub-attribute)."""
        attr, sub = ref.attribute, ref.sub
        name = attr.name.lower()
        t = self.table
        if self.is_common(ref) or not ref.is_extension:
            if name == "meta":
                if sub is None:
                    return Col(t.c.created, attr)  # always present: "meta pr" is true
                sname = sub.name.lower()
                if sname == "created":
                    return Col(t.c.created, sub)
                if sname == "lastmodified":
                    return Col(t.c.last_modified, sub)
                if sname == "resourcetype":
                    return Const(self.rtype.name, sub)
                raise InvalidFilter(f"{path!r} is not filterable")
            cols = _COLUMNS[t.name]
            lowered = _LOWERED_COLUMNS[t.name]
            if sub is None and name in lowered:
                return Col(lowered[name], attr, lowered=True)
            if sub is None and name in cols:
                return Col(cols[name], attr)
        keys: tuple[str, ...] = (ref.schema,) if ref.is_extension else ()
        keys += (attr.name,) + ((sub.name,) if sub else ())
        return Json(t.c.attrs, keys, sub or attr)

    def elements(self, ref: AttrRef) -> Elements:
        attr = ref.attribute
        if attr.type != "complex":
            raise InvalidFilter(f"{attr.name!r}: multi-valued simple attributes are not supported")
        if self.table in (users, agents) and not ref.is_extension and attr.name == "groups":
            return UserGroups(attr, self.table)
        if self.table is agents and attr.name == "applications":
            return AgentApplications(attr)
        if self.table is agentic_applications and attr.name == "agents":
            return ApplicationAgents(attr)
        if self.table is groups and not ref.is_extension and attr.name == "members":
            return GroupMembers(attr)
        keys = ((ref.schema,) if ref.is_extension else ()) + (attr.name,)
        return JsonElements(self.d, self.table, keys, attr)


# --------------------------------------------------------------------------- compiler


class _Scope:
    """Resolves the paths of one filter level: the resource, or inside ``attr[...]``."""

    def predicate(self, path: str, op: str, value: Value) -> Bool:
        raise NotImplementedError

    def value_path(self, node: ValuePath) -> Bool:
        raise InvalidFilter(f"nested filter on {node.attr!r} inside '[...]' is not allowed")


class _ResourceScope(_Scope):
    def __init__(self, r: Resolver) -> None:
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
    def __init__(self, r: Resolver, elems: Elements) -> None:
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
    def __init__(self, r: Resolver, ref: AttrRef) -> None:
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
    return _compile(node, _ResourceScope(Resolver(rtype, dialect)))


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


# --------------------------------------------------------------------------- group PATCH members


class MemberFilter:
    """A ``members[...]`` path of a group PATCH ``remove`` (RFC 7644 §3.5.2.2), compiled over
    the membership rows of one group: the one filter compiler, with the member row's own
    operands. ``value`` is the member id (caseExact); ``type`` and ``display`` (the member's
    userName or group displayName) are case-insensitive; ``$ref`` is not stored.

    Use :attr:`source` as the FROM clause and :meth:`where` as the condition."""

    def __init__(self, dialect: str) -> None:
        self.preds = Predicates(Dialect(dialect))
        self.member_group = groups.alias("member_group")
        self.source = members.outerjoin(users, users.c.id == members.c.member_id).outerjoin(
            self.member_group, self.member_group.c.id == members.c.member_id
        )
        # Both columns hold Python-lowered text (store.resources), as the value is lowered.
        self.source = self.source.outerjoin(agents, agents.c.id == members.c.member_id)
        self.display = func.coalesce(
            users.c.user_name_lower, self.member_group.c.display_name_lower, agents.c.name_lower
        )

    def where(self, node: Node) -> ColumnElement[bool]:
        return _compile(node, _MemberScope(self))


_MEMBERS = GROUP.attribute("members")


class _MemberScope(_Scope):
    def __init__(self, f: MemberFilter) -> None:
        self.f = f

    def predicate(self, path: str, op: str, value: Value) -> Bool:
        name = path.lower().removeprefix("members.")
        sub = _MEMBERS.sub(name) if _MEMBERS is not None else None
        if sub is None:
            raise InvalidFilter(f"members sub-attribute {path!r} cannot be filtered")
        o: Operand
        if sub.name == "value":
            o = Col(members.c.member_id, sub)
        elif sub.name == "type":
            o = Col(members.c.member_type, sub)
        elif sub.name == "display":
            o = Col(self.f.display, sub, lowered=True)
        else:
            raise InvalidFilter(f"members sub-attribute {path!r} cannot be filtered")
        full = f"members.{sub.name}"
        return self.f.preds.present(o) if op == "pr" else self.f.preds.compare(o, op, value, full)

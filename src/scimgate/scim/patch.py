"""The PATCH engine (RFC 7644 §3.5.2): apply a PatchOp body to a canonical resource.

Does: validate the PatchOp message, apply ``add``/``replace``/``remove`` in order to a copy of
the resource (as produced by :func:`scimgate.scim.resource.normalise`), re-normalise the
result, and compose Group membership operations into a net effect for the store.
Does not: touch group members itself — the store keeps them as rows, so a one-member add
costs O(1), not O(group size) — nor read anything, nor bump versions (``changed`` tells the
caller whether it must).

Membership changes are returned for the store to apply in this fixed order, which their
composition (``scim.patch_members``) relies on: ``members_replace`` (if not None), then
``members_remove_filter``, then ``members_remove``, then ``members_add``.

Choices where the RFC is silent or where IdPs disagree with it:

* ``schemas`` must list the PatchOp URN (any case) when present; a body without ``schemas``
  is accepted (the ``Operations`` shape is unambiguous, and resource bodies get the same
  tolerance). Keys ``Operations``/``op``/``path``/``value`` and op names are case-insensitive
  (Entra ID sends ``"Replace"``).
* An empty ``path`` string is treated as no path.
* ``replace``/``add`` on ``attr[type eq "x"]...`` that matches nothing creates the element
  ``{"type": "x", ...}`` (Entra ID expects this) instead of RFC 7644 §3.5.2.3's noTarget;
  any other filter that matches nothing is noTarget.
* ``remove`` of something that is not there (absent attribute, filter matching nothing) is a
  successful no-op: IdPs retry, and removal is idempotent.
* ``remove`` of a required attribute (``userName``, ``displayName``), or ``replace`` with
  null, is invalidValue: the resource would become invalid.
* ``remove`` on a multi-valued attribute with a ``value`` array removes the listed values
  (Entra ID's ``{"op":"Remove","path":"members","value":[{"value":id}]}``), without a value
  it removes them all.
* ``id`` in a PATCH is accepted only when equal to the resource's id (Okta's group rename
  sends it); ``meta``, ``groups`` and a different ``id`` are mutability errors. ``password``
  is accepted and dropped (scimgate stores no passwords; Okta syncs them by PATCH).
* ``changed`` says whether ``resource`` changed; whether members changed is known only once
  the store applied the membership effect.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from scimgate.scim.errors import (
    InvalidPath,
    InvalidSyntax,
    InvalidValue,
    Mutability,
    NoTarget,
    ScimError,
    TooMany,
)
from scimgate.scim.filter import Compare, Node, PatchPath, parse_path
from scimgate.scim.filter_match import matches
from scimgate.scim.patch_members import MemberOps, value_eq_id
from scimgate.scim.resource import (
    MEMBERS,
    Member,
    check_primary,
    normalise,
    normalise_value,
    qualified,
)
from scimgate.scim.schema import (
    GROUP,
    PATCH_OP_SCHEMA,
    Attribute,
    ResourceType,
    resolve,
)

__all__ = ["MAX_OPERATIONS", "Member", "PatchResult", "apply_patch"]

MAX_OPERATIONS = 1000
_OPS = ("add", "replace", "remove")
_MISSING: Any = object()


@dataclass(frozen=True)
class PatchResult:
    """The outcome of a PATCH: the new resource and the membership effect for the store."""

    resource: dict[str, Any]
    changed: bool
    members_add: tuple[Member, ...] = ()
    members_remove: tuple[str, ...] = ()
    members_replace: tuple[Member, ...] | None = None
    members_remove_filter: Node | None = None

    @property
    def members_touched(self) -> bool:
        return bool(
            self.members_add
            or self.members_remove
            or self.members_replace is not None
            or self.members_remove_filter is not None
        )


@dataclass(frozen=True)
class _Op:
    index: int
    kind: str  # add | replace | remove
    path: str | None
    value: Any  # _MISSING when absent


@dataclass(frozen=True)
class _Target:
    """Where an operation points: ``[urn:]attr[filter][.sub]``."""

    schema_id: str
    attr: Attribute
    sub: Attribute | None = None
    filter: Node | None = None


def _get(obj: dict[str, Any], name: str) -> Any:
    """Case-insensitive key lookup (Entra ID and Okta capitalise ``Operations``)."""
    if name in obj:
        return obj[name]
    lowered = name.lower()
    return next(
        (v for k, v in obj.items() if isinstance(k, str) and k.lower() == lowered), _MISSING
    )


def _operations(body: Any) -> list[_Op]:
    """Validate the PatchOp message (RFC 7644 §3.5.2) and return its operations."""
    if not isinstance(body, dict):
        raise InvalidSyntax("a PATCH body must be a JSON object")
    schemas = _get(body, "schemas")
    if schemas is not _MISSING:
        listed = [schemas] if isinstance(schemas, str) else schemas
        if not isinstance(listed, list) or not any(
            isinstance(s, str) and s.lower() == PATCH_OP_SCHEMA.lower() for s in listed
        ):
            raise InvalidSyntax(f"schemas must contain {PATCH_OP_SCHEMA}")
    raw_ops = _get(body, "Operations")
    if not isinstance(raw_ops, list):
        raise InvalidSyntax("Operations must be an array of operations")
    if not raw_ops:
        raise InvalidSyntax("Operations is empty")
    if len(raw_ops) > MAX_OPERATIONS:
        raise TooMany(f"at most {MAX_OPERATIONS} operations per PATCH")
    ops = []
    for index, raw in enumerate(raw_ops):
        if not isinstance(raw, dict):
            raise InvalidSyntax(f"operation {index}: must be an object")
        kind = _get(raw, "op")
        if not isinstance(kind, str) or kind.lower() not in _OPS:
            raise InvalidSyntax(f"operation {index}: op must be one of add, replace, remove")
        path = _get(raw, "path")
        if path is _MISSING or path is None or (isinstance(path, str) and not path.strip()):
            path = None
        elif not isinstance(path, str):
            raise InvalidPath(f"operation {index}: path must be a string")
        value = _get(raw, "value")
        if kind.lower() != "remove" and value is _MISSING:
            raise InvalidValue(f"operation {index}: {kind.lower()} needs a value")
        ops.append(_Op(index, kind.lower(), path, value))
    return ops


def _creation_seed(node: Node) -> dict[str, Any] | None:
    """``type eq "work"``: the element Entra ID expects us to create when none matches."""
    if (
        isinstance(node, Compare)
        and node.op == "eq"
        and node.path.lower() == "type"
        and isinstance(node.value, str)
    ):
        return {"type": node.value}
    return None


class _Engine:
    def __init__(self, doc: dict[str, Any], rtype: ResourceType) -> None:
        self.doc = doc
        self.rtype = rtype
        self.members = MemberOps()
        self.resource_id = doc.get("id")

    # --- locating ------------------------------------------------------------------------

    def box(self, schema_id: str, create: bool = False) -> dict[str, Any] | None:
        """The object holding the schema's attributes: the resource, or its extension object."""
        if schema_id == self.rtype.schema.id:
            return self.doc
        found = self.doc.get(schema_id)
        if isinstance(found, dict):
            return found
        if not create:
            return None
        created: dict[str, Any] = {}
        self.doc[schema_id] = created
        return created

    def name(self, target: _Target) -> str:
        dotted = target.attr.name + ("[...]" if target.filter is not None else "")
        if target.sub is not None:
            dotted += "." + target.sub.name
        return qualified(target.schema_id, self.rtype, dotted)

    def target(self, path: PatchPath, text: str) -> _Target:
        ref = resolve(path.attr, self.rtype)
        if ref is None or ref.sub is not None:
            raise InvalidPath(f"path {text!r}: no attribute {path.attr!r} in {self.rtype.name}")
        attr = ref.attribute
        sub: Attribute | None = None
        if path.sub is not None:
            sub = attr.sub(path.sub)
            if sub is None:
                raise InvalidPath(f"path {text!r}: {attr.name} has no sub-attribute {path.sub!r}")
        if path.filter is not None and not (attr.multi_valued and attr.type == "complex"):
            raise InvalidPath(f"path {text!r}: a filter needs a multi-valued complex attribute")
        return _Target(ref.schema, attr, sub, path.filter)

    # --- dispatch ------------------------------------------------------------------------

    def apply(self, op: _Op) -> None:
        if op.path is None:
            if op.kind == "remove":  # RFC 7644 §3.5.2.2
                raise NoTarget("remove needs a path")
            if not isinstance(op.value, dict):
                raise InvalidValue(f"{op.kind} without a path needs an object of attributes")
            self.pathless(op.kind, op.value, scope=None)
            return
        ext = self.rtype.extension(op.path.strip())
        if ext is not None:  # the path is a whole extension: urn:...:enterprise:2.0:User
            if op.kind == "remove":
                self.doc.pop(ext.id, None)
            elif op.value is not None:
                if not isinstance(op.value, dict):
                    raise InvalidValue(f"{ext.id}: expected an object of attributes")
                self.pathless(op.kind, op.value, scope=ext.id)
            elif op.kind == "replace":
                self.doc.pop(ext.id, None)
            return
        path = parse_path(op.path)
        self.assign(op.kind, self.target(path, op.path), op.value)

    def pathless(self, kind: str, value: dict[str, Any], scope: str | None) -> None:
        """RFC 7644 §3.5.2.1/§3.5.2.3 without path: each key is an attribute of the resource.

        Keys may be dotted (``name.givenName``) or URN-qualified, and a key that is an
        extension URN carries an object of that extension's attributes (Entra ID sends all
        three forms).
        """
        for key, raw in value.items():
            if not isinstance(key, str):  # pragma: no cover - JSON keys are strings
                raise InvalidValue("attribute names must be strings")
            if key.lower() == "schemas":  # also inside an extension object (scim2-models sends it)
                continue  # informational; recomputed from the data
            ext = self.rtype.extension(key) if scope is None else None
            if ext is not None:
                if raw is None:
                    if kind == "replace":
                        self.doc.pop(ext.id, None)
                    continue
                if not isinstance(raw, dict):
                    raise InvalidValue(f"{ext.id}: expected an object of attributes")
                self.pathless(kind, raw, scope=ext.id)
                continue
            ref = resolve(f"{scope}:{key}" if scope else key, self.rtype)
            if ref is None:
                where = f"{scope}:{key}" if scope else key
                raise InvalidValue(f"no attribute {where!r} in {self.rtype.name}")
            self.assign(kind, _Target(ref.schema, ref.attribute, ref.sub), raw)

    def assign(self, kind: str, target: _Target, value: Any) -> None:
        attr = target.attr
        if attr is MEMBERS:
            self.member_op(kind, target, value)
            return
        if attr.mutability == "writeOnly" or attr.returned == "never":
            return  # password: accepted, never stored (see resource.py)
        if attr.mutability == "readOnly":
            if (
                attr.name == "id"
                and kind != "remove"
                and (self.resource_id is None or value == self.resource_id)
            ):
                return  # Okta's group rename repeats the id: not a modification
            raise Mutability(f"{self.name(target)} is read-only")
        if target.sub is not None and target.sub.mutability in ("readOnly", "immutable"):
            raise Mutability(f"{self.name(target)} is {target.sub.mutability}")
        if kind == "remove":
            self.remove(target, value)
        elif target.filter is not None:
            self.filtered(kind, target, value)
        elif target.sub is not None:
            self.set_sub(kind, target, value)
        else:
            self.set_attr(kind, target, value)

    # --- add / replace -------------------------------------------------------------------

    def set_attr(self, kind: str, target: _Target, value: Any) -> None:
        attr = target.attr
        new = normalise_value(attr, value, self.name(target))
        merge = attr.type == "complex" and not attr.multi_valued and isinstance(value, dict)
        if new is None and not merge:
            if kind == "replace":  # RFC 7643 §2.5: null unassigns
                self.unset(target)
            return
        box = self.box(target.schema_id, create=True)
        assert box is not None
        if merge:
            # RFC 7644 §3.5.2.1/§3.5.2.3: sub-attributes not given are left unchanged; a
            # sub-attribute given as null becomes unassigned (RFC 7643 §2.5)
            current = {**(box.get(attr.name) or {}), **(new or {})}
            for sub_name in _null_subs(attr, value):
                current.pop(sub_name, None)
            _set_or_pop(box, attr.name, current or None)
        elif attr.multi_valued:
            if kind == "replace":  # RFC 7644 §3.5.2.3: all values replaced
                box[attr.name] = new
                return
            merged = list(box.get(attr.name) or [])
            for item in new:  # RFC 7644 §3.5.2.1: an existing value is not added twice
                if item not in merged:
                    merged.append(item)
            box[attr.name] = _settle_primary(merged, new)
        else:
            box[attr.name] = new

    def set_sub(self, kind: str, target: _Target, value: Any) -> None:
        attr, sub = target.attr, target.sub
        assert sub is not None
        new = normalise_value(sub, value, self.name(target))
        box = self.box(target.schema_id, create=new is not None)
        if box is None:
            return
        if attr.multi_valued:  # emails.value: every value (no filter selects all)
            items = box.get(attr.name) or []
            if not items:
                raise NoTarget(f"{self.name(target)}: {attr.name} has no values")
            for item in items:
                _set_or_pop(item, sub.name, new)
            box[attr.name] = _settle_primary(items, items if _is_primary(sub, new) else [])
            return
        current = dict(box.get(attr.name) or {})
        _set_or_pop(current, sub.name, new)
        if current:
            box[attr.name] = current
        else:
            box.pop(attr.name, None)

    def filtered(self, kind: str, target: _Target, value: Any) -> None:
        """``attr[filter]`` and ``attr[filter].sub`` for add/replace (RFC 7644 §3.5.2.3)."""
        attr, sub, node = target.attr, target.sub, target.filter
        assert node is not None
        label = self.name(target)
        box = self.box(target.schema_id, create=True)
        assert box is not None
        items: list[dict[str, Any]] = list(box.get(attr.name) or [])
        hits = [i for i, item in enumerate(items) if matches(node, item, attr)]
        if not hits:
            seed = _creation_seed(node)
            if seed is None:
                raise NoTarget(f"{label}: the filter matches no value")
            raw = {**seed, sub.name: value} if sub is not None else _merge_seed(seed, value, label)
            element = _element(attr, raw, label)
            if element is not None:
                items.append(element)
                box[attr.name] = _settle_primary(items, [element])
            return
        written = []
        new_sub = normalise_value(sub, value, label) if sub is not None else None
        for i in hits:
            if sub is not None:
                item = dict(items[i])
                _set_or_pop(item, sub.name, new_sub)
            elif kind == "replace":  # "all matching record values SHALL be replaced"
                replacement = _element(attr, value, label)
                item = replacement if replacement is not None else {}
            else:  # add: merge sub-attributes into the matching values
                item = {**items[i], **(_element(attr, value, label) or {})}
            items[i] = item
            written.append(item)
        kept = [item for item in items if item]
        box[attr.name] = _settle_primary(kept, [w for w in written if w])
        if not box[attr.name]:
            box.pop(attr.name)

    # --- remove (RFC 7644 §3.5.2.2) ------------------------------------------------------

    def unset(self, target: _Target) -> None:
        if target.attr.required:
            raise InvalidValue(f"{self.name(target)} is required and cannot be removed")
        box = self.box(target.schema_id)
        if box is not None:
            box.pop(target.attr.name, None)

    def remove(self, target: _Target, value: Any) -> None:
        attr, sub, node = target.attr, target.sub, target.filter
        box = self.box(target.schema_id)
        if node is None and sub is None:
            if attr.multi_valued and value is not _MISSING and value is not None:
                listed = normalise_value(attr, value, self.name(target)) or []
                if box is not None and attr.name in box:
                    kept = [item for item in box[attr.name] if not _listed(item, listed)]
                    box[attr.name] = kept
                    if not kept:
                        box.pop(attr.name)
                return
            self.unset(target)
            return
        if box is None or attr.name not in box:
            return
        if not attr.multi_valued:  # name.givenName
            assert sub is not None
            box[attr.name].pop(sub.name, None)
            if not box[attr.name]:
                box.pop(attr.name)
            return
        items: list[dict[str, Any]] = box[attr.name]
        out = []
        for item in items:
            if node is not None and not matches(node, item, attr):
                out.append(item)
            elif sub is not None:
                rest = {k: v for k, v in item.items() if k != sub.name}
                if rest:
                    out.append(rest)
        if out:
            box[attr.name] = out
        else:
            box.pop(attr.name)

    # --- group members: returned to the store, never applied here -------------------------

    def member_op(self, kind: str, target: _Target, value: Any) -> None:
        if target.sub is not None:
            raise Mutability("member sub-attributes are immutable: add or remove the member")
        label = self.name(target)
        if target.filter is not None:
            if kind != "remove":
                raise InvalidPath(f"{label}: members can be added, replaced or removed, not edited")
            ident = value_eq_id(target.filter)
            if ident is not None:
                self.members.do_remove([ident])
            else:
                self.members.do_remove_filter(target.filter)
            return
        if kind == "remove":
            if value is _MISSING or value is None:
                self.members.do_replace([])  # RFC 7644 §3.5.2.2: all members removed
                return
            listed = normalise_value(MEMBERS, value, label) or []
            self.members.do_remove([str(e["value"]) for e in listed])  # Entra ID's value array
            return
        elements = normalise_value(MEMBERS, value, label) or []
        if kind == "add":
            self.members.do_add(elements)
        else:
            self.members.do_replace(elements)


def _element(attr: Attribute, value: Any, label: str) -> dict[str, Any] | None:
    """One value of a multi-valued complex attribute, validated."""
    if not isinstance(value, dict):
        raise InvalidValue(f"attribute '{label}': expected an object")
    normalised = normalise_value(attr, [value], label)
    return normalised[0] if normalised else None


def _merge_seed(seed: dict[str, Any], value: Any, label: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidValue(f"attribute '{label}': expected an object")
    return {**seed, **value}


def _set_or_pop(item: dict[str, Any], name: str, value: Any) -> None:
    if value is None:
        item.pop(name, None)
    else:
        item[name] = value


def _is_primary(sub: Attribute, value: Any) -> bool:
    return sub.name == "primary" and value is True


def _settle_primary(items: list[Any], written: list[Any]) -> list[Any]:
    """RFC 7644 §3.5.2: setting ``primary`` true on a value sets it false on the others."""
    chosen = [w for w in written if isinstance(w, dict) and w.get("primary") is True]
    if not chosen:
        return items
    out = []
    for item in items:
        if (
            isinstance(item, dict)
            and item.get("primary") is True
            and not any(item is c for c in chosen)
        ):
            item = {**item, "primary": False}
        out.append(item)
    check_primary(out, "primary")
    return out


def _null_subs(attr: Attribute, raw: Any) -> list[str]:
    """Sub-attributes given as null in a complex value: they become unassigned."""
    if not isinstance(raw, dict):
        return []
    names = []
    for key, value in raw.items():
        sub = attr.sub(key) if isinstance(key, str) else None
        if value is None and sub is not None:
            names.append(sub.name)
    return names


def _listed(item: Any, listed: list[Any]) -> bool:
    """Whether ``item`` is one of the values given to a remove (all given sub-attributes equal)."""
    for wanted in listed:
        if isinstance(wanted, dict) and isinstance(item, dict):
            if wanted and all(item.get(k) == v for k, v in wanted.items()):
                return True
        elif item == wanted:
            return True
    return False


def apply_patch(resource: dict[str, Any], body: Any, rtype: ResourceType) -> PatchResult:
    """Apply a PatchOp ``body`` (parsed JSON) to ``resource`` (canonical, without members).

    Operations apply in order and atomically: any error raises a ScimError subclass and
    nothing is returned (RFC 7644 §3.5.2: "the PATCH request as a whole fails").
    """
    operations = _operations(body)
    is_group = rtype.schema.id == GROUP.id
    base = {k: v for k, v in resource.items() if not (is_group and k == "members")}
    before = normalise(base, rtype, mode="patch-result")
    engine = _Engine(copy.deepcopy(before), rtype)
    for op in operations:
        try:
            engine.apply(op)
        except ScimError as exc:
            raise type(exc)(
                f"operation {op.index} ({op.kind}): {exc.detail}",
                status=exc.status,
                scim_type=exc.scim_type,
            ) from None
    after = normalise(engine.doc, rtype, mode="patch-result")
    return PatchResult(after, after != before, **engine.members.result())

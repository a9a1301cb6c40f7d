"""Group membership operations of a PATCH (RFC 7644 §3.5.2), composed in order into the net
effect the store applies as rows, in this fixed order: ``members_replace`` (if not None),
then ``members_remove_filter``, then ``members_remove``, then ``members_add``. A one-member
add or remove stays O(1) whatever the group's size. Pure."""

from __future__ import annotations

from typing import Any

from scimgate.scim.filter import Compare, Node, Or
from scimgate.scim.filter_match import matches
from scimgate.scim.resource import MEMBERS, Member, member_from


def value_eq_id(node: Node) -> str | None:
    """``value eq "<id>"`` (Okta, Entra ID): a plain id removal, no SQL filter needed."""
    if (
        isinstance(node, Compare)
        and node.op == "eq"
        and node.path.lower() in ("value", "members.value")
        and isinstance(node.value, str)
    ):
        return node.value
    return None


class MemberOps:
    """Composes member operations, in order, into the store's replace→filter→remove→add."""

    def __init__(self) -> None:
        self.replace: dict[str, Member] | None = None
        self.filter: Node | None = None
        self.remove: dict[str, None] = {}  # insertion-ordered set
        self.add: dict[str, tuple[Member, dict[str, Any]]] = {}

    def do_add(self, elements: list[dict[str, Any]]) -> None:
        for element in elements:
            member = member_from(element)
            self.remove.pop(member.value, None)
            self.add.setdefault(member.value, (member, element))

    def do_remove(self, ids: list[str]) -> None:
        for ident in ids:
            self.add.pop(ident, None)
            self.remove[ident] = None

    def do_replace(self, elements: list[dict[str, Any]]) -> None:
        self.replace = {}
        for element in elements:
            member = member_from(element)
            self.replace.setdefault(member.value, member)
        self.filter = None
        self.remove.clear()
        self.add.clear()

    def do_remove_filter(self, node: Node) -> None:
        # Pending adds are known only here, so the filter is applied to them here (on the
        # display the client sent); the store applies it to stored members, in SQL.
        for ident, (_member, element) in list(self.add.items()):
            if matches(node, element, MEMBERS):
                del self.add[ident]
        self.filter = node if self.filter is None else Or(self.filter, node)

    def result(self) -> dict[str, Any]:
        replace = self.replace
        if replace is not None and self.filter is None:
            # fold later adds/removes into the full list: one clear statement for the store
            for ident in self.remove:
                replace.pop(ident, None)
            for ident, (member, _element) in self.add.items():
                replace.setdefault(ident, member)
            self.remove.clear()
            self.add.clear()
        return {
            "members_replace": tuple(replace.values()) if replace is not None else None,
            "members_remove_filter": self.filter,
            "members_remove": tuple(self.remove),
            "members_add": tuple(member for member, _ in self.add.values()),
        }

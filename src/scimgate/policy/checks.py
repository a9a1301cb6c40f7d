"""Cross-references in a validated policy: names, groups, backends, and which routes can match
the same request.

Route matching, as rendered (render_routes.py): hosts are case-insensitive; a path prefix is
case-insensitive unless ``case_sensitive``; a prefix ending in ``/`` matches paths starting
with it, any other prefix ``p`` matches ``p``, ``p/...`` and ``p....`` (the ``.`` boundary:
Rails' ``(.:format)`` and Spring's old suffix match serve ``/admin.json`` from ``/admin``'s
handler). Open routes (public / allow_sources) are matched before any identity is asked,
whatever their place in the file, so an open route may narrow an identity-gated route (a
more specific path or host: ``/healthz`` out of ``/``) but never cover any of its paths.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from scimgate.policy.agents_model import AGENT_TYPE_PREFIX
from scimgate.policy.model import ANY_GROUP, Loc, Policy, Route, RouteFrom, header_key


def _prefix_covers(outer: str, inner: str) -> bool:
    """Is every path the prefix ``inner`` matches also matched by the prefix ``outer``?"""
    if outer == "/" or outer == inner:
        return True
    if outer.endswith("/"):
        return inner.startswith(outer)
    return inner.startswith((outer + "/", outer + "."))


def path_covers(outer: RouteFrom, inner: RouteFrom) -> bool:
    """Does ``outer``'s path match every path ``inner``'s matches (case rules included)?"""
    if outer.path_prefix == "/":
        return True
    if not outer.case_sensitive:
        return _prefix_covers(outer.path_prefix.lower(), inner.path_prefix.lower())
    # a case-insensitive inner route also matches case variants a case-sensitive one does not
    return inner.case_sensitive and _prefix_covers(outer.path_prefix, inner.path_prefix)


def paths_intersect(a: RouteFrom, b: RouteFrom) -> bool:
    """Can one path match both prefixes? Compared case-insensitively (an over-approximation
    for two case-sensitive prefixes, which only makes the open-route check stricter).
    Two segment-aware prefixes share a path exactly when one covers the other."""
    x, y = a.path_prefix.lower(), b.path_prefix.lower()
    return _prefix_covers(x, y) or _prefix_covers(y, x)


def hosts_cover(outer: list[str], inner: list[str]) -> bool:
    """Does every host ``inner`` matches also match one of ``outer``?"""
    if "*" in outer:
        return True
    for host in inner:
        if host == "*":
            return False
        if host in outer:
            continue
        if any(o.startswith("*.") and host.endswith(o[1:]) for o in outer):
            continue
        return False
    return True


def _host_pair_intersects(a: str, b: str) -> bool:
    if a == "*" or b == "*" or a == b:
        return True
    if a.startswith("*.") and b.endswith(a[1:]):
        return True
    return b.startswith("*.") and a.endswith(b[1:])


def hosts_intersect(a: list[str], b: list[str]) -> bool:
    """Can one Host match both host lists?"""
    return any(_host_pair_intersects(x, y) for x in a for y in b)


def route_covers(outer: Route, inner: Route) -> bool:
    """Does ``outer`` match every request ``inner`` matches?"""
    return hosts_cover(outer.from_.hosts, inner.from_.hosts) and path_covers(
        outer.from_, inner.from_
    )


def routes_intersect(a: Route, b: Route) -> bool:
    """Can one request match both routes?"""
    return hosts_intersect(a.from_.hosts, b.from_.hosts) and paths_intersect(a.from_, b.from_)


def _carves_out(open_route: Route, gated: Route) -> bool:
    """Is the open route a strictly more specific piece of the gated one: inside it, with a
    longer path (``/healthz`` out of ``/``, ``/admin/health`` out of ``/admin``) or the same
    path on fewer hosts? A case variant or ``/admin/`` of ``/admin`` is not: it would take
    (almost) all of the gated route's paths."""
    if not route_covers(gated, open_route):
        return False
    inner = open_route.from_.path_prefix.lower().rstrip("/")
    outer = gated.from_.path_prefix.lower().rstrip("/")
    if len(inner) > len(outer):
        return True
    return inner == outer and not hosts_cover(open_route.from_.hosts, gated.from_.hosts)


def _open_route_problem(route: Route, policy: Policy, number: Callable[[int], int]) -> str | None:
    """An open route may narrow an identity-gated route, never cover any of its paths."""
    for k, gated in enumerate(policy.routes):
        if gated.is_open or not routes_intersect(route, gated):
            continue
        if _carves_out(route, gated):
            continue
        kind = "public" if route.public else "source-limited"
        return (
            f"{kind} route {route.name!r} overlaps identity-gated route {gated.name!r} "
            f"(#{number(k)}): an open route may only be more specific than a gated one "
            "(compared case-insensitively, whatever the order)"
        )
    return None


def _reachability_problem(
    i: int, route: Route, policy: Policy, number: Callable[[int], int]
) -> str | None:
    """First match wins among routes of the same kind (open routes go first, as a group)."""
    for k, earlier in enumerate(policy.routes[:i]):
        if earlier.is_open != route.is_open or not route_covers(earlier, route):
            continue
        same = earlier.from_.path_prefix.lower() == route.from_.path_prefix.lower() and sorted(
            earlier.from_.hosts
        ) == sorted(route.from_.hosts)
        what = "duplicate route" if same else "unreachable route"
        return f"{what} {route.name!r}: route {earlier.name!r} (#{number(k)}) matches first"
    return None


def semantic_problems(
    policy: Policy, route_numbers: Sequence[int] | None = None
) -> list[tuple[Loc, str]]:
    """Every cross-reference problem, located at the YAML key it concerns. Routes are
    numbered from 1 in messages; ``route_numbers`` gives each route's number in the file
    when some routes were left out (a policy checked past its invalid routes)."""

    def number(index: int) -> int:
        return route_numbers[index] if route_numbers is not None else index + 1

    out: list[tuple[Loc, str]] = agent_group_problems(policy)
    names: dict[str, int] = {}
    backends: dict[str, tuple[int, list[str]]] = {}
    if policy.identity.header is not None:
        source = header_key(policy.identity.header.name)
        if any(header_key(n) == source for n in policy.identity_headers.names()):
            out.append(
                (
                    ("identity_headers",),
                    f"identity_headers cannot use {policy.identity.header.name!r}: it is the "
                    "identity source header",
                )
            )
    for i, route in enumerate(policy.routes):
        where: Loc = ("routes", number(i) - 1)
        if route.name in names:
            out.append(((*where, "name"), f"duplicate route name {route.name!r}"))
        names.setdefault(route.name, i)
        if ANY_GROUP in route.allow_groups and len(route.allow_groups) > 1:
            out.append(((*where, "allow_groups"), "'any' cannot be combined with group slugs"))
        for j, slug in enumerate(route.allow_groups):
            if slug != ANY_GROUP and slug not in policy.groups:
                out.append(((*where, "allow_groups", j), f"undefined policy group {slug!r}"))
        out += _agent_problems(where, route, policy)
        if route.require_scopes and policy.identity.source != "jwt":
            out.append(((*where, "require_scopes"), "require_scopes needs identity.source: jwt"))
        problem = _reachability_problem(i, route, policy, number)
        if problem is None and route.is_open:
            problem = _open_route_problem(route, policy, number)
        if problem is not None:
            out.append(((*where, "from"), problem))
        backend = route.to.backend
        if backend is not None:
            if backend in backends and backends[backend][1] != route.to.servers:
                out.append(
                    (
                        (*where, "to", "servers"),
                        f"backend {backend!r} is defined with other servers elsewhere",
                    )
                )
            backends.setdefault(backend, (i, route.to.servers))
    return out


def _agent_problems(where: Loc, route: Route, policy: Policy) -> list[tuple[Loc, str]]:
    """``allow_agents`` needs agent tokens to be readable and names defined groups."""
    allow = route.allow_agents
    if allow is None:
        return []
    out: list[tuple[Loc, str]] = []
    if policy.identity.source != "jwt" or policy.identity.agents is None:
        out.append(
            (
                (*where, "allow_agents"),
                "allow_agents needs identity.source: jwt and "
                "identity.agents (how an agent's token is recognised)",
            )
        )
    if ANY_GROUP in allow.groups and (len(allow.groups) > 1 or allow.types):
        out.append(((*where, "allow_agents"), "'any' cannot be combined with groups or types"))
    for j, slug in enumerate(allow.groups):
        if slug != ANY_GROUP and slug not in policy.groups:
            out.append(((*where, "allow_agents", "groups", j), f"undefined policy group {slug!r}"))
    return out


def agent_group_problems(policy: Policy) -> list[tuple[Loc, str]]:
    """Agent types travel in map values as ``at-<type>``: no policy group may look like one."""
    if policy.identity.agents is None:
        return []
    return [
        (
            ("groups", slug),
            f"group slugs starting with {AGENT_TYPE_PREFIX!r} are reserved for "
            "agent types when identity.agents is set",
        )
        for slug in policy.groups
        if slug.startswith(AGENT_TYPE_PREFIX)
    ]

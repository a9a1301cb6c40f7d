"""Rendered rules, request side: what every request goes through before any identity is
asked (client copies of identity headers removed, non-canonical paths and hosts refused),
route matching, open routes (public / source-limited), and the identity-gated decisions.

A path reaches route matching only in a form that common backends read the same way
(docs/policy.md has the table: Tomcat/Jetty, Spring's StrictHttpFirewall, IIS, nginx,
Express, Go). HAProxy 2.6.12 facts behind the rules (measured with raw requests here):

* ``path`` is the query-less path, also for an absolute-form request
  (``GET http://host/admin?q`` -> ``/admin``), which is forwarded to the backend as sent; a
  Host header that differs from the authority is refused by HAProxy (400), but an
  absolute-form request with NO Host header passes with an empty Host.
* ``GET *`` and ``GET http://host`` (no path) give an empty ``path``; ``GET admin`` and a
  ``#`` anywhere in the target are refused by HAProxy itself (400), as are raw control and
  non-ASCII bytes. ``;``, ``\\``, trailing ``.`` and ``%xx`` reach ``path`` untouched.
* ``Host: a, b`` passes as one header (``req.hdr_cnt(host)`` = 2, ``req.fhdr_cnt(host)`` = 1);
  two identical Host headers are merged, two different ones refused.
* ``req.hdr_cnt()`` parses every character of the values for commas: on a ~700-byte bearer
  token that was ~3,600 instructions per request (callgrind), so the rules count header lines
  with ``fhdr_cnt`` and look for a comma with ``-m reg ,`` (PCRE2's JIT finds it ~2,000
  instructions sooner than ``-m sub ,`` does on such a token).
* Header names are lower-cased, so ``del-header <regex> -m reg`` sees ``x_scimgate_user``.
* ``Connection: x-scimgate-user`` is forwarded to the server as sent: a hop-by-hop-aware
  proxy behind HAProxy would then drop the identity header scimgate set.
"""

from __future__ import annotations

from scimgate.policy.model import ANY_GROUP, Policy, Route
from scimgate.policy.render_agents import person_condition, route_agent_rules
from scimgate.policy.render_base import V_DECISION, V_GROUPS, V_ROUTE, V_SCOPES, acl_name, deny

# Refused (400) anywhere in the query-less path (matched case-insensitively):
_AMBIGUOUS_PATH_PARTS = (
    # percent-encoded unreserved characters, '%', '/', '\' (decoded by some, not by others)
    "%(?:2[5DEF]|3[0-9]|[46][1-9A-F]|[57][0-9A]|5[CF]|7E)",
    # encoded controls and NUL, ';' (path parameters), '#' and '?' (re-parsed after decoding)
    "%(?:[01][0-9A-F]|7F|3B|23|3F)",
    # never-valid UTF-8 lead bytes (overlong '/', '.'), and the 4 letters whose Unicode case
    # mapping is ASCII (Java/.NET equalsIgnoreCase): U+0130, U+0131, U+017F, U+212A
    "%C[01]|%C4%B[01]|%C5%BF|%E2%84%AA",
    # raw ';' (Tomcat/Jetty drop ';params' from a segment) and '\' (IIS, WHATWG URL: '/')
    "[;\\\\]",
    # empty segments (nginx merge_slashes) and segments ending in '.' or an encoded space
    # (Windows drops them; also every '.' and '..' segment)
    "//|(?:[.]|%20)(?:/|$)",
)
AMBIGUOUS_PATH_REGEX = "|".join(_AMBIGUOUS_PATH_PARTS)
# request headers some backends take as the URL in place of the request line
URL_OVERRIDE_HEADERS = ("X-Original-URL", "X-Rewrite-URL")


def _header_name_regex(names: list[str]) -> str:
    """One regex for header names as HAProxy stores them (lower case), '-' and '_' alike."""
    words = sorted({n.lower().replace("_", "-") for n in names})
    return "^(?:" + "|".join(w.replace("-", "[-_]") for w in words) + ")$"


def hygiene_rules(policy: Policy) -> list[str]:
    """First, for every request: remove client copies of identity headers, then refuse
    requests whose target a backend could read as another route's."""
    names = policy.identity_headers.names()
    out = [
        "# --- scimgate: client copies of the identity headers go first, on every request ---",
        "# (with X-Original-URL / X-Rewrite-URL: IIS URL Rewrite and some PHP frameworks route",
        "# on them instead of the request line)",
        f"http-request del-header '{_header_name_regex([*names, *URL_OVERRIDE_HEADERS])}' -m reg",
    ]
    header = policy.identity.header
    if header is not None:
        out += [
            f"acl scimgate_trusted_src src {' '.join(header.trusted_sources)}",
            f"http-request del-header '{_header_name_regex([header.name])}' -m reg "
            "unless scimgate_trusted_src",
        ]
    hop = _header_name_regex([*names, *([header.name] if header is not None else [])])
    out += [
        "# a Connection header naming them would make a hop-by-hop-aware proxy behind us drop them",
        *deny(400, "hop_by_hop_identity", f"{{ req.hdr(connection) -m reg -i '{hop}' }}"),
        "",
        "# --- scimgate: request targets a backend could read as another route's ---",
        "# origin-form paths only ('*' and 'http://host' have no path), one Host, and an",
        "# absolute-form target only with a Host (HAProxy checks they are equal)",
        "acl scimgate_origin_path path_beg /",
        "acl scimgate_origin_form url_beg /",
        # fhdr_cnt/fhdr, not hdr_cnt: no per-character comma parsing (HAProxy already merges
        # identical Host lines and refuses different ones, so a list is the only way to two)
        "acl scimgate_host_absent req.fhdr_cnt(host) eq 0",
        "acl scimgate_host_list req.fhdr(host) -m sub ,",
        *deny(
            400,
            "ambiguous_host",
            "scimgate_host_list || scimgate_host_absent !scimgate_origin_form",
        ),
        f"acl scimgate_ambiguous_path path -m reg -i '{AMBIGUOUS_PATH_REGEX}'",
        *deny(400, "ambiguous_path", "!scimgate_origin_path || scimgate_ambiguous_path"),
    ]
    return out


def route_match_acls(route: Route) -> tuple[list[str], str]:
    """ACL lines for the route's hosts and path prefix, and the condition combining them."""
    lines: list[str] = []
    parts: list[str] = []
    if "*" not in route.from_.hosts:
        host_acl = acl_name("host", route.name)
        for host in route.from_.hosts:
            # host names are case-insensitive, and 'example.com.' is the same name
            if host.startswith("*."):
                lines.append(
                    f"acl {host_acl} req.fhdr(host),host_only -m end -i {host[1:]} {host[1:]}."
                )
            else:
                lines.append(f"acl {host_acl} req.fhdr(host),host_only -m str -i {host} {host}.")
        parts.append(host_acl)
    prefix = route.from_.path_prefix
    if prefix != "/":
        path_acl = acl_name("path", route.name)
        case = "" if route.from_.case_sensitive else " -i"
        if prefix.endswith("/"):
            lines.append(f"acl {path_acl} path_beg{case} {prefix}")
        else:
            # segment-aware: /admin matches /admin, /admin/... and /admin.json (format
            # suffixes), not /administrator
            lines.append(f"acl {path_acl} path{case} {prefix}")
            lines.append(f"acl {path_acl} path_beg{case} {prefix}/ {prefix}.")
        parts.append(path_acl)
    return lines, " ".join(parts)


def _choose_route(routes: list[Route]) -> list[str]:
    out: list[str] = []
    for route in routes:
        lines, condition = route_match_acls(route)
        out += lines
        when = f" {condition}" if condition else ""
        out.append(
            f"http-request set-var({V_ROUTE}) str({route.name}) if !{{ var({V_ROUTE}) -m found }}{when}"
        )
    return out


def _serve(routes: list[Route]) -> list[str]:
    """``return`` lines for the routes HAProxy answers itself."""
    return [
        f'http-request return status 200 content-type text/plain string "{route.to.return_}" '
        f"if {acl_name('route', route.name)}"
        for route in routes
        if route.to.return_ is not None
    ]


def open_route_rules(policy: Policy) -> list[str]:
    """Public and source-limited routes: matched before any identity is asked; an allowed
    request leaves the http-request rules here (``allow``), so no identity rule, and no
    identity header, ever applies to it."""
    routes = [r for r in policy.routes if r.is_open]
    if not routes:
        return []
    out = [
        "",
        "# --- scimgate: open routes (no identity asked, none passed on), before identity ---",
        *_choose_route(routes),
        f"acl scimgate_open_route var({V_ROUTE}) -m found",
    ]
    for route in routes:
        out.append(f"acl {acl_name('route', route.name)} var({V_ROUTE}) -m str {route.name}")
        if route.allow_sources:
            src = acl_name("src", route.name)
            out.append(f"acl {src} src {' '.join(route.allow_sources)}")
            out += deny(403, "source_denied", f"{acl_name('route', route.name)} !{src}")
    header = policy.identity.header
    if header is not None:  # the trusted front's identity is not passed on either
        out.append(f"http-request del-header {header.name} if scimgate_open_route")
    out += [
        f"http-request set-var({V_DECISION}) str(allow) if scimgate_open_route",
        *_serve(routes),
        "http-request allow if scimgate_open_route",
    ]
    return out


def gated_route_rules(policy: Policy) -> list[str]:
    """Identity-gated routes, in policy order (first match wins): no match, missing groups or
    scopes -> 403; HAProxy's own answers for ``return`` routes."""
    routes = [r for r in policy.routes if not r.is_open]
    out = [
        "",
        "# --- scimgate: identity-gated routes, in policy order; the first match wins ---",
        *_choose_route(routes),
        *deny(403, "no_route", f"!{{ var({V_ROUTE}) -m found }}"),
        "",
        "# --- scimgate: per-route groups and scopes ---",
    ]
    used_slugs = sorted({g for r in routes for g in r.allow_groups if g != ANY_GROUP})
    for slug in used_slugs:
        out.append(f"acl {acl_name('group', slug)} var({V_GROUPS}) -m sub ,{slug},")
    for route in routes:
        is_route = acl_name("route", route.name)
        out.append(f"acl {is_route} var({V_ROUTE}) -m str {route.name}")
        if route.allow_groups and ANY_GROUP not in route.allow_groups:
            lacking = " ".join(f"!{acl_name('group', g)}" for g in route.allow_groups)
            people = person_condition(policy)  # agents: allow_agents instead
            out += deny(403, "group_denied", f"{is_route}{people} {lacking}")
        out += route_agent_rules(policy, route)
        for scope in route.require_scopes:
            out += deny(
                403,
                "scope_missing",
                f"{is_route} !{{ var({V_SCOPES}) -m sub ' {scope} ' }}",
            )
    return out


def answer_rules(policy: Policy) -> list[str]:
    """The identity-gated routes HAProxy answers itself (after the allow decision)."""
    return _serve([r for r in policy.routes if not r.is_open])


def backend_switch_rules(policy: Policy) -> list[str]:
    """``use_backend`` for every route with a backend (open routes got here through ``allow``)."""
    return [
        f"use_backend {route.to.backend} if {acl_name('route', route.name)}"
        for route in policy.routes
        if route.to.backend is not None
    ]

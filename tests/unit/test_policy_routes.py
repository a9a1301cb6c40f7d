"""Route rules, pure: open routes (public / allow_sources) never shadow identity-gated ones,
case-insensitive matching in the cross-reference checks, identity header names, and the
ambiguous-path regex against a model of how common backends read a path."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest
from hypothesis import given, settings, strategies as hs

from scimgate.policy import PolicyError, parse_policy
from scimgate.policy.render_routes import AMBIGUOUS_PATH_REGEX

BASE = """\
identity:
  source: jwt
  jwt:
    algorithm: RS256
    public_key: keys/jwt.pub.pem
    issuer: https://idp.example.com/
    audience: scimgate-demo
groups:
  admins: {idp_groups: ["Admins"]}
routes:
"""
ADMIN = """\
  - name: admin
    from: {path_prefix: /admin}
    allow_groups: [admins]
    to: {return: admin}
"""
HOME = """\
  - name: home
    from: {path_prefix: /}
    allow_groups: [any]
    to: {return: home}
"""


def _route(name: str, prefix: str, access: str, hosts: str = '["*"]', extra: str = "") -> str:
    return (
        f"  - name: {name}\n    from: {{hosts: {hosts}, path_prefix: {prefix}{extra}}}\n"
        f"    {access}\n    to: {{return: x}}\n"
    )


def _problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    return [str(p) for p in info.value.problems]


# --- open routes ---------------------------------------------------------------------------


def test_open_routes_parse_and_carve_out_of_a_gated_catch_all() -> None:
    # the public route comes AFTER the catch-all: open routes are matched first anyway
    text = BASE + ADMIN + HOME + _route("health", "/healthz", "public: true")
    text += _route("metrics", "/metrics", "allow_sources: [10.0.0.0/8, 127.0.0.1/32]")
    policy = parse_policy(text, "p.yaml")
    health, metrics = policy.routes[2], policy.routes[3]
    assert health.public and health.is_open and not health.allow_groups
    assert metrics.allow_sources == ["10.0.0.0/8", "127.0.0.1/32"] and metrics.is_open
    assert not policy.routes[0].is_open


@pytest.mark.parametrize(
    ("prefix", "hosts", "extra"),
    [
        ("/", '["*"]', ""),  # covers /admin
        ("/admin", '["*"]', ""),  # the same paths
        ("/ADMIN", '["*"]', ""),  # case-insensitively the same
        ("/Admin", '["*"]', ", case_sensitive: true"),  # a case variant of /admin
        ("/admin/", '["*"]', ""),  # all of /admin but the bare /admin
        ("/admin", '["admin.example.com", "*"]', ""),  # no fewer hosts
    ],
)
def test_open_route_covering_gated_paths_is_refused(prefix: str, hosts: str, extra: str) -> None:
    for access in ("public: true", "allow_sources: [10.0.0.0/8]"):
        # before or after the gated route: the order does not matter
        for text in (
            BASE + _route("open", prefix, access, hosts, extra) + ADMIN,
            BASE + ADMIN + _route("open", prefix, access, hosts, extra),
        ):
            problems = _problems(text)
            assert len(problems) == 1, problems
            assert "overlaps identity-gated route 'admin'" in problems[0], problems


@pytest.mark.parametrize("prefix", ["/admin/health", "/ADMIN/Health", "/admin.json"])
def test_open_route_may_carve_a_longer_path_out_of_a_gated_one(prefix: str) -> None:
    parse_policy(BASE + _route("open", prefix, "public: true") + ADMIN, "p.yaml")
    parse_policy(BASE + ADMIN + _route("open", prefix, "public: true"), "p.yaml")


def test_open_route_must_be_narrower_in_hosts_too() -> None:
    host_gated = _route("console", "/", "allow_groups: [admins]", hosts='["admin.example.com"]')
    # /status on every host would take admin.example.com/status from the gated host route
    problems = _problems(BASE + host_gated + _route("status", "/status", "public: true"))
    assert "overlaps identity-gated route 'console'" in problems[0]
    # on that host, a more specific path is a carve-out
    parse_policy(
        BASE
        + host_gated
        + _route("status", "/status", "public: true", hosts='["admin.example.com"]'),
        "p.yaml",
    )
    # another host entirely never meets it
    parse_policy(
        BASE + host_gated + _route("status", "/", "public: true", hosts='["www.example.com"]'),
        "p.yaml",
    )
    # a wildcard host containing the gated one
    problems = _problems(
        BASE + host_gated + _route("status", "/", "public: true", hosts='["*.example.com"]')
    )
    assert "overlaps identity-gated route 'console'" in problems[0]


def test_open_route_beside_segment_neighbours() -> None:
    # /administrator is another segment: no overlap with /admin
    parse_policy(BASE + ADMIN + _route("open", "/administrator", "public: true"), "p.yaml")
    # /admin.json is served by /admin's handler on Rails-like backends: it overlaps
    problems = _problems(
        BASE
        + _route("open", "/admin", "public: true")
        + _route("json", "/admin.json", "allow_groups: [admins]")
    )
    assert "overlaps identity-gated route 'json'" in problems[0]


@pytest.mark.parametrize(
    ("access", "message"),
    [
        ("public: true\n    allow_groups: [any]", "exactly one of"),
        ("public: true\n    allow_sources: [10.0.0.0/8]", "exactly one of"),
        ("allow_sources: [10.0.0.0/8]\n    allow_groups: [any]", "exactly one of"),
        ("public: false", "exactly one of"),
        ("public: true\n    require_scopes: [read]", "require_scopes needs allow_groups"),
        ("allow_sources: [10.0.0.1/8]", "invalid trusted source"),
        ("allow_sources: ['10.0.0.0/8 evil']", "invalid trusted source"),
    ],
)
def test_route_access_rules_are_validated(access: str, message: str) -> None:
    problems = _problems(BASE + _route("r", "/r", access) + HOME)
    assert any(message in p for p in problems), problems


def test_gated_duplicates_are_found_case_insensitively() -> None:
    upper = _route("upper", "/ADMIN", "allow_groups: [any]")
    assert "duplicate route 'upper'" in _problems(BASE + ADMIN + upper + HOME)[0]
    # /admin covers /admin.json (the '.' boundary)
    json_route = _route("json", "/admin.json", "allow_groups: [any]")
    assert "unreachable route 'json'" in _problems(BASE + ADMIN + json_route + HOME)[0]
    # a case-sensitive route does not cover the case variants of a later insensitive one
    sensitive = _route("cs", "/Admin", "allow_groups: [admins]", extra=", case_sensitive: true")
    parse_policy(BASE + sensitive + ADMIN + HOME, "p.yaml")
    # ...but an insensitive earlier route covers a later case-sensitive one
    assert "duplicate route 'cs'" in _problems(BASE + ADMIN + sensitive + HOME)[0]


def test_prefix_segment_ending_in_a_dot_is_refused() -> None:
    problems = _problems(BASE + _route("dot", "/admin.", "allow_groups: [any]") + HOME)
    assert "a segment cannot end with '.'" in problems[0]


def test_identity_header_names() -> None:
    policy = parse_policy(BASE + HOME, "p.yaml")
    assert policy.identity_headers.names() == [
        "X-Scimgate-User",
        "X-Scimgate-Email",
        "X-Scimgate-Actor",
        "X-Scimgate-Groups",
        "X-Request-ID",
    ]
    custom = parse_policy(
        BASE + HOME + "identity_headers: {user: X-Forwarded-User, email: null}\n", "p.yaml"
    )
    assert custom.identity_headers.user == "X-Forwarded-User"
    assert custom.identity_headers.email is None
    for bad, message in [
        ("{user: Host}", "invalid header name"),
        ("{user: 'X-A B'}", "invalid header name"),
        ("{user: X-Dup, groups: x_dup}", "invalid header name"),
        ("{user: X-Dup, groups: X-DUP}", "must differ"),
        ("{request_id: null}", "request_id"),
    ]:
        problems = _problems(BASE + HOME + f"identity_headers: {bad}\n")
        assert any(message in p for p in problems), (bad, problems)
    header_source = (BASE + HOME).replace(
        "  source: jwt\n",
        "  source: header\n  header: {name: X-Scimgate-User, trusted_sources: [127.0.0.1/32]}\n",
    )
    problems = _problems(header_source)
    assert any("it is the identity source header" in p for p in problems), problems


# --- the ambiguous-path regex against a model of backends -----------------------------------

REFUSED = re.compile(AMBIGUOUS_PATH_REGEX, re.IGNORECASE)
ROUTES = [("/admin", "admin"), ("/eng", "eng"), ("/api/", "api")]
# Unicode letters whose per-character case mapping lands on ASCII (Java equalsIgnoreCase,
# .NET OrdinalIgnoreCase): dotted I, dotless i, long s, Kelvin sign
_FOLD = {"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"}


def _route_of(path: str) -> str:
    """The route scimgate picks (case-insensitive, segment-aware with the '.' boundary)."""
    lowered = path.lower()
    for prefix, name in ROUTES:
        if prefix.endswith("/"):
            if lowered.startswith(prefix):
                return name
        elif lowered == prefix or lowered.startswith((prefix + "/", prefix + ".")):
            return name
    return "home"


def _worst_reader(path: str) -> str:
    """How the most lenient common backends read a raw path: Tomcat drops ';params', IIS and
    WHATWG URLs read '\\' as '/', percent-decoding (then a re-parse cuts at '?' or '#'),
    nginx merges slashes, Windows drops trailing dots and spaces, dot segments resolve,
    case-insensitive servers fold case (Unicode included)."""
    segments = [s.split(";", 1)[0] for s in path.replace("\\", "/").split("/")]
    decoded = unquote("/".join(segments), errors="replace")
    decoded = re.split(r"[?#]", decoded, maxsplit=1)[0].replace("\\", "/")
    parts: list[str] = []
    for segment in decoded.split("/"):
        segment = segment.rstrip(". ")
        if segment in ("", "."):
            continue
        if segment == "..":
            if parts:
                parts.pop()
            continue
        parts.append(segment)
    folded = "".join(_FOLD.get(c, c) for c in "/" + "/".join(parts))
    return folded.lower() + ("/" if path.endswith("/") and parts else "")


PIECES = ["/", "admin", "ADMIN", "Admin", "eng", "api", "x", ".", "..", ";", ";x", "\\",
          "%3b", "%3B", "%2e", "%2E", "%2f", "%5c", "%00", "%09", "%20", "%25", "%61", "%41",
          "%3f", "%23", "%C4%B1", "%c5%bf", "%E2%84%AA", "%C3%A9", "%c0%af", ".json", "-",
          "~", "%2B", "+", "%40"]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(pieces=hs.lists(hs.sampled_from(PIECES), min_size=1, max_size=7))
def test_paths_not_refused_mean_the_same_route_to_every_reader(pieces: list[str]) -> None:
    path = "/" + "".join(pieces)
    if REFUSED.search(path):
        return
    assert _route_of(path) == _route_of(_worst_reader(path)), (path, _worst_reader(path))


@pytest.mark.parametrize(
    "path",
    ["/ADMIN", "/admin;x", "/admin%3b", "/admin%00", "/admin%20", "/admin\\", "/admin.",
     "/admin%2e", "/%61dmin", "//admin", "/x/../admin", "/admin/.", "/adm%C4%B1n",
     "/admin%3F", "/admin%23", "/admin%09", "/a%20/admin", "/a./admin"],
)  # fmt: skip
def test_issue_probes_are_refused_or_mean_admin(path: str) -> None:
    assert REFUSED.search(path) or _route_of(path) == "admin", path


@pytest.mark.parametrize(
    "path",
    ["/", "/admin", "/admin/x", "/admin.json", "/files/My%20Doc.pdf", "/%C3%A9t%C3%A9",
     "/api/v1.2/items", "/.well-known/openid-configuration", "/a+b", "/c%2B%2B", "/u/%40me"],
)  # fmt: skip
def test_ordinary_paths_pass(path: str) -> None:
    assert not REFUSED.search(path), path

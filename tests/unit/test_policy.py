"""Policy file parsing, line-numbered errors, entry compilation, renderer allow-lists."""

from __future__ import annotations

import base64
import hashlib
import hmac
import textwrap
from pathlib import Path

import pytest

from scimgate.policy import (
    Policy,
    PolicyError,
    RenderError,
    entries_for_user,
    identity_key,
    identity_values,
    load_policy,
    map_file_name,
    map_file_names,
    parse_policy,
    policy_value,
    render_config,
    shard_of,
)
from scimgate.policy.jwtmint import demo_policy_yaml, generate_rsa_keypair, mint_jwt
from tests.support.scim import ENTERPRISE_SCHEMA as ENT

SECRET = b"0123456789abcdef0123456789abcdef"
SECRET_B64 = base64.b64encode(SECRET).decode()

BASE = """\
identity:
  source: jwt
  jwt:
    algorithm: RS256
    public_key: keys/jwt.pub.pem
    issuer: https://idp.example.com/
    audience: scimgate-demo
  key_attributes: [userName, emails]
groups:
  admins: {idp_groups: ["Admins", "00g-admins-id"]}
  engineering: {idp_groups: ["Engineering"]}
routes:
  - name: admin
    from: {hosts: ["*"], path_prefix: /admin}
    allow_groups: [admins]
    to: {return: "admin area"}
  - name: home
    from: {path_prefix: /}
    allow_groups: [any]
    to: {return: "hello"}
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    return [str(p) for p in info.value.problems]


def _one_problem(text: str) -> str:
    problems = _problems(text)
    assert len(problems) == 1, problems
    return problems[0]


# --- parsing ------------------------------------------------------------------------------


def test_demo_policy_parses() -> None:
    policy = parse_policy(demo_policy_yaml(), "demo.yaml")
    assert policy.identity.source == "jwt"
    assert policy.identity.jwt is not None
    assert policy.identity.jwt.algorithm == "RS256"
    assert policy.identity.key_attributes == ["userName", "emails"]
    assert [r.name for r in policy.routes] == ["health", "admin", "eng", "home"]
    assert policy.routes[0].public and policy.routes[0].is_open
    assert policy.routes[1].to.return_ == "admin area"
    assert policy.routes[3].allow_groups == ["any"]


def test_load_policy_resolves_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(BASE)
    policy = load_policy(tmp_path / "policy.yaml")
    assert policy.resolve_path("keys/jwt.pub.pem") == str(tmp_path.resolve() / "keys/jwt.pub.pem")
    assert policy.resolve_path("/abs/k.pem") == "/abs/k.pem"


def test_load_policy_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy(tmp_path / "nope.yaml")


def test_undefined_group_has_line_and_column() -> None:
    text = BASE.replace("allow_groups: [admins]", "allow_groups: [admins, sre]")
    assert _one_problem(text) == "p.yaml:15:28: undefined policy group 'sre'"


def test_bad_slug_located_at_key() -> None:
    text = BASE.replace("  engineering:", "  Engineering Team:")
    problem = _one_problem(text)
    assert problem.startswith("p.yaml:11:3: groups.Engineering Team: invalid group slug")
    assert "group slug" in problem


def test_all_problems_reported_at_once() -> None:
    text = BASE.replace("algorithm: RS256", "algorithm: none").replace(
        "path_prefix: /admin", "path_prefix: admin"
    )
    problems = _problems(text)
    assert len(problems) == 2
    assert problems[0].startswith("p.yaml:4:16: identity.jwt.algorithm")
    assert problems[1].startswith("p.yaml:14:") and "path_prefix" in problems[1]


def test_unknown_and_missing_keys() -> None:
    problems = _problems(BASE.replace("    audience: scimgate-demo\n", "    audiense: x\n"))
    assert any(p == "p.yaml:7:5: identity.jwt.audiense: unknown key 'audiense'" for p in problems)
    assert any(
        p.startswith("p.yaml:4:") and "missing required key 'audience'" in p for p in problems
    )


def test_duplicate_yaml_key() -> None:
    text = BASE.replace("  engineering: {", "  admins: {idp_groups: [x]}\n  engineering: {")
    assert _one_problem(text) == "p.yaml:11:3: duplicate key 'admins'"


def test_yaml_syntax_error() -> None:
    problem = _one_problem("identity: [unclosed\n")
    assert problem.startswith("p.yaml:2:1: YAML syntax")


def test_not_a_mapping() -> None:
    assert "must be a YAML mapping" in _one_problem("- a\n- b\n")
    assert "must be a YAML mapping" in _one_problem("")


def test_duplicate_and_unreachable_routes() -> None:
    dup = BASE.replace(
        "  - name: home",
        "  - name: admin2\n    from: {path_prefix: /admin}\n    allow_groups: [any]\n"
        "    to: {return: x}\n  - name: home",
    )
    assert "duplicate route 'admin2'" in _one_problem(dup)
    shadowed = BASE + (
        "  - name: later\n    from: {path_prefix: /later}\n    allow_groups: [any]\n"
        "    to: {return: x}\n"
    )
    problem = _one_problem(shadowed)
    assert problem.startswith("p.yaml:22:") and "unreachable route 'later'" in problem
    same_name = BASE.replace("name: home", "name: admin")
    assert "duplicate route name 'admin'" in _one_problem(same_name)


def test_path_segment_shadowing_is_not_reported() -> None:
    # '/admin' does not match '/administrator' (segment-aware prefixes)
    text = BASE.replace(
        "  - name: home",
        "  - name: adm2\n    from: {path_prefix: /administrator}\n    allow_groups: [any]\n"
        "    to: {return: x}\n  - name: home",
    )
    parse_policy(text, "p.yaml")


def test_any_cannot_mix_and_scopes_need_jwt() -> None:
    assert "'any' cannot be combined" in _one_problem(
        BASE.replace("allow_groups: [admins]", "allow_groups: [admins, any]")
    )
    header = BASE.replace(
        "source: jwt", "source: header\n  header: {name: X-Email, trusted_sources: [127.0.0.1/32]}"
    )
    header = header.replace(
        "allow_groups: [admins]", "allow_groups: [admins]\n    require_scopes: [read]"
    )
    assert "require_scopes needs identity.source: jwt" in _one_problem(header)


def test_source_block_required_and_algorithm_key_pairing() -> None:
    assert "identity.header is missing" in _one_problem(
        BASE.replace("source: jwt", "source: header")
    )
    hs = BASE.replace("algorithm: RS256", "algorithm: HS256")
    assert "HS256 needs 'secret'" in _one_problem(hs)


def test_mtls_san_is_refused_on_26() -> None:
    text = BASE.replace("source: jwt", "source: mtls\n  mtls: {field: san_email}")
    assert "identity.mtls.field" in _one_problem(text)


def test_backend_routes() -> None:
    text = BASE.replace(
        'to: {return: "hello"}', "to: {backend: be_app, servers: ['127.0.0.1:8081']}"
    )
    policy = parse_policy(text, "p.yaml")
    assert policy.routes[1].to.backend == "be_app"
    assert "exactly one of" in _one_problem(BASE.replace('to: {return: "hello"}', "to: {}"))
    assert "at least one entry in 'servers'" in _one_problem(
        BASE.replace('to: {return: "hello"}', "to: {backend: be_app}")
    )
    assert "reserved" in _one_problem(
        BASE.replace('to: {return: "hello"}', "to: {backend: scimgate_x, servers: ['a:1']}")
    )


HOSTILE = [
    ("path_prefix: /admin", 'path_prefix: "/admin evil"'),
    ("path_prefix: /admin", 'path_prefix: "/admin\\"x"'),
    ("path_prefix: /admin", 'path_prefix: "/admin\\nhttp-request allow"'),
    ("path_prefix: /admin", "path_prefix: /admin#x"),
    ("path_prefix: /admin", "path_prefix: /a/../admin"),
    ("path_prefix: /admin", "path_prefix: /a//b"),
    ("path_prefix: /admin", "path_prefix: /%61dmin"),
    ('hosts: ["*"]', 'hosts: ["example.com:8080"]'),
    ('hosts: ["*"]', 'hosts: ["a b"]'),
    ('hosts: ["*"]', 'hosts: ["Example.com"]'),
    ('hosts: ["*"]', 'hosts: ["ex*.com"]'),
    ('return: "admin area"', "return: 'x\" if TRUE'"),
    ('return: "admin area"', 'return: "${HOME}"'),
    ('return: "admin area"', 'return: "100%"'),
    ("issuer: https://idp.example.com/", 'issuer: "https://x/\' }"'),
    ("issuer: https://idp.example.com/", 'issuer: "https://x/ y"'),
    ("audience: scimgate-demo", 'audience: "a\\tb"'),
    ("public_key: keys/jwt.pub.pem", 'public_key: "k.pem\\") -m int 1 }"'),
    ("public_key: keys/jwt.pub.pem", 'public_key: "${X}/k.pem"'),
    ("key_attributes: [userName, emails]", "key_attributes: [displayName]"),
    ("name: admin", "name: Admin"),
    ("name: admin", 'name: "a b"'),
    ("allow_groups: [admins]", "allow_groups: ['admins,x']"),
]


@pytest.mark.parametrize(("old", "new"), HOSTILE)
def test_hostile_strings_rejected(old: str, new: str) -> None:
    assert old in BASE
    with pytest.raises(PolicyError):
        parse_policy(BASE.replace(old, new, 1), "p.yaml")


@pytest.mark.parametrize(
    "addition",
    [
        '    claim: "email\') }"\n',
        '    scope_claim: "scp x"\n',
        '    leeway_seconds: "30"\n',
        "    leeway_seconds: 100000\n",
    ],
)
def test_hostile_jwt_settings(addition: str) -> None:
    with pytest.raises(PolicyError):
        parse_policy(
            BASE.replace(
                "    audience: scimgate-demo\n", "    audience: scimgate-demo\n" + addition
            ),
            "p",
        )


@pytest.mark.parametrize(
    "header",
    [
        "{name: 'X-Email; x', trusted_sources: [127.0.0.1/32]}",
        "{name: X-Email, trusted_sources: []}",
        "{name: X-Email, trusted_sources: ['127.0.0.1/32 0.0.0.0/0']}",
        "{name: X-Email, trusted_sources: [10.0.0.1/8]}",
    ],
)
def test_hostile_header_settings(header: str) -> None:
    text = BASE.replace("source: jwt", f"source: header\n  header: {header}")
    with pytest.raises(PolicyError):
        parse_policy(text, "p")


@pytest.mark.parametrize("scope", ["'a b'", "'a\"b'", "''", '"a\'"'])
def test_hostile_scopes(scope: str) -> None:
    text = BASE.replace(
        "allow_groups: [admins]", f"allow_groups: [admins]\n    require_scopes: [{scope}]"
    )
    with pytest.raises(PolicyError):
        parse_policy(text, "p")


@pytest.mark.parametrize("server", ["'127.0.0.1:80 check'", "'h:99999'", "'h'", "'h:80\\nx'"])
def test_hostile_servers(server: str) -> None:
    text = BASE.replace('to: {return: "hello"}', f"to: {{backend: be, servers: [{server}]}}")
    with pytest.raises(PolicyError):
        parse_policy(text, "p")


# --- compiling entries ---------------------------------------------------------------------

POLICY = parse_policy(BASE, "p.yaml")


def test_identity_values_attributes() -> None:
    user = {
        "userName": "  Alice@Example.COM ",
        "externalId": "00u123",
        "emails": [
            {"value": "alice@example.com", "primary": True},
            {"value": "A.Work@Example.com"},
            {"value": ""},
            {"nope": 1},
        ],
        ENT: {"employeeNumber": "E42"},
    }
    assert identity_values(user, POLICY) == ["alice@example.com", "a.work@example.com"]
    for attrs, expected in [
        (["emails.primary"], ["alice@example.com"]),
        (["externalId", "userName"], ["00u123", "alice@example.com"]),
        ([f"{ENT}:employeeNumber"], ["e42"]),
        ([f"{ENT}:manager"], []),
    ]:
        text = BASE.replace("key_attributes: [userName, emails]", f"key_attributes: {attrs}")
        assert identity_values(user, parse_policy(text, "p")) == expected


def test_identity_lowering_is_ascii_only() -> None:
    # HAProxy's `lower` is ASCII-only; a Unicode lower() would never match it
    from scimgate.policy.compiler import normalise_identity

    assert normalise_identity(" ÉMILE@Example.com") == "Émile@example.com"
    # non-ASCII (and inner spaces) never become identities: HAProxy 2.6 cannot hash them stably
    assert identity_values({"userName": "ÉMILE@Example.com"}, POLICY) == []
    assert identity_values({"userName": "a b@example.com"}, POLICY) == []


def test_identity_key_is_uppercase_hmac_sha256() -> None:
    expected = hmac.new(SECRET, b"alice@example.com", hashlib.sha256).hexdigest().upper()
    assert identity_key("alice@example.com", SECRET) == expected
    assert identity_key("Alice@Example.com", SECRET) == expected
    assert len(expected) == 64


def test_policy_value() -> None:
    assert policy_value([], POLICY) == ","
    assert policy_value(["Engineering", "Admins"], POLICY) == ",admins,engineering,"
    assert policy_value(["00g-admins-id"], POLICY) == ",admins,"
    assert policy_value(["admins", "Unrelated"], POLICY) == ","  # exact, case-sensitive


def test_entries_for_user() -> None:
    user = {"userName": "bob@example.com", "active": True, "emails": [{"value": "Bob@Example.com"}]}
    groups = [{"displayName": "Admins", "externalId": "x"}, {"displayName": "Other"}]
    entries = entries_for_user(user, groups, POLICY, SECRET)
    assert entries == {identity_key("bob@example.com", SECRET): ",admins,"}
    assert entries_for_user({**user, "active": False}, groups, POLICY, SECRET) == {}
    assert entries_for_user({**user, "active": "False"}, groups, POLICY, SECRET) == {}
    assert entries_for_user({**user, "active": None}, groups, POLICY, SECRET) == {}
    assert entries_for_user(
        {k: v for k, v in user.items() if k != "active"}, [], POLICY, SECRET
    ) == {identity_key("bob@example.com", SECRET): ","}
    assert entries_for_user({"active": True}, groups, POLICY, SECRET) == {}


def test_shards() -> None:
    key = "A7" + "0" * 62
    assert shard_of(key, 1) == 0
    assert shard_of(key, 16) == 10
    assert shard_of(key, 256) == 0xA7
    assert map_file_name(0, 1) == "identities.map"
    assert map_file_name(10, 16) == "identities-a.map"
    assert map_file_name(0xA7, 256) == "identities-a7.map"
    assert len(set(map_file_names(256))) == 256
    with pytest.raises(ValueError):
        shard_of(key, 8)
    with pytest.raises(ValueError):
        map_file_name(16, 16)


# --- rendering (string level; tests/integration runs the output through haproxy) -----------


def _keyed_policy(tmp_path: Path, text: str = BASE) -> Policy:
    (tmp_path / "keys").mkdir(exist_ok=True)
    _priv, pub = generate_rsa_keypair()
    (tmp_path / "keys/jwt.pub.pem").write_text(pub)
    return parse_policy(text, "p.yaml", base_dir=str(tmp_path))


def test_render_pins_alg_and_hides_debug(tmp_path: Path) -> None:
    policy = parse_policy(BASE, "p.yaml", base_dir=str(tmp_path))
    _keyed_policy(tmp_path)
    cfg = render_config(policy, map_dir="/var/lib/scimgate", hmac_secret_b64=SECRET_B64)
    pub = tmp_path / "keys/jwt.pub.pem"
    assert f'jwt_verify("RS256","{pub}") -m int 1' in cfg
    assert "jwt_verify(txn" not in cfg
    assert "var(txn.scimgate_jwt_alg) -m str RS256" in cfg
    assert "hmac(sha256,proc.scimgate_hmac),hex" in cfg
    assert f"set-var proc.scimgate_hmac str({SECRET_B64})" in cfg
    assert "expose-fd listeners" in cfg and "stats timeout 1h" in cfg
    assert "map(/var/lib/scimgate/identities.map)" in cfg
    assert "X-Scimgate" not in cfg
    assert "X-Scimgate-Key" in render_config(
        policy, map_dir="/m", hmac_secret_b64=SECRET_B64, debug_headers=True
    )


def test_render_fragment(tmp_path: Path) -> None:
    policy = _keyed_policy(tmp_path)
    frag = render_config(
        policy, mode="fragment", map_dir="/m", shards=16, hmac_secret_b64=SECRET_B64
    )
    assert "global" not in frag.replace("# Needed in the global", "")
    # issue 15: a fragment goes to stdout, so it names the secret's file, never the secret
    assert SECRET_B64 not in frag
    assert "#     set-var proc.scimgate_hmac str(<SECRET>)" in frag
    assert "\nfrontend" not in frag and "\nbackend" not in frag
    assert "map(/m/identities-f.map) if { var(txn.scimgate_key) -m beg F }" in frag


def test_render_rejects_certificate_pem(tmp_path: Path) -> None:
    policy = _keyed_policy(tmp_path)
    (tmp_path / "keys/jwt.pub.pem").write_text(
        "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n"
    )
    with pytest.raises(RenderError, match="certificate"):
        render_config(policy, map_dir="/m", hmac_secret_b64=SECRET_B64)
    (tmp_path / "keys/jwt.pub.pem").unlink()
    with pytest.raises(RenderError, match="does not exist"):
        render_config(policy, map_dir="/m", hmac_secret_b64=SECRET_B64)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"map_dir": "relative"},
        {"map_dir": "/m x"},
        {"hmac_secret_b64": "short"},
        {"hmac_secret_b64": base64.b64encode(b"tooshort").decode()},
        {"hmac_secret_b64": SECRET_B64 + ")"},
        {"bind": "127.0.0.1:80 ssl"},
        {"stats_socket": "/run/a b.sock"},
        {"log_target": "stdout\nlisten x"},
        {"shards": 4},
        {"mode": "partial"},
    ],
)
def test_render_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, object]) -> None:
    policy = _keyed_policy(tmp_path)
    args: dict[str, object] = {"map_dir": "/m", "hmac_secret_b64": SECRET_B64, **kwargs}
    with pytest.raises(RenderError):
        render_config(policy, **args)  # type: ignore[arg-type]


def test_mint_jwt_claims() -> None:
    import jwt

    priv, pub = generate_rsa_keypair()
    assert pub.startswith("-----BEGIN PUBLIC KEY-----")
    token = mint_jwt(
        priv,
        subject_claim="email",
        identity="alice@example.com",
        algorithm="RS256",
        issuer="https://i/",
        audience="aud",
        scopes=["read", "write"],
        ttl_seconds=60,
        kid="k1",
        extra={"x": 1},
    )
    claims = jwt.decode(token, pub, algorithms=["RS256"], audience="aud", issuer="https://i/")
    assert claims["email"] == "alice@example.com"
    assert claims["scope"] == "read write" and claims["x"] == 1
    assert jwt.get_unverified_header(token)["kid"] == "k1"


def test_demo_policy_yaml_is_dedented() -> None:
    assert demo_policy_yaml() == textwrap.dedent(demo_policy_yaml())

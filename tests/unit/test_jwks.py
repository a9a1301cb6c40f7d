"""JWKS mode, pure parts: which keys a JWKS may hold, discovery, Cache-Control, the policy
keys and the kid-selected, algorithm-pinned verification the renderer writes."""

from __future__ import annotations

import base64
import json
import textwrap
from typing import Any

import pytest

from scimgate.policy import PolicyError, parse_policy, render_config
from scimgate.policy.jwks import (
    JwksError,
    PinnedKey,
    cache_seconds,
    discovery_url,
    jwks_uri_from_discovery,
    parse_jwks,
)
from tests.support.jwks_issuer import new_key

SECRET_B64 = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
ALGS = ("RS256", "RS384", "RS512", "ES256", "ES384")


def jwks(*entries: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(entries)}).encode()


@pytest.fixture(scope="module")
def rsa_jwk() -> dict[str, Any]:
    return new_key("r1", "rsa2048").jwk()


@pytest.fixture(scope="module")
def ec_jwk() -> dict[str, Any]:
    return new_key("e1", "ec256").jwk()


def test_rsa_and_ec_keys_become_public_key_pems(
    rsa_jwk: dict[str, Any], ec_jwk: dict[str, Any]
) -> None:
    p384 = new_key("e2", "ec384").jwk()
    keys, refused = parse_jwks(jwks(rsa_jwk, ec_jwk, p384), algorithms=ALGS, max_keys=8)
    assert refused == []
    assert [(k.kid, k.alg, k.size) for k in keys] == [
        ("r1", "RS256", "2048 bits"), ("e1", "ES256", "P-256"), ("e2", "ES384", "P-384"),
    ]  # fmt: skip
    assert all(k.pem.startswith("-----BEGIN PUBLIC KEY-----\n") for k in keys)
    assert len({k.file_name for k in keys}) == 3


def test_missing_alg_takes_the_key_types_default(
    rsa_jwk: dict[str, Any], ec_jwk: dict[str, Any]
) -> None:
    # Entra's JWKS has no 'alg'
    bare = [{k: v for k, v in j.items() if k != "alg"} for j in (rsa_jwk, ec_jwk)]
    keys, refused = parse_jwks(jwks(*bare), algorithms=ALGS, max_keys=8)
    assert refused == [] and [k.alg for k in keys] == ["RS256", "ES256"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"alg": "ES256"}, "does not fit an RSA key"),
        ({"alg": "HS256"}, "does not fit an RSA key"),
        ({"alg": "PS256K"}, "does not fit an RSA key"),
        ({"alg": "none"}, "does not fit an RSA key"),
        ({"use": "enc"}, "not 'sig'"),
        ({"kty": "oct", "k": "c2VjcmV0"}, "private or symmetric"),
        ({"d": "AAAA"}, "private or symmetric"),
        ({"kid": "bad kid"}, "no 'kid'"),
        ({"kid": 'x"#'}, "no 'kid'"),
        ({"e": "AAE"}, "not an odd number"),
        ({"n": "!!"}, "not base64url"),
        ({"kty": "OKP"}, "key type 'OKP'"),
    ],
)
def test_refused_rsa_keys(rsa_jwk: dict[str, Any], change: dict[str, Any], reason: str) -> None:
    keys, refused = parse_jwks(jwks({**rsa_jwk, **change}), algorithms=ALGS, max_keys=8)
    assert keys == [] and len(refused) == 1 and reason in refused[0], refused


def test_weak_rsa_p521_and_wrong_curve_alg_are_refused(ec_jwk: dict[str, Any]) -> None:
    weak = new_key("w", "rsa1024").jwk()
    p521 = new_key("p", "ec521").jwk()
    keys, refused = parse_jwks(
        jwks(weak, p521, {**ec_jwk, "alg": "ES384"}), algorithms=ALGS, max_keys=8
    )
    assert keys == []
    assert "1024 bits" in refused[0] and "P-521" in refused[1] and "does not fit" in refused[2]


def test_off_curve_point_is_refused(ec_jwk: dict[str, Any]) -> None:
    keys, refused = parse_jwks(jwks({**ec_jwk, "y": ec_jwk["x"]}), algorithms=ALGS, max_keys=8)
    assert keys == [] and "not on the curve" in refused[0]


def test_policy_algorithms_narrow_what_is_accepted(
    rsa_jwk: dict[str, Any], ec_jwk: dict[str, Any]
) -> None:
    keys, refused = parse_jwks(jwks(rsa_jwk, ec_jwk), algorithms=["ES256"], max_keys=8)
    assert [k.kid for k in keys] == ["e1"] and "jwks.algorithms" in refused[0]


def test_duplicate_kid_drops_both(rsa_jwk: dict[str, Any]) -> None:
    other = {**new_key("r1", "rsa2048").jwk()}
    keys, refused = parse_jwks(jwks(rsa_jwk, other), algorithms=ALGS, max_keys=8)
    assert keys == [] and "duplicate kid" in refused[0]


def test_limits_and_garbage(rsa_jwk: dict[str, Any]) -> None:
    with pytest.raises(JwksError, match="limit 1"):
        parse_jwks(jwks(rsa_jwk, rsa_jwk), algorithms=ALGS, max_keys=1)
    for body in (b"not json", b"[]", b'{"keys": {}}'):
        with pytest.raises(JwksError):
            parse_jwks(body, algorithms=ALGS, max_keys=8)


def test_discovery_issuer_must_match() -> None:
    doc = {"issuer": "https://idp.example.com", "jwks_uri": "https://idp.example.com/keys"}
    assert discovery_url("https://idp.example.com/") == (
        "https://idp.example.com/.well-known/openid-configuration"
    )
    assert jwks_uri_from_discovery(json.dumps(doc).encode(), "https://idp.example.com") == (
        "https://idp.example.com/keys"
    )
    with pytest.raises(JwksError, match="issuer"):
        jwks_uri_from_discovery(json.dumps(doc).encode(), "https://evil.example.com")


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, 3600),
        ("public, max-age=120", 120),
        ("max-age=5", 60),
        ("max-age=999999", 3600),
        ("no-store", 60),
        ("private", 3600),
    ],
)
def test_cache_control(header: str | None, seconds: int) -> None:
    assert cache_seconds(header, low=60, high=3600) == seconds


def policy_text(jwks_block: str, issuer: str = "https://idp.example.com/") -> str:
    return textwrap.dedent(f"""\
        identity:
          source: jwt
          jwt:
            issuer: {issuer}
            audience: api
            {jwks_block}
        routes:
          - name: home
            from: {{path_prefix: /}}
            allow_groups: [any]
            to: {{return: hi}}
        """)


@pytest.mark.parametrize(
    ("block", "issuer", "message"),
    [
        ("jwks: {}", "http://idp.example.com/", "must be https"),
        ("jwks: {jwks_uri: 'http://10.0.0.1/keys'}", "https://i/", "must be https"),
        ("jwks: {discovery: false}", "https://i/", "needs 'jwks_uri'"),
        ("{jwks: {}, algorithm: RS256}", "https://i/", "pins the algorithm per key"),
        ("jwks: {algorithms: [HS256]}", "https://i/", "algorithms"),
        ("jwks: {min_refresh_seconds: 10, max_refresh_seconds: 5}", "https://i/", "min_refresh"),
    ],
)
def test_jwks_policy_errors(block: str, issuer: str, message: str) -> None:
    text = policy_text(block, issuer)
    if block.startswith("{"):
        text = text.replace(f"    {block}\n", "    jwks: {}\n    algorithm: RS256\n")
    with pytest.raises(PolicyError, match=message):
        parse_policy(text)


def test_loopback_http_is_allowed() -> None:
    parse_policy(policy_text("jwks: {}", "http://127.0.0.1:9999"))
    parse_policy(policy_text("jwks: {jwks_uri: 'http://localhost:9/keys'}", "https://i/"))


def render(policy_text_: str, keys: list[PinnedKey], cache: bool = True) -> list[str]:
    policy = parse_policy(policy_text_)
    text = render_config(
        policy, map_dir="/m", hmac_secret_b64=SECRET_B64, check_files=False, jwt_keys=keys
    )
    return [line.strip() for line in text.splitlines()]


def test_render_selects_the_key_by_kid_with_the_algorithm_pinned() -> None:
    keys = [PinnedKey("k1", "RS256", "/k/kid-1.pem"), PinnedKey("e/1+", "ES384", "/k/kid-2.pem")]
    lines = render(policy_text("jwks: {}"), keys)
    verify = [line for line in lines if "jwt_verify(" in line and not line.startswith("#")]
    assert len(verify) == 2
    assert verify[0].startswith(
        'http-request set-var(txn.scimgate_jwt_sig) var(txn.scimgate_bearer),jwt_verify("RS256","/k/kid-1.pem") if !scimgate_jwt_cached scimgate_jwt_alg_ok'
    )
    assert verify[0].endswith(
        "{ var(txn.scimgate_jwt_kid) -m str -- k1 } { var(txn.scimgate_jwt_alg) -m str RS256 }"
    )
    assert (
        "{ var(txn.scimgate_jwt_kid) -m str -- e/1+ } { var(txn.scimgate_jwt_alg) -m str ES384 }"
        in verify[1]
    )
    # the token's alg is never what jwt_verify is given
    assert not any("jwt_verify(var(" in line or 'jwt_verify("%' in line for line in lines)
    assert "acl scimgate_jwt_alg_ok var(txn.scimgate_jwt_alg) -m str ES384 RS256" in lines
    assert "acl scimgate_jwt_sig_ok var(txn.scimgate_jwt_sig) -m int 1" in lines


def test_render_without_keys_refuses_every_token() -> None:
    lines = render(policy_text("jwks: {}"), [])
    assert not any("jwt_verify(" in line for line in lines if not line.startswith("#"))
    assert "# no key fetched yet: every token is refused (401)" in lines


def test_render_refuses_an_unsafe_kid() -> None:
    from scimgate.policy import RenderError

    with pytest.raises(RenderError, match="kid"):
        render(policy_text("jwks: {}"), [PinnedKey("a b", "RS256", "/k/x.pem")])


def scope_policy(jwt_extra: str) -> str:
    return textwrap.dedent(f"""\
        identity:
          source: jwt
          jwt: {{issuer: "https://i/", audience: a, jwks: {{}}, {jwt_extra}}}
        routes:
          - name: home
            from: {{path_prefix: /}}
            allow_groups: [any]
            require_scopes: ["api:read"]
            to: {{return: hi}}
        """)


def test_scp_without_a_format_is_refused_clearly() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(scope_policy("scope_claim: scp"))
    (problem,) = info.value.problems
    assert (problem.line, problem.column) == (8, 5)  # the route's require_scopes
    assert "scope_claim_format" in problem.message and "Okta" in problem.message


def test_scope_formats_render() -> None:
    string = render(scope_policy("scope_claim: scp, scope_claim_format: string"), [])
    assert (
        "http-request set-var(txn.scimgate_jwt_scope) var(txn.scimgate_bearer),jwt_payload_query('$.scp')"
        in string
    )
    assert not any("$.scp[" in line for line in string)
    array = render(
        scope_policy("scope_claim: scp, scope_claim_format: array, scope_array_max_items: 3"), []
    )
    assert [line for line in array if "$.scp[" in line and not line.startswith("#")] == [
        f"http-request set-var(txn.scimgate_scp_{i}) var(txn.scimgate_bearer),jwt_payload_query('$.scp[{i}]')"
        for i in range(3)
    ]
    assert "acl scimgate_scope_held_0 var(txn.scimgate_scp_2) -m str api:read" in array
    assert any(line.endswith("if scimgate_route_home !scimgate_scope_held_0") for line in array)
    # a route without require_scopes needs no format, even for scp
    parse_policy(scope_policy("scope_claim: scp").replace('require_scopes: ["api:read"]', ""))


@pytest.mark.parametrize("alg", ["PS256", "PS384", "PS512"])
def test_pss_rsa_keys_are_held_with_their_alg(alg: str) -> None:
    # RFC 7518 §3.5: RSASSA-PSS uses an RSA key (rendered only for HAProxy >= 2.8)
    jwk = new_key("p", alg.lower()).jwk()
    keys, refused = parse_jwks(jwks(jwk), algorithms=(*ALGS, alg), max_keys=8)
    assert refused == [] and [(k.kid, k.alg, k.kty) for k in keys] == [("p", alg, "RSA")]
    # not in the policy's algorithms: refused with that reason
    keys, refused = parse_jwks(jwks(jwk), algorithms=ALGS, max_keys=8)
    assert keys == [] and "not in the policy's jwks.algorithms" in refused[0]


def test_unknown_kid_table_reply_is_parsed_defensively() -> None:
    from scimgate.instance.jwks_follower import kids_of_table

    reply = (
        "# table: scimgate_jwt_kid_miss, type: string, size:1000, used:5\n"
        "0x55d1c0a0: key=k2 use=0 exp=59000 http_req_cnt=1\n"
        "0x55d1c0b0: key=k2 use=0 exp=59000 http_req_cnt=3\n"  # duplicate
        "0x55d1c0c0: key=has\\x20space use=0 exp=1 http_req_cnt=1\n"  # not a kid's shape
        f"0x55d1c0d0: key={'a' * 129} use=0 exp=1 http_req_cnt=1\n"  # too long
        "key=notanentry use=0 \n"  # not an entry line
        "0x55d1c0e0: key=a.b~c+/=:- use=1 exp=2 http_req_cnt=1 shard=0\n"  # 3.0's shard=
        "Unknown command\n"
    )
    assert kids_of_table(reply) == ["k2", "a.b~c+/=:-"]
    assert kids_of_table("") == [] and kids_of_table("No such table\n") == []
    many = "".join(f"0x1: key=k{i} use=0 exp=1 \n" for i in range(5000))
    assert len(kids_of_table(many)) == 1000  # at most the table's size

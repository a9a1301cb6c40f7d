"""RSASSA-PSS (PS256/PS384/PS512) keys from a JWKS, on each HAProxy version of the suite.

Measured here: HAProxy 2.6.12 refuses a config holding ``jwt_verify("PS256",...)`` ("RSASSA-PSS
JWS signing not managed yet"), 3.0.11 verifies PS*. So the key store holds PS keys, and the
config rendered for an HAProxy before 2.8 leaves them out (their tokens are 401; the config
still loads and every other key works); from 2.8 they verify like RS* keys, alg pinned.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import jwt as pyjwt
import pytest

from scimgate.haproxy.process import check_config
from scimgate.instance.haproxy_config import verifies_pss
from scimgate.instance.jwks_keys import KeyStore
from scimgate.policy import (
    OVERLAY_MAP_NAME,
    entries_for_user,
    map_file_names,
    parse_policy,
    render_config,
)
from scimgate.policy.model import JwksSource
from tests.support.haproxy import launch
from tests.support.jwks_issuer import JwksIssuer, new_key
from tests.support.net import free_port
from tests.support.rendered import SECRET, SECRET_B64
from tests.support.versions import HAProxyBinary

pytestmark = pytest.mark.haproxy

USER = "pss@example.com"


@pytest.fixture(scope="module")
def edge(
    haproxy_version: HAProxyBinary, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, JwksIssuer, bool]]:
    d = tmp_path_factory.mktemp("pss")
    with JwksIssuer(max_age=600) as idp:
        idp.add_key("r1", "rsa2048")
        idp.add_key("p256", "ps256")
        idp.add_key("p384", "ps384")
        store = KeyStore(d / "keys", JwksSource(), idp.issuer)
        state, _rotation = store.refresh()
        assert {k.kid: k.alg for k in state.keys} == {
            "r1": "RS256",
            "p256": "PS256",
            "p384": "PS384",
        }, state.refused
        pss = verifies_pss(haproxy_version.path)
        policy = parse_policy(
            f"identity:\n  source: jwt\n  jwt:\n    issuer: {idp.issuer}\n"
            f"    audience: {idp.audience}\n    claim: email\n    jwks: {{}}\n"
            "routes:\n  - name: home\n    from: {path_prefix: /}\n    allow_groups: [any]\n"
            "    to: {return: hi}\n"
        )
        maps = d / "maps"
        maps.mkdir()
        entries = entries_for_user({"userName": USER}, [], policy, SECRET)
        (maps / map_file_names(1)[0]).write_text("".join(f"{k} {v}\n" for k, v in entries.items()))
        (maps / OVERLAY_MAP_NAME).write_text("")
        port = free_port()
        cfg = d / "haproxy.cfg"
        cfg.write_text(
            render_config(
                policy, map_dir=str(maps), hmac_secret_b64=SECRET_B64,
                bind=f"127.0.0.1:{port}", stats_socket=str(d / "admin.sock"),
                jwt_keys=store.pinned(pss=pss),
            )
        )  # fmt: skip
        ok, output = check_config(cfg, haproxy_version.path)
        assert ok, output  # 2.6 included: the PS keys are left out, not rendered
        hx = launch(cfg, ports=[port], binary=haproxy_version.path)
        try:
            yield f"http://127.0.0.1:{port}/", idp, pss
        finally:
            hx.stop()


def status(url: str, token: str) -> int:
    return httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code


def test_pss_verified_only_where_haproxy_can(
    edge: tuple[str, JwksIssuer, bool], haproxy_version: HAProxyBinary
) -> None:
    url, idp, pss = edge
    assert pss is (haproxy_version.version >= (2, 8, 0))
    assert status(url, idp.mint("r1", USER)) == 200
    for kid in ("p256", "p384"):
        assert status(url, idp.mint(kid, USER)) == (200 if pss else 401), kid


def test_pss_alg_pinned_and_signature_checked(edge: tuple[str, JwksIssuer, bool]) -> None:
    url, idp, _pss = edge
    claims = idp.claims(USER)
    p256 = idp.keys["p256"].private
    # PS384 signature under the PS256 key's kid: the token's alg is not the key's
    assert status(url, pyjwt.encode(claims, p256, "PS384", headers={"kid": "p256"})) == 401
    # RS256 (PKCS#1 v1.5) with the PSS key's private key, sent as RS256 under its kid
    assert status(url, pyjwt.encode(claims, p256, "RS256", headers={"kid": "p256"})) == 401
    # another key's PSS signature under the known kid
    other = new_key("x", "ps256").private
    assert status(url, pyjwt.encode(claims, other, "PS256", headers={"kid": "p256"})) == 401

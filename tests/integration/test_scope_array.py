"""Okta's array ``scp`` against real HAProxy: 2.6.12 (Debian 12) and, when its binary is
built (``~/.cache/scimgate/haproxy-3.0.11/haproxy``, the h12-versions build), 3.0.11.

Measured on both (issue 12 / 15, docs/policy.md "Scopes as a JSON array"):
``jwt_payload_query('$.scp')`` on an array gives nothing on 2.6 and the array's JSON text on
3.0, while ``'$.scp[N]'`` gives item N as a string on both; so the rendered rules read the
first ``scope_array_max_items`` items by index and compare each exactly.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from scimgate.haproxy.process import check_config
from scimgate.policy import (
    OVERLAY_MAP_NAME,
    entries_for_user,
    map_file_names,
    parse_policy,
    render_config,
)
from scimgate.policy.agents import agent_entries
from scimgate.policy.jwtmint import demo_policy_yaml, generate_rsa_keypair, mint_jwt
from tests.support.haproxy import BearerGate, launch
from tests.support.net import free_port
from tests.support.rendered import SECRET, SECRET_B64
from tests.support.versions import HAProxyBinary

pytestmark = pytest.mark.haproxy

ROUTES = """\
  - name: reports
    from: {hosts: ["*"], path_prefix: /reports}
    allow_groups: [any]
    require_scopes: ["read:reports", "api:write"]
    to: {return: "reports"}
  - name: bots
    from: {hosts: ["*"], path_prefix: /bots}
    allow_agents: {groups: [any]}
    to: {return: "bots"}
  - name: home
"""
# Okta's client-credentials tokens: no e-mail, the app's id in 'cid', 'scp' an array; the
# agent test's scope is read item by item like a route's (issue 12 item 1 meets issue 13).
AGENTS = """  agents:
    claims: [cid]
    key_attributes: [subject]
    token: {idtyp: null, without_user_claim: false, scope: "svc:agent"}
"""
USER = "okta@example.com"
BOT = "0oa-bot"


@pytest.fixture(scope="module")
def gate(
    haproxy_version: HAProxyBinary, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[BearerGate, str]]:
    d = tmp_path_factory.mktemp("scp")
    private, public = generate_rsa_keypair()
    (d / "pub.pem").write_text(public)
    text = demo_policy_yaml(public_key=str(d / "pub.pem")).replace("  - name: home\n", ROUTES, 1)
    # the demo policy's lines carry comments: match the settings, not whole lines
    text, n = re.subn(
        r"(?m)^    scope_claim: scope\b.*$",
        "    scope_claim: scp\n    scope_claim_format: array\n    scope_array_max_items: 4",
        text,
        count=1,
    )
    assert n == 1
    text, n = re.subn(
        r"(?m)^(  key_attributes: \[userName, emails\].*\n)", r"\1" + AGENTS, text, count=1
    )
    assert n == 1
    policy = parse_policy(text)
    maps = d / "maps"
    maps.mkdir()
    entries = entries_for_user({"userName": USER}, [], policy, SECRET)
    bot = {"subject": BOT, "active": True}
    entries |= agent_entries(
        bot, [], [], False, policy.identity.agents, policy, frozenset(), SECRET
    )
    (maps / map_file_names(1)[0]).write_text("".join(f"{k} {v}\n" for k, v in entries.items()))
    (maps / OVERLAY_MAP_NAME).write_text("")
    port = free_port()
    cfg = d / "haproxy.cfg"
    cfg.write_text(
        render_config(
            policy, map_dir=str(maps), hmac_secret_b64=SECRET_B64, bind=f"127.0.0.1:{port}",
            stats_socket=str(d / "admin.sock"),
        )
    )  # fmt: skip
    ok, output = check_config(cfg, haproxy_version.path)
    assert ok, output
    hx = launch(cfg, ports=[port], binary=haproxy_version.path)
    try:
        yield BearerGate(hx), private
    finally:
        hx.stop()


def status(gate: tuple[BearerGate, str], scp: Any, path: str = "/reports") -> int:
    bearer, private = gate
    token = mint_jwt(
        private, subject_claim="email", identity=USER, algorithm="RS256",
        issuer="https://idp.example.com/", audience="scimgate-demo", extra={"scp": scp},
    )  # fmt: skip
    return bearer.get(token, path)[0]


def test_array_scopes_are_read_item_by_item(gate: tuple[BearerGate, str]) -> None:
    assert status(gate, ["read:reports", "api:write"]) == 200
    assert status(gate, ["openid", "email", "api:write", "read:reports"]) == 200  # items 2, 3
    assert status(gate, ["openid", "read:reports"]) == 403  # api:write missing
    assert status(gate, []) == 403
    # exact items only: no substring, no space-splitting, no nesting
    assert status(gate, ["read:reports api:write"]) == 403
    assert status(gate, ["read:reportsX", "api:write"]) == 403
    assert status(gate, [["read:reports"], "api:write"]) == 403
    assert status(gate, [{"s": "read:reports"}, "api:write"]) == 403
    # only the first scope_array_max_items (4) items are read: later ones are not held
    assert status(gate, ["a", "b", "c", "read:reports", "api:write"]) == 403
    # a string where an array is configured: nothing is held (fail closed)
    assert status(gate, "read:reports api:write") == 403
    assert status(gate, ["anything"], path="/") == 200  # routes without scopes unaffected


def test_agent_scope_test_reads_array_items(gate: tuple[BearerGate, str]) -> None:
    bearer, private = gate

    def agent(cid: str, scp: Any) -> int:
        token = mint_jwt(
            private, subject_claim="sub", identity=cid, algorithm="RS256",
            issuer="https://idp.example.com/", audience="scimgate-demo",
            extra={"cid": cid, "scp": scp},
        )  # fmt: skip
        return bearer.get(token, "/bots")[0]

    assert agent(BOT, ["openid", "svc:agent"]) == 200  # item 1 names it an agent
    assert agent(BOT, ["svc:agent-x"]) == 401  # not an agent's token, and no e-mail
    assert agent(BOT, "svc:agent") == 401  # a string where an array is configured
    assert agent("0oa-unknown", ["svc:agent"]) == 403  # an agent with no entry
    assert status(gate, ["read:reports"], path="/bots") == 403  # a person: agents only

"""`scimgate policy check`, `scimgate haproxy render`, `scimgate jwt mint` as real processes.

The instance directory is prepared the way `scimgate up` prepares it (demo policy, keys,
secret, config, map files), without starting any server.
"""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest

from scimgate.haproxy.process import check_config
from scimgate.instance.local_haproxy import prepare_haproxy
from scimgate.instance.up import ensure_config

pytestmark = pytest.mark.haproxy


def scimgate(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scimgate.cli", *args],
        capture_output=True, text=True, timeout=60, cwd=cwd,
    )  # fmt: skip


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cli")
    prepare_haproxy(ensure_config(directory, None), haproxy_port=18080)
    return directory


BAD_POLICY = """\
identity:
  source: jwt
  jwt:
    algorithm: RS256
    public_key: keys/jwt.pub.pem
    issuer: https://idp.example.com/
    audience: demo
    colour: blue
groups:
  Admins: {idp_groups: ["Admins"]}
routes:
  - name: home
    from: {path_prefix: "/a b"}
    allow_groups: [any]
    to: {return: "hi"}
"""


# ---------------------------------------------------------------------------------------------
# policy check


def test_policy_check_ok(instance: Path) -> None:
    out = scimgate("policy", "check", "--dir", str(instance))
    assert out.returncode == 0, out.stderr
    # the demo's health route too, and (issue 13) its /api route for people and agents
    assert "OK" in out.stdout and "5 route(s)" in out.stdout
    assert "engineering; agents: automation" in out.stdout
    assert "admin" in out.stdout and "any active user" in out.stdout
    assert "public (no identity)" in out.stdout


def test_policy_check_reports_every_error_with_line_and_column(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(BAD_POLICY)
    out = scimgate("policy", "check", str(policy))
    assert out.returncode == 1
    lines = [line for line in out.stderr.splitlines() if line.startswith(str(policy) + ":")]
    located = {line.split(": ", 1)[0] for line in lines if line.count(":") >= 3}
    # unknown key at 8:5, bad group slug at 10:3, bad path prefix at 13:25
    assert f"{policy}:8:5" in located, out.stderr
    assert f"{policy}:10:3" in located, out.stderr
    assert f"{policy}:13:25" in located, out.stderr
    assert "colour" in out.stderr and "/a b" in out.stderr
    assert out.stderr.rstrip().endswith("3 error(s)")


def test_policy_check_cross_references(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        BAD_POLICY.replace("    colour: blue\n", "").replace("Admins:", "admins:")
        .replace('"/a b"', "/") + "  - name: late\n    from: {path_prefix: /late}\n"
        "    allow_groups: [ops]\n    to: {return: late}\n"
    )  # fmt: skip
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "jwt.pub.pem").write_text("-----BEGIN PUBLIC KEY-----\nx\n")
    out = scimgate("policy", "check", str(policy))
    assert out.returncode == 1
    assert f"{policy}:16:" in out.stderr and "undefined policy group 'ops'" in out.stderr
    assert "unreachable route 'late'" in out.stderr


def test_policy_check_public_key_must_be_a_public_key_pem(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(BAD_POLICY.replace("    colour: blue\n", "").replace("Admins:", "admins:")
                      .replace('"/a b"', "/"))  # fmt: skip
    out = scimgate("policy", "check", str(policy))
    assert out.returncode == 1
    assert f"{policy}:5:17: JWT public key" in out.stderr and "does not exist" in out.stderr
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "jwt.pub.pem").write_text("-----BEGIN CERTIFICATE-----\nx\n")
    out = scimgate("policy", "check", str(policy))
    assert out.returncode == 1 and "is a certificate" in out.stderr


def test_policy_check_yaml_syntax_error(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("identity:\n  source: [jwt\n")
    out = scimgate("policy", "check", str(policy))
    assert out.returncode == 1
    assert f"{policy}:3:" in out.stderr and "YAML syntax" in out.stderr


# ---------------------------------------------------------------------------------------------
# haproxy render


def test_render_full_passes_haproxy_check(instance: Path, tmp_path: Path) -> None:
    target = tmp_path / "haproxy.cfg"
    out = scimgate("haproxy", "render", "--dir", str(instance), "-o", str(target),
                   "--bind", "127.0.0.1:9443")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "haproxy -c: configuration is valid" in out.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    text = target.read_text()
    assert text.startswith("# Generated by scimgate")
    assert "bind 127.0.0.1:9443" in text
    assert f"stats socket {instance}/haproxy/admin.sock" in text
    assert f"map({instance}/haproxy/maps/identities" in text
    assert 'jwt_verify("RS256"' in text
    ok, output = check_config(target)  # the instance's own map files exist
    assert ok, output


def test_render_full_matches_the_instance(instance: Path, tmp_path: Path) -> None:
    # issue 15: a full config (it holds the secret) goes to -o FILE only, never to stdout
    target = tmp_path / "full.cfg"
    out = scimgate("haproxy", "render", "--dir", str(instance), "--bind", "127.0.0.1:18080",
                   "-o", str(target))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    assert target.read_text() == (instance / "haproxy" / "haproxy.cfg").read_text()


def test_render_fragment(instance: Path) -> None:
    out = scimgate("haproxy", "render", "--dir", str(instance), "--mode", "fragment")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith("# scimgate policy fragment")
    assert "\nglobal" not in text and "\nfrontend " not in text and "\nbind " not in text
    assert "#     set-var proc.scimgate_hmac str(" in text
    assert "http-request deny deny_status 401" in text
    assert "haproxy -c" not in out.stderr  # only full configs are checked


def test_render_without_policy_explains(tmp_path: Path) -> None:
    (tmp_path / "scimgate.yaml").write_text("port: 8000\n")
    out = scimgate("haproxy", "render", "--dir", str(tmp_path))
    assert out.returncode == 1
    assert "no policy file" in out.stderr and "Traceback" not in out.stderr


# ---------------------------------------------------------------------------------------------
# jwt mint


def _decode(instance: Path, token: str) -> dict[str, Any]:
    public = (instance / "keys" / "jwt.pub.pem").read_text()
    return dict(pyjwt.decode(token, public, algorithms=["RS256"], audience="scimgate-demo",
                             issuer="https://idp.example.com/"))  # fmt: skip


def test_jwt_mint_verifies_with_the_public_key(instance: Path) -> None:
    before = int(time.time())
    out = scimgate("jwt", "mint", "--dir", str(instance), "alice@example.com",
                   "--scope", "read:reports", "--scope", "openid", "--ttl", "2h")  # fmt: skip
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert pyjwt.get_unverified_header(token)["alg"] == "RS256"
    claims = _decode(instance, token)
    assert claims["email"] == "alice@example.com"
    assert claims["scope"] == "read:reports openid"
    assert claims["exp"] - claims["iat"] == 7200
    assert before <= claims["nbf"] <= int(time.time()) + 1


def test_jwt_mint_default_ttl_and_no_scope(instance: Path) -> None:
    out = scimgate("jwt", "mint", "--dir", str(instance), "bob@example.com")
    claims = _decode(instance, out.stdout.strip())
    assert claims["exp"] - claims["iat"] == 3600
    assert "scope" not in claims


def test_jwt_mint_bad_ttl(instance: Path) -> None:
    out = scimgate("jwt", "mint", "--dir", str(instance), "x@example.com", "--ttl", "soon")
    assert out.returncode != 0 and "bad duration" in out.stderr


def test_jwt_mint_other_key_does_not_verify(instance: Path, tmp_path: Path) -> None:
    from scimgate.policy.jwtmint import generate_rsa_keypair

    other = tmp_path / "other.pem"
    other.write_text(generate_rsa_keypair()[0])
    out = scimgate("jwt", "mint", "--dir", str(instance), "x@example.com", "--key", str(other))
    assert out.returncode == 0, out.stderr
    with pytest.raises(pyjwt.InvalidSignatureError):
        _decode(instance, out.stdout.strip())


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [["policy", "check"], ["haproxy", "render"], ["jwt", "mint"], ["up"]],
    ids=lambda c: "-".join(c),
)
def test_help_has_an_example(command: list[str]) -> None:
    out = scimgate(*command, "--help")
    assert out.returncode == 0
    assert "Example" in out.stdout and f"scimgate {' '.join(command)}" in out.stdout

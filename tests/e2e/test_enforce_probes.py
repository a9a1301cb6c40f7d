"""Issue 8's hostile probes against a real `scimgate up` (its demo policy, its HAProxy): odd
paths never reach the catch-all route as a non-admin, loosely typed JWT claims and a second
credential are refused with 401, and the public health route needs no token.

The users are provisioned over SCIM and reach HAProxy through the sync engine, as in
production; requests are written byte for byte (tests/support/rawhttp.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import jwt
import pytest

from tests.support import stack as st
from tests.support.rawhttp import send
from tests.support.scim import GROUP_SCHEMA, post_user
from tests.support.up import UpStack, start_up

pytestmark = pytest.mark.haproxy

HOME = "hello, active user"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpStack]:
    up = start_up(tmp_path_factory.mktemp("probes"))
    try:
        yield up
    finally:
        up.stop()


@pytest.fixture(scope="module")
def port(stack: UpStack) -> int:
    return int(urlsplit(stack.info["haproxy_url"]).port or 80)


@pytest.fixture(scope="module")
def tokens(stack: UpStack) -> dict[str, str]:
    """A non-admin and an admin, provisioned over SCIM; their JWTs."""
    with stack.scim() as scim:
        user = post_user(scim, "probe-user@example.com")
        admin = post_user(scim, "probe-admin@example.com")
        assert user.status_code == admin.status_code == 201, (user.text, admin.text)
        group = scim.post("/Groups", json={
            "schemas": [GROUP_SCHEMA], "displayName": "Admins",
            "members": [{"value": admin.json()["id"]}],
        })  # fmt: skip
        assert group.status_code == 201, group.text
    st.wait_converged(stack)
    mint = st.Minter(stack)
    return {"user": mint("probe-user@example.com"), "admin": mint("probe-admin@example.com")}


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


@pytest.mark.parametrize(
    ("target", "status"),
    [("/ADMIN", 403), ("/admin;x", 400), ("/admin%3b", 400), ("/admin%00", 400),
     ("/admin%20", 400), ("/admin\\", 400), ("/admin.", 400)],
)  # fmt: skip
def test_issue_paths_never_reach_home(
    port: int, tokens: dict[str, str], target: str, status: int
) -> None:
    reply = send(port, target, _bearer(tokens["user"]), host=f"127.0.0.1:{port}")
    assert reply.status == status, (target, reply)
    assert HOME not in reply.body
    assert send(port, "/admin", _bearer(tokens["admin"])).body == "admin area"  # control


def _signed(stack: UpStack, payload: str) -> str:
    key = Path(stack.info["jwt_private_key"]).read_text()
    return jwt.api_jws.encode(payload.encode(), key, algorithm="RS256")


def test_issue_claims_and_credentials_are_401(
    stack: UpStack, port: int, tokens: dict[str, str]
) -> None:
    now = int(time.time())
    # iat: the demo policy's token cut-off refuses a token without one, which would hide
    # the type checks below behind that 401
    claims: dict[str, object] = {
        "email": "probe-user@example.com",
        "iss": "",
        "aud": "",
        "iat": now,
    }
    jwt_settings = st.Minter(stack).jwt
    claims.update(iss=jwt_settings.issuer, aud=jwt_settings.audience)
    base = json.dumps(claims)[:-1]  # '{"email": ..., "aud": "..."' to append raw claims to
    good = _signed(stack, base + f',"exp":{now + 300}}}')
    assert send(port, "/", _bearer(good)).body == HOME  # control: the raw signer works
    for raw in (
        f',"exp":"{now + 300}"}}',  # string
        ',"exp":17000000000000000000}',  # 20 digits
        f',"exp":{now + 300}.5}}',  # float
        f',"exp":{now + 300},"nbf":true}}',
        f',"exp":{now + 300},"nbf":[]}}',
        f',"exp":{now + 300},"nbf":{{}}}}',
        f',"exp":{now + 300},"nbf":"text"}}',
    ):
        reply = send(port, "/", _bearer(_signed(stack, base + raw)))
        assert reply.status == 401, (raw, reply)
    newline = _signed(
        stack, base.replace('user@example.com"', 'user@example.com\\n"') + f',"exp":{now + 300}}}'
    )
    assert send(port, "/", _bearer(newline)).status == 401
    two = [*_bearer(tokens["user"]), *_bearer(tokens["admin"])]
    assert send(port, "/admin", two).status == 401
    assert (
        send(port, "/admin", [("Authorization", f"Bearer {tokens['admin']}, Bearer x")]).status
        == 401
    )


def test_public_health_route_needs_no_token(port: int) -> None:
    reply = send(port, "/healthz")
    assert (reply.status, reply.body) == (200, "ok")
    assert send(port, "/").status == 401  # everything else still asks for one

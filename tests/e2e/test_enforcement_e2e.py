"""The whole loop over real HTTP: an IdP drives SCIM, a browser sends JWTs to HAProxy.

One real `scimgate up --dir DIR` process (HAProxy + SCIM + sync engine, read-your-writes on)
for the module, with the demo policy plus a route that needs a scope. Nothing here waits or
retries after a SCIM response: the very next request must see the change.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest

from scimgate.policy.jwtmint import demo_policy_yaml, generate_rsa_keypair, mint_jwt
from tests.support.scim import GROUP_SCHEMA, PATCH_SCHEMA, create_user
from tests.support.up import UpStack, start_up
from tests.support.versions import HAProxyBinary

pytestmark = pytest.mark.haproxy

ISSUER = "https://idp.example.com/"
AUDIENCE = "scimgate-demo"
REPORTS_ROUTE = """\
  - name: reports
    from: {hosts: ["*"], path_prefix: /reports}
    allow_groups: [any]
    require_scopes: ["read:reports"]
    to: {return: "reports"}
  - name: home
"""


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, haproxy_version: HAProxyBinary
) -> Iterator[UpStack]:
    directory = tmp_path_factory.mktemp("enf")
    policy = demo_policy_yaml().replace("  - name: home\n", REPORTS_ROUTE, 1)
    assert "require_scopes" in policy
    (directory / "policy.yaml").write_text(policy)  # `up` keeps a policy it finds
    up = start_up(directory, haproxy=haproxy_version.path)
    try:
        yield up
    finally:
        up.stop()


@pytest.fixture(scope="module")
def scim(stack: UpStack) -> Iterator[httpx.Client]:
    with stack.scim() as client:
        yield client


@pytest.fixture(scope="module")
def group_ids(scim: httpx.Client) -> dict[str, str]:
    ids = {}
    for name in ("Admins", "Engineering"):
        r = scim.post("/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": name})
        assert r.status_code == 201, r.text
        ids[name] = r.json()["id"]
    return ids


@pytest.fixture
def browser(stack: UpStack) -> Iterator[httpx.Client]:
    with stack.browser() as client:
        yield client


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.com"


def patch(scim: httpx.Client, path: str, *ops: dict[str, Any]) -> None:
    r = scim.patch(path, json={"schemas": [PATCH_SCHEMA], "Operations": list(ops)})
    assert r.status_code in (200, 204), r.text


def get(browser: httpx.Client, path: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return browser.get(path, headers=headers).status_code


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(subject: str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"email": subject, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now,
            "exp": now + 300, **extra}  # fmt: skip


def unsigned(header: dict[str, Any], body: dict[str, Any], signature: bytes = b"") -> str:
    head = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(body).encode())
    return head + "." + b64url(signature)


# ---------------------------------------------------------------------------------------------
# Lifecycle


def test_grant_admin_then_deactivate(
    stack: UpStack, scim: httpx.Client, group_ids: dict[str, str], browser: httpx.Client
) -> None:
    name = unique("ada")
    user_id = create_user(scim, name)
    token = stack.mint(name)
    assert get(browser, "/", token) == 200
    assert get(browser, "/admin", token) == 403
    assert get(browser, "/eng", token) == 403

    patch(scim, f"/Groups/{group_ids['Admins']}",
          {"op": "add", "path": "members", "value": [{"value": user_id}]})  # fmt: skip
    assert get(browser, "/admin", token) == 200
    assert get(browser, "/eng", token) == 403

    patch(scim, f"/Users/{user_id}", {"op": "replace", "path": "active", "value": False})
    # the very next request, on the same keep-alive connection
    assert get(browser, "/admin", token) == 403
    assert get(browser, "/", token) == 403


def test_removal_from_group_revokes_route(
    stack: UpStack, scim: httpx.Client, group_ids: dict[str, str], browser: httpx.Client
) -> None:
    name = unique("eve")
    user_id = create_user(scim, name)
    token = stack.mint(name)
    group = f"/Groups/{group_ids['Engineering']}"
    patch(scim, group, {"op": "add", "path": "members", "value": [{"value": user_id}]})
    assert get(browser, "/eng", token) == 200
    patch(scim, group, {"op": "remove", "path": f'members[value eq "{user_id}"]'})
    assert get(browser, "/eng", token) == 403
    assert get(browser, "/", token) == 200


def test_rename_moves_access_to_the_new_identity(
    stack: UpStack, scim: httpx.Client, browser: httpx.Client
) -> None:
    old, new = unique("bob"), unique("robert")
    user_id = create_user(scim, old)
    old_token, new_token = stack.mint(old), stack.mint(new)
    assert get(browser, "/", old_token) == 200
    assert get(browser, "/", new_token) == 403  # unknown identity

    patch(scim, f"/Users/{user_id}",
          {"op": "replace", "path": "userName", "value": new},
          {"op": "replace", "path": "emails", "value": [{"value": new, "primary": True}]})  # fmt: skip
    assert get(browser, "/", old_token) == 403
    assert get(browser, "/", new_token) == 200


def test_delete_denies(stack: UpStack, scim: httpx.Client, browser: httpx.Client) -> None:
    name = unique("dan")
    user_id = create_user(scim, name)
    token = stack.mint(name)
    assert get(browser, "/", token) == 200
    r = scim.delete(f"/Users/{user_id}")
    assert r.status_code == 204, r.text
    assert get(browser, "/", token) == 403


def test_reactivation_restores_access(
    stack: UpStack, scim: httpx.Client, browser: httpx.Client
) -> None:
    """With the demo policy's token cut-off (identity.jwt.cutoff, issue 12 item 3) only a
    token issued after the deactivation works again: the one issued before stays 401."""
    name = unique("rae")
    user_id = create_user(scim, name)
    token = stack.mint(name)
    assert get(browser, "/", token) == 200
    patch(scim, f"/Users/{user_id}", {"op": "replace", "path": "active", "value": False})
    deactivated = time.time()
    assert get(browser, "/", token) == 403
    patch(scim, f"/Users/{user_id}", {"op": "replace", "path": "active", "value": True})
    assert get(browser, "/", token) == 401  # issued before the deprovisioning: cut off
    # iat has whole seconds: a token of the deactivation's own second is cut off too
    time.sleep(max(0.0, int(deactivated) + 1 - time.time()) + 0.05)
    assert get(browser, "/", stack.mint(name)) == 200
    assert get(browser, "/", token) == 401  # and stays so


def test_cutoff_survives_delete_and_recreate(
    stack: UpStack, scim: httpx.Client, browser: httpx.Client
) -> None:
    name = unique("rec")
    token = stack.mint(name)
    user_id = create_user(scim, name)
    assert get(browser, "/", token) == 200
    assert scim.delete(f"/Users/{user_id}").status_code == 204
    deleted = time.time()
    create_user(scim, name)  # the same identity, provisioned again
    assert get(browser, "/", token) == 401
    time.sleep(max(0.0, int(deleted) + 1 - time.time()) + 0.05)
    assert get(browser, "/", stack.mint(name)) == 200


def test_cutoff_needs_iat(stack: UpStack, known: str, browser: httpx.Client) -> None:
    body = {k: v for k, v in claims(known).items() if k != "iat"}
    assert get(browser, "/", pyjwt.encode(body, private_key(stack), algorithm="RS256")) == 401
    # a never-deprovisioned identity's older token passes (no not-before in its entry)
    old = int(time.time()) - 3600
    token = pyjwt.encode(claims(known, iat=old), private_key(stack), algorithm="RS256")
    assert get(browser, "/", token) == 200


# ---------------------------------------------------------------------------------------------
# Tokens


@pytest.fixture(scope="module")
def known(stack: UpStack, scim: httpx.Client) -> str:
    """An active user, so that only the token decides the outcome."""
    name = unique("tok")
    create_user(scim, name)
    return name


def private_key(stack: UpStack) -> str:
    return Path(stack.info["jwt_private_key"]).read_text()


def test_valid_token_is_accepted(stack: UpStack, known: str, browser: httpx.Client) -> None:
    assert get(browser, "/", stack.mint_cli(known)) == 200  # `scimgate jwt mint`
    assert get(browser, "/reports", stack.mint_cli(known, "read:reports")) == 200
    token = pyjwt.encode(claims(known), private_key(stack), algorithm="RS256")
    assert get(browser, "/", token) == 200


def test_missing_token_401(browser: httpx.Client) -> None:
    r = browser.get("/")
    assert r.status_code == 401
    assert r.headers.get("www-authenticate", "").startswith("Bearer")


def test_forged_token_other_key_401(known: str, browser: httpx.Client) -> None:
    other, _ = generate_rsa_keypair()
    token = mint_jwt(other, subject_claim="email", identity=known, algorithm="RS256",
                     issuer=ISSUER, audience=AUDIENCE)  # fmt: skip
    assert get(browser, "/", token) == 401


def test_alg_none_401(stack: UpStack, known: str, browser: httpx.Client) -> None:
    assert get(browser, "/", unsigned({"alg": "none", "typ": "JWT"}, claims(known))) == 401
    # alg none in the header, but a genuine RS256 signature over the original header kept
    real = stack.mint(known)
    _, body, sig = real.split(".")
    none_head = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    assert get(browser, "/", f"{none_head}.{body}.{sig}") == 401
    assert get(browser, "/", real) == 200


def test_hs256_confusion_with_public_key_401(
    stack: UpStack, known: str, browser: httpx.Client
) -> None:
    public_pem = Path(stack.info["jwt_private_key"]).with_name("jwt.pub.pem").read_bytes()
    header = {"alg": "HS256", "typ": "JWT"}
    signing_input = (
        b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims(known)).encode())
    )
    sig = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert get(browser, "/", signing_input + "." + b64url(sig)) == 401


def test_expired_token_401(stack: UpStack, known: str, browser: httpx.Client) -> None:
    now = int(time.time())
    token = pyjwt.encode(
        claims(known, iat=now - 3600, nbf=now - 3600, exp=now - 120),
        private_key(stack), algorithm="RS256",
    )  # fmt: skip
    assert get(browser, "/", token) == 401


@pytest.mark.parametrize(
    "override",
    [{"iss": "https://evil.example.com/"}, {"aud": "someone-else"},
     {"nbf": int(time.time()) + 3600}],
    ids=["wrong-issuer", "wrong-audience", "not-yet-valid"],
)  # fmt: skip
def test_wrong_claims_401(
    stack: UpStack, known: str, browser: httpx.Client, override: dict[str, Any]
) -> None:
    token = pyjwt.encode(claims(known, **override), private_key(stack), algorithm="RS256")
    assert get(browser, "/", token) == 401


def test_tampered_payload_401(stack: UpStack, known: str, browser: httpx.Client) -> None:
    token = stack.mint(known)
    head, _, sig = token.split(".")
    body = b64url(json.dumps(claims("admin@example.com")).encode())
    assert get(browser, "/", f"{head}.{body}.{sig}") == 401


# ---------------------------------------------------------------------------------------------
# Scopes


def test_required_scope(stack: UpStack, known: str, browser: httpx.Client) -> None:
    assert get(browser, "/reports", stack.mint(known)) == 403
    assert get(browser, "/reports", stack.mint(known, "read:other")) == 403
    assert get(browser, "/reports", stack.mint(known, "read:reportsX")) == 403
    assert get(browser, "/reports", stack.mint(known, "read:reports")) == 200
    assert get(browser, "/reports", stack.mint(known, "openid", "read:reports")) == 200


def test_scope_does_not_help_an_unknown_user(stack: UpStack, browser: httpx.Client) -> None:
    assert get(browser, "/reports", stack.mint(unique("nobody"), "read:reports")) == 403

"""Browser SSO end to end (docs/browser-sso.md): a browser-like client signs in through a real
OIDC login front (Apache + mod_auth_openidc, the site configuration taken from the doc) at a
local OIDC issuer, and a real `scimgate up` HAProxy with `header` identity decides each
request from the identities map that SCIM keeps, including the request right after a SCIM
deactivation."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scimgate.policy.model import parse_policy
from tests.support import login_front
from tests.support.net import free_port
from tests.support.oidc_issuer import OidcIssuer
from tests.support.scim import GROUP_SCHEMA, patch, post_user, set_active
from tests.support.up import UpStack, start_up

pytestmark = pytest.mark.haproxy

FORBIDDEN = '{"error":"forbidden","status":403}'  # HAProxy's own 403 (not the front's)

DOC = Path(__file__).resolve().parents[2] / "docs" / "browser-sso.md"
HEADER_POLICY = """\
identity:
  source: header
  header: {name: X-Forwarded-Email, trusted_sources: [127.0.0.1/32]}
  key_attributes: [userName, emails]
groups:
  admins: {idp_groups: ["Admins"]}
routes:
  - name: health
    from: {path_prefix: /healthz}
    public: true
    to: {return: "ok"}
  - name: admin
    from: {path_prefix: /admin}
    allow_groups: [admins]
    to: {return: "admin area"}
  - name: home
    from: {path_prefix: /}
    allow_groups: [any]
    to: {return: "hello, active user"}
default: deny
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpStack]:
    directory = tmp_path_factory.mktemp("sso") / "instance"
    directory.mkdir()
    (directory / "policy.yaml").write_text(HEADER_POLICY)  # `up` keeps a policy it finds
    up = start_up(directory)
    try:
        yield up
    finally:
        up.stop()


@pytest.fixture(scope="module")
def issuer() -> Iterator[OidcIssuer]:
    with OidcIssuer() as running:
        yield running


@pytest.fixture(scope="module")
def front(
    stack: UpStack, issuer: OidcIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[login_front.LoginFront]:
    missing = login_front.available()
    if missing:
        pytest.fail(f"{missing}: `make test` installs it (Makefile system-deps)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    client = issuer.register_client("scimgate-front", f"{url}/oauth2/callback")
    env = {
        "FRONT_BIND": f"127.0.0.1:{port}",
        "FRONT_NAME": "127.0.0.1",
        "FRONT_URL": url,
        "OIDC_ISSUER": issuer.url,
        "OIDC_CLIENT_ID": client.client_id,
        "OIDC_CLIENT_SECRET": client.client_secret,
        "OIDC_COOKIE_SECRET": secrets.token_urlsafe(32),
        "HAPROXY_URL": stack.info["haproxy_url"],
    }
    site = login_front.site_from_doc(DOC)
    running = login_front.start_front(tmp_path_factory.mktemp("front"), site, port, env)
    try:
        yield running
    finally:
        running.stop()


def browser(front: login_front.LoginFront) -> httpx.Client:
    """A browser: follows redirects across the front and the issuer, keeps cookies."""
    return httpx.Client(base_url=front.url, follow_redirects=True, timeout=15)


def sign_in(web: httpx.Client, issuer: OidcIssuer, email: str) -> httpx.Response:
    issuer.sign_in_as(email)
    return web.get("/")


def test_the_documented_policy_is_valid() -> None:
    block = re.search(r"^```yaml\n(.*?)^```", DOC.read_text(), re.MULTILINE | re.DOTALL)
    assert block is not None
    policy = parse_policy(block.group(1), "browser-sso.md")
    assert policy.identity.source == "header" and policy.identity.header is not None
    assert policy.identity.header.name == "X-Forwarded-Email"


def test_browser_signs_in_is_gated_by_groups_and_loses_access_on_deactivation(
    stack: UpStack, issuer: OidcIssuer, front: login_front.LoginFront
) -> None:
    alice = "alice.sso@example.com"
    issuer.add_user(alice, name="Alice")
    with stack.scim() as scim:
        r = post_user(scim, alice)
        assert r.status_code == 201, r.text
        alice_id = r.json()["id"]
        r = scim.post("/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": "Admins"})
        assert r.status_code == 201, r.text
        admins_id = r.json()["id"]

    with browser(front) as web:
        home = sign_in(web, issuer, alice)
        # the redirects went through the issuer's authorization endpoint and back
        assert [str(h.url.path) for h in home.history][:1] == ["/"], home.history
        assert any(h.url.port == issuer.port for h in home.history), home.history
        assert "POST /token" in issuer.requests  # the front redeemed the code itself
        assert (home.status_code, home.text) == (200, "hello, active user"), front.error_log
        assert web.get("/admin").text == FORBIDDEN  # her groups do not open it

        with stack.scim() as scim:
            r = patch(scim, f"/Groups/{admins_id}",
                      {"op": "add", "path": "members", "value": [{"value": alice_id}]})  # fmt: skip
            assert r.status_code in (200, 204), r.text
        assert web.get("/admin").text == "admin area"  # same session, new group

        with stack.scim() as scim:
            r = set_active(scim, alice_id, False)
            assert r.status_code == 200, r.text
        # the session cookie is still good at the front: HAProxy says no at the next request
        denied = web.get("/")
        assert (denied.status_code, denied.text) == (403, FORBIDDEN)
        assert not denied.history  # no new sign-in was needed to be denied
        assert web.get("/admin").status_code == 403


def test_header_from_another_address_is_not_an_identity(
    stack: UpStack, front: login_front.LoginFront
) -> None:
    bob = "bob.sso@example.com"
    with stack.scim() as scim:
        assert post_user(scim, bob).status_code == 201
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=transport, timeout=10) as direct:
        r = direct.get(stack.info["haproxy_url"] + "/", headers={"X-Forwarded-Email": bob})
    assert r.status_code == 401, r.text
    # from the trusted address the same header is an identity (what the front relies on)
    with httpx.Client(timeout=10) as trusted:
        r = trusted.get(stack.info["haproxy_url"] + "/", headers={"X-Forwarded-Email": bob})
    assert (r.status_code, r.text) == (200, "hello, active user")


def test_a_browser_cannot_bring_its_own_identity_header(
    stack: UpStack, issuer: OidcIssuer, front: login_front.LoginFront
) -> None:
    """Signed in as an IdP user scimgate never provisioned (403), sending an active user's
    e-mail in X-Forwarded-Email: the front replaces the header with the session's."""
    carol, mallory = "carol.sso@example.com", "mallory.sso@example.com"
    issuer.add_user(mallory)
    with stack.scim() as scim:
        assert post_user(scim, carol).status_code == 201
    with browser(front) as web:
        web.headers["X-Forwarded-Email"] = carol
        r = sign_in(web, issuer, mallory)
        assert (r.status_code, r.text) == (403, FORBIDDEN)  # mallory's identity: not in the map
        assert r.history  # she did sign in at the issuer


def test_unauthenticated_browser_is_sent_to_the_issuer(
    issuer: OidcIssuer, front: login_front.LoginFront
) -> None:
    with httpx.Client(base_url=front.url, follow_redirects=False, timeout=10) as web:
        r = web.get("/admin")
    assert r.status_code == 302
    location = httpx.URL(r.headers["location"])
    assert (location.host, location.port, location.path) == ("127.0.0.1", issuer.port, "/authorize")
    params = dict(location.params)
    assert params["code_challenge_method"] == "S256" and params["code_challenge"]
    assert params["response_type"] == "code" and "openid" in params["scope"].split()

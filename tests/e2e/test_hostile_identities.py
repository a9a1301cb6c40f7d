"""Hostile identities through the WHOLE path of a real `scimgate up`: SCIM → store → sync
engine → HAProxy Runtime API → enforcement over HTTP.

userNames, e-mails and group displayNames full of CLI metacharacters (``;``, LF, CR, TAB,
spaces, ``<<``, ``\\``, ``#0x1``), Unicode and 10 kB strings: SCIM answers 201 or a 4xx SCIM
error (never 5xx), HAProxy keeps answering, every live map key is 64 uppercase hex and every
value a group list, the live maps equal the desired state exactly, well-behaved users are
still allowed / denied correctly, and no injected CLI command ever runs.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from scimgate.haproxy import RuntimeClient
from scimgate.policy.compiler import identity_key, is_usable_identity, normalise_identity
from tests.e2e.test_up import GROUP_SCHEMA, UpStack, start_up
from tests.support import stack as st

pytestmark = pytest.mark.haproxy

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
PIECES = [
    ";", "\n", "\r", "\r\n", "\t", " ", "  ", "<<", "\\", "#0x1", "0x1", "@", "%", "'", '"',
    "show info", "add map", "del map", "clear map", "commit map", "@1", "\x00", "\x7f",
    "é", "Ω", "İ", "ß", "\u200b", "\u2028", "😀", "\uff33", ",admins,", "*", "$",
]  # fmt: skip
INJECTIONS = [
    "x;show info",
    "x; add map /etc/passwd foo bar",
    "a\nadd map identities-0.map 0000000000000000000000000000000000000000000000000000000000000000 ,admins,",
    "a\r\nclear map identities-1.map",
    "ends with <<",
    "x <<\n0000000000000000000000000000000000000000000000000000000000000001 ,admins,\n",
    "#0x1",
    "@1 0x1",
    "tab\there",
    "back\\slash;\\n",
]
BIG = 10 * 1024

hostile = hs.one_of(
    hs.lists(hs.sampled_from(PIECES) | hs.text(max_size=6), min_size=1, max_size=8).map("".join),
    hs.sampled_from(INJECTIONS),
    hs.tuples(hs.sampled_from(PIECES), hs.integers(BIG - 16, BIG + 16)).map(
        lambda t: (t[0] * t[1])[:BIG] if t[0] else "x" * BIG
    ),
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpStack]:
    up = start_up(tmp_path_factory.mktemp("hostile"))
    try:
        yield up
    finally:
        up.stop()


@pytest.fixture(scope="module")
def scim(stack: UpStack) -> Iterator[httpx.Client]:
    with stack.scim() as client:
        yield client


@pytest.fixture(scope="module")
def mint(stack: UpStack) -> st.Minter:
    return st.Minter(stack)


@pytest.fixture(scope="module")
def control(stack: UpStack, scim: httpx.Client, mint: st.Minter) -> dict[str, str]:
    """Two well-behaved users: an active engineer and a deactivated one. Returns their JWTs
    (and the Engineering group's id)."""
    r = scim.post("/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": "Engineering"})
    assert r.status_code == 201, r.text
    eng = r.json()["id"]
    tokens = {"engineering": eng}
    for name, active in (("ctrl-on@example.com", True), ("ctrl-off@example.com", False)):
        r = st.create_user(scim, name, active=active)
        assert r.status_code == 201, r.text
        op = {"op": "add", "path": "members", "value": [{"value": r.json()["id"]}]}
        assert st.patch(scim, f"/Groups/{eng}", op).status_code in (200, 204)
        tokens[name] = mint(name)
    return tokens


def scim_outcome(r: httpx.Response) -> None:
    """201, or a 4xx with a SCIM error body; never a 5xx."""
    if r.status_code == 201:
        return
    assert 400 <= r.status_code < 500, f"{r.status_code}: {r.text[:500]}"
    body = r.json()
    assert ERROR_SCHEMA in body["schemas"], body
    assert str(body["status"]) == str(r.status_code)


def check_haproxy(stack: UpStack, control: dict[str, str]) -> None:
    with RuntimeClient(stack.info["runtime_api"], 5.0, cli_timeout=None) as client:
        info = client.show_info()
        assert int(info["Pid"]) > 0
        maps = {m.path for m in client.list_maps()}
    # only our identities maps are loaded: nothing was created by an injected command
    lay = st.layout(stack)
    assert maps == {*lay.paths, lay.overlay}
    # the overlay holds only our keys and values (or the tombstone)
    for key, value in st.raw_overlay(stack.info["runtime_api"], lay).items():
        assert st.KEY_RE.fullmatch(key) and st.VALUE_RE.fullmatch(value), (key, value)
    live = st.live_entries(stack.info["runtime_api"], st.layout(stack))
    for key, value in live.items():
        assert st.KEY_RE.fullmatch(key), repr(key)
        assert st.VALUE_RE.fullmatch(value), repr(value)
    st.wait_converged(stack, 5)
    with stack.browser() as web:
        on, off = control["ctrl-on@example.com"], control["ctrl-off@example.com"]
        assert st.access(web, on, "/eng") == 200
        assert st.access(web, on, "/admin") == 403
        assert st.access(web, off, "/") == 403
        assert st.access(web, off, "/eng") == 403


def create_group(scim: httpx.Client, name: str, members: list[str]) -> httpx.Response:
    body: dict[str, Any] = {"schemas": [GROUP_SCHEMA], "displayName": name}
    if members:
        body["members"] = [{"value": m} for m in members]
    return scim.post("/Groups", json=body)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(user_name=hostile, email=hostile, group=hostile, engineering=hs.booleans())
def test_hostile_strings_never_break_the_path(
    stack: UpStack,
    scim: httpx.Client,
    control: dict[str, str],
    user_name: str,
    email: str,
    group: str,
    engineering: bool,
) -> None:
    suffix = uuid.uuid4().hex[:6]  # hypothesis replays: keep names unique per example
    r = scim.post("/Users", json={
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name + suffix, "emails": [{"value": email + suffix, "primary": True}],
    })  # fmt: skip
    scim_outcome(r)
    members = [r.json()["id"]] if r.status_code == 201 else []
    # a group with a hostile displayName (the policy ignores it), and maybe Engineering too
    scim_outcome(create_group(scim, group + suffix, members))
    if engineering and members:
        op = {"op": "add", "path": "members", "value": [{"value": members[0]}]}
        p = st.patch(scim, f"/Groups/{control['engineering']}", op)
        assert p.status_code in (200, 204), p.text
    check_haproxy(stack, control)


@pytest.mark.parametrize("name", INJECTIONS)
def test_injected_cli_commands_never_run(
    stack: UpStack, scim: httpx.Client, control: dict[str, str], mint: st.Minter, name: str
) -> None:
    before = st.live_entries(stack.info["runtime_api"], st.layout(stack))
    r = st.create_user(scim, name)
    scim_outcome(r)
    g = create_group(scim, name, [r.json()["id"]] if r.status_code == 201 else [])
    scim_outcome(g)
    after = st.live_entries(stack.info["runtime_api"], st.layout(stack))
    want = st.desired(stack)
    assert after == want
    # exactly the user's own entry appeared (when its identity is usable at all: printable
    # ASCII without spaces, else it never reaches HAProxy); no foreign key, none changed
    identity = normalise_identity(name)
    usable = r.status_code == 201 and bool(identity) and is_usable_identity(identity)
    secret = base64.b64decode((stack.directory / "hmac.key").read_text().strip())
    key = identity_key(identity, secret)
    assert after.keys() - before.keys() <= {key}
    assert (key in after) == usable or key in before, (name, r.status_code)
    assert {k: after[k] for k in before} == before
    check_haproxy(stack, control)
    with stack.browser() as web:
        # the hostile identity itself is enforced like any other (it is only ever hashed);
        # an unusable one is refused by HAProxy too (fail closed)
        assert st.access(web, mint(name)) in ((200,) if usable else (401, 403))

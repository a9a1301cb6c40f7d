"""User lifecycle and bearer tokens over real HTTP: soft delete, delete cascades to groups,
token rotation/revocation/expiry through the CLI, and the audit actor of every write."""

from __future__ import annotations

import time

import httpx
import sqlalchemy as sa
from click.testing import CliRunner

from scimgate.cli import main
from tests.fixtures.server import ScimServer
from tests.support.scim import (
    ERROR_SCHEMA as ERROR,
    PATCH_SCHEMA as PATCH,
    USER_SCHEMA as USER,
    new_user,
    tag,
)


def test_deactivated_user_stays_readable(scim: httpx.Client) -> None:
    u = new_user(scim, active=True)
    r = scim.patch(
        f"/Users/{u['id']}",
        json={
            "schemas": [PATCH],
            "Operations": [{"op": "replace", "path": "active", "value": False}],
        },
    )
    assert r.status_code == 200 and r.json()["active"] is False
    got = scim.get(f"/Users/{u['id']}")
    assert got.status_code == 200 and got.json()["active"] is False
    res = scim.get("/Users", params={"filter": f'userName eq "{u["userName"]}"'}).json()
    assert res["totalResults"] == 1 and res["Resources"][0]["active"] is False
    res = scim.get(
        "/Users", params={"filter": f'userName eq "{u["userName"]}" and active eq false'}
    )
    assert res.json()["totalResults"] == 1
    # reactivation
    r = scim.patch(
        f"/Users/{u['id']}", json={"Operations": [{"op": "replace", "value": {"active": True}}]}
    )
    assert r.json()["active"] is True


def test_delete_user_removes_it_from_every_group(scim: httpx.Client) -> None:
    u, keep = new_user(scim), new_user(scim)
    gids = []
    for _ in range(3):
        r = scim.post(
            "/Groups",
            json={
                "displayName": f"lg-{tag()}",
                "members": [{"value": u["id"]}, {"value": keep["id"]}],
            },
        )
        assert r.status_code == 201
        gids.append(r.json())
    assert scim.delete(f"/Users/{u['id']}").status_code == 204
    for g in gids:
        now = scim.get(f"/Groups/{g['id']}").json()
        assert [m["value"] for m in now["members"]] == [keep["id"]]
        assert now["meta"]["version"] != g["meta"]["version"]  # the group changed
        res = scim.get("/Groups", params={"filter": f'members.value eq "{u["id"]}"'}).json()
        assert res["totalResults"] == 0
    # deleting a group removes it from the user's groups
    assert scim.delete(f"/Groups/{gids[0]['id']}").status_code == 204
    assert {x["value"] for x in scim.get(f"/Users/{keep['id']}").json()["groups"]} == {
        g["id"] for g in gids[1:]
    }


def test_group_patch_touching_members_answers_204(scim: httpx.Client) -> None:
    u = new_user(scim)
    g = scim.post("/Groups", json={"displayName": f"lg-{tag()}"}).json()
    for ops in (
        [{"op": "add", "path": "members", "value": [{"value": u["id"]}]}],
        [{"op": "remove", "path": f'members[value eq "{u["id"]}"]'}],
        [{"op": "replace", "path": "members", "value": [{"value": u["id"]}]}],
        [{"op": "remove", "path": "members"}],
    ):
        r = scim.patch(f"/Groups/{g['id']}", json={"schemas": [PATCH], "Operations": ops})
        assert r.status_code == 204 and r.content == b"", r.text


# --- tokens ----------------------------------------------------------------------------------


def cli(server: ScimServer, *args: str) -> str:
    """`scimgate token ...` through the real CLI entry point (in-process: no interpreter
    start-up per call, the same code as `python -m scimgate.cli`)."""
    result = CliRunner().invoke(main, [*args, "--dir", str(server.directory)])
    assert result.exit_code == 0, result.output
    return str(result.stdout).strip()


def status(server: ScimServer, secret: str) -> int:
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        r = c.get("/Users", params={"count": 0}, headers={"Authorization": f"Bearer {secret}"})
        if r.status_code == 401:
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert r.json()["schemas"] == [ERROR]
        return r.status_code


def test_token_rotate_revoke_expire(scim_server: ScimServer) -> None:
    name = f"idp-{tag()}"
    old = cli(scim_server, "token", "create", name)
    assert old and status(scim_server, old) == 200
    new = cli(scim_server, "token", "rotate", name, "--overlap", "2s")
    assert new != old
    assert status(scim_server, new) == 200
    assert status(scim_server, old) == 200  # overlap
    listed = cli(scim_server, "token", "list")
    assert name in listed and old not in listed and new not in listed
    time.sleep(2.5)
    assert status(scim_server, old) == 401
    assert status(scim_server, new) == 200
    cli(scim_server, "token", "revoke", name)
    assert status(scim_server, new) == 401

    short = f"short-{tag()}"
    secret = cli(scim_server, "token", "create", short, "--expires-in", "1s")
    time.sleep(1.2)
    assert status(scim_server, secret) == 401


def test_writes_record_the_token_name(scim_server: ScimServer) -> None:
    name = f"writer-{tag()}"
    secret = cli(scim_server, "token", "create", name)
    with httpx.Client(
        base_url=scim_server.base_url,
        timeout=10,
        headers={"Authorization": f"Bearer {secret}", "User-Agent": "Audit-Test/1.0"},
    ) as c:
        u = c.post("/Users", json={"userName": f"aud-{tag()}"}).json()
        assert (
            c.patch(
                f"/Users/{u['id']}",
                json={"Operations": [{"op": "replace", "path": "title", "value": "x"}]},
            ).status_code
            == 200
        )
        assert c.put(f"/Users/{u['id']}", json={"userName": u["userName"]}).status_code == 200
        g = c.post(
            "/Groups", json={"displayName": f"aud-{tag()}", "members": [{"value": u["id"]}]}
        ).json()
        assert c.delete(f"/Groups/{g['id']}").status_code == 204
        assert c.delete(f"/Users/{u['id']}").status_code == 204
    engine = sa.create_engine(scim_server.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT actor, operation, resource_id, user_agent FROM audit_events "
                    "WHERE kind = 'scim.write' AND resource_id IN (:u, :g) ORDER BY seq"
                ),
                {"u": u["id"], "g": g["id"]},
            ).all()
    finally:
        engine.dispose()
    assert [r.operation for r in rows] == [
        "create",
        "patch",
        "replace",
        "create",
        "delete",
        "delete",
    ]
    assert {r.actor for r in rows} == {name}
    assert {r.user_agent for r in rows} == {"Audit-Test/1.0"}


def test_revoked_token_is_refused_at_once_even_while_cached(scim_server: ScimServer) -> None:
    """The token cache (0.5 s) only saves work: the token row is read again in the
    transaction of the work, so the request right after a revocation is refused and writes
    nothing, and a bad body is not answered with anything but 401."""
    name = f"cached-{tag()}"
    secret = cli(scim_server, "token", "create", name)
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=scim_server.base_url, timeout=10, headers=headers) as c:
        u = c.post("/Users", json={"schemas": [USER], "userName": f"c-{tag()}"}).json()
        deactivate = {
            "schemas": [PATCH],
            "Operations": [{"op": "replace", "path": "active", "value": False}],
        }
        assert c.get(f"/Users/{u['id']}").status_code == 200  # the row is cached now
        cli(scim_server, "token", "revoke", name)
        r = c.patch(f"/Users/{u['id']}", json=deactivate)
        assert r.status_code == 401, r.text
        assert c.post("/Users", content=b"{not json", headers={
            "Content-Type": "application/scim+json"}).status_code == 401  # fmt: skip
        assert c.get("/Schemas").status_code == 401
    with scim_server.client() as scim:
        assert scim.get(f"/Users/{u['id']}").json()["active"] is True

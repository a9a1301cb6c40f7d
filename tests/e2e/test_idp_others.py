"""Google Workspace, OneLogin and JumpCloud provisioning shapes, replayed over HTTP."""

from __future__ import annotations

import uuid

from tests.fixtures.server import ScimServer
from tests.idp_fixtures import client, fill, load, query

OTHERS = load("others")


def test_google_workspace(scim_server: ScimServer) -> None:
    g = OTHERS["google"]
    user_name = f"gee.{uuid.uuid4().hex[:8]}@example.com"
    with client(scim_server.base_url, scim_server.token, g["headers"]) as google:
        r = google.get("/Users?" + query(count=1))  # setup probe
        assert r.status_code == 200 and isinstance(r.json()["totalResults"], int)
        r = google.get("/Users?" + query(filter=f'userName eq "{user_name}"'))
        assert r.json()["totalResults"] == 0
        r = google.post("/Users", json=fill(g["create_user"], userName=user_name))
        assert r.status_code == 201, r.text
        uid = r.json()["id"]
        assert (
            google.post("/Users", json=fill(g["create_user"], userName=user_name)).status_code
            == 409
        )
        r = google.patch(f"/Users/{uid}", json=g["deactivate"])
        assert r.status_code == 200 and r.json()["active"] is False
        assert google.delete(f"/Users/{uid}").status_code == 204


def test_onelogin_template_bodies(scim_server: ScimServer) -> None:
    o = OTHERS["onelogin"]
    user_name = f"one.{uuid.uuid4().hex[:8]}@example.com"
    with client(scim_server.base_url, scim_server.token, o["headers"]) as onelogin:
        r = onelogin.get("/Users?" + query(filter=f'userName eq "{user_name}"'))
        assert r.json()["totalResults"] == 0
        # string "true" and a single email object instead of an array
        r = onelogin.post("/Users", json=fill(o["create_user"], userName=user_name))
        assert r.status_code == 201, r.text
        u = r.json()
        assert u["active"] is True
        assert u["emails"] == [{"value": user_name, "type": "work"}]
        r = onelogin.post("/Users", json=fill(o["create_user"], userName=user_name))
        assert r.status_code == 409
        r = onelogin.put(f"/Users/{u['id']}", json=fill(o["put_user_inactive"], userName=user_name))
        assert r.status_code == 200 and r.json()["active"] is False
        assert onelogin.get(f"/Users/{u['id']}").json()["active"] is False


def test_jumpcloud_activation_and_groups(scim_server: ScimServer) -> None:
    j = OTHERS["jumpcloud"]
    mark = uuid.uuid4().hex[:8]
    with client(scim_server.base_url, scim_server.token, j["headers"]) as jc:
        assert jc.get("/Users").status_code == 200  # activation starts with a plain GET
        # activation: test user + test group, then delete them
        r = jc.post(
            "/Users",
            json=fill(
                j["create_user"], userName=f"jc-test.{mark}@example.com", externalId=f"jc{mark}"
            ),
        )
        assert r.status_code == 201, r.text
        test_user = r.json()["id"]
        r = jc.post(
            "/Groups",
            json=fill(j["create_group"], displayName=f"JC Test {mark}", memberId=test_user),
        )
        assert r.status_code == 201, r.text
        test_group = r.json()["id"]
        assert jc.delete(f"/Groups/{test_group}").status_code == 204
        assert jc.delete(f"/Users/{test_user}").status_code == 204
        # real provisioning
        users = []
        for i in range(2):
            r = jc.post(
                "/Users",
                json=fill(
                    j["create_user"],
                    userName=f"jc{i}.{mark}@example.com",
                    externalId=f"jc{mark}{i}",
                ),
            )
            assert r.status_code == 201
            users.append(r.json()["id"])
        r = jc.post(
            "/Groups", json=fill(j["create_group"], displayName=f"JC Eng {mark}", memberId=users[0])
        )
        gid = r.json()["id"]
        r = jc.patch(f"/Groups/{gid}", json=fill(j["add_member"], memberId=users[1]))
        assert r.status_code == 204
        r = jc.patch(f"/Groups/{gid}", json=fill(j["remove_member"], memberId=users[0]))
        assert r.status_code == 204
        assert [m["value"] for m in jc.get(f"/Groups/{gid}").json()["members"]] == [users[1]]
        r = jc.patch(f"/Groups/{gid}", json=fill(j["rename_group"], displayName=f"JC Eng2 {mark}"))
        assert r.status_code == 204
        r = jc.get("/Groups?" + query(filter=f'displayName eq "JC Eng2 {mark}"'))
        assert [x["id"] for x in r.json()["Resources"]] == [gid]
        r = jc.patch(f"/Users/{users[0]}", json=j["deactivate"])
        assert r.status_code == 200 and r.json()["active"] is False
        assert jc.delete(f"/Groups/{gid}").status_code == 204

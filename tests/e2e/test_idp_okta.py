"""Okta's provisioning sequence (OIN/AIW SCIM 2.0), replayed over HTTP with Okta's bodies."""

from __future__ import annotations

import uuid

from tests.fixtures.server import ScimServer
from tests.idp_fixtures import client, fill, load, query
from tests.support.scim import ERROR_SCHEMA as ERROR, LIST_SCHEMA as LIST

OKTA = load("okta")


def test_okta_user_lifecycle(scim_server: ScimServer) -> None:
    user_name = f"test.user.{uuid.uuid4().hex[:8]}@okta.local"
    ext = "00u" + uuid.uuid4().hex[:17]
    with client(scim_server.base_url, scim_server.token, OKTA["headers"]) as okta:
        # probe on save
        r = okta.get("/Users?" + query(startIndex=1, count=2))
        assert r.status_code == 200 and r.json()["schemas"] == [LIST]
        # assign: lookup (upper case too: Runscope checks case-insensitivity), then create
        r = okta.get(
            "/Users?" + query(filter=f'userName eq "{user_name}"', startIndex=1, count=100)
        )
        assert r.status_code == 200
        assert r.json()["totalResults"] == 0 and r.json()["Resources"] == []
        r = okta.post("/Users", json=fill(OKTA["create_user"], userName=user_name, externalId=ext))
        assert r.status_code == 201, r.text
        assert r.headers["content-type"].startswith("application/scim+json")
        user = r.json()
        uid = user["id"]
        assert "password" not in r.text
        assert user["active"] is True and user["externalId"] == ext
        r = okta.get(
            "/Users?" + query(filter=f'userName eq "{user_name.upper()}"', startIndex=1, count=100)
        )
        assert [x["id"] for x in r.json()["Resources"]] == [uid]
        # duplicate → 409 with an Error body
        r = okta.post("/Users", json=fill(OKTA["create_user"], userName=user_name, externalId=ext))
        assert r.status_code == 409
        assert r.json()["schemas"] == [ERROR] and r.json()["scimType"] == "uniqueness"
        # unknown id → 404 + Error; bad token → 401
        r = okta.get(f"/Users/{uuid.uuid4()}")
        assert r.status_code == 404 and r.json()["schemas"] == [ERROR]
        r = okta.get("/Users", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        # profile update: GET then PUT the whole object (with id/groups/meta echoed)
        assert okta.get(f"/Users/{uid}").status_code == 200
        r = okta.put(
            f"/Users/{uid}", json=fill(OKTA["put_user"], id=uid, userName=user_name, externalId=ext)
        )
        assert r.status_code == 200, r.text
        assert r.json()["name"] == {"givenName": "Another", "familyName": "User"}
        assert r.json()["displayName"] == "Another User"
        # password sync (OIN): accepted, never returned
        r = okta.patch(f"/Users/{uid}", json=OKTA["password_sync"])
        assert r.status_code == 200 and "password" not in r.text
        # deactivate: path-less replace {"active": false}
        r = okta.patch(f"/Users/{uid}", json=OKTA["deactivate"])
        assert r.status_code == 200 and r.json()["active"] is False
        got = okta.get(f"/Users/{uid}").json()
        assert got["active"] is False and got["userName"] == user_name
        r = okta.get("/Users?" + query(filter=f'userName eq "{user_name}"'))
        assert r.json()["Resources"][0]["active"] is False
        # AIW deactivates by PUT active=false; reactivate by PATCH
        body = fill(OKTA["put_user"], id=uid, userName=user_name, externalId=ext)
        r = okta.put(f"/Users/{uid}", json={**body, "active": False})
        assert r.status_code == 200 and r.json()["active"] is False
        r = okta.patch(f"/Users/{uid}", json=OKTA["reactivate"])
        assert r.json()["active"] is True


def test_okta_group_push(scim_server: ScimServer) -> None:
    mark = uuid.uuid4().hex[:8]
    with client(scim_server.base_url, scim_server.token, OKTA["headers"]) as okta:
        users = []
        for i in range(3):
            r = okta.post(
                "/Users",
                json=fill(
                    OKTA["create_user"],
                    userName=f"push{i}.{mark}@okta.local",
                    externalId=f"00u{mark}{i}",
                ),
            )
            assert r.status_code == 201
            users.append(r.json())
        name = f"Okta Push {mark}"
        r = okta.get("/Groups?" + query(filter=f'displayName eq "{name}"'))
        assert r.status_code == 200 and r.json()["totalResults"] == 0
        r = okta.post("/Groups", json=fill(OKTA["create_group"], displayName=name))
        assert r.status_code == 201, r.text
        gid = r.json()["id"]
        assert r.json().get("members") in (None, [])
        r = okta.get("/Groups?" + query(filter=f'displayName eq "{name}"'))
        assert [x["id"] for x in r.json()["Resources"]] == [gid]
        # full push
        members = [{"value": u["id"], "display": u["userName"]} for u in users[:2]]
        r = okta.patch(f"/Groups/{gid}", json=fill(OKTA["full_push"], members=members))
        assert r.status_code in (200, 204), r.text
        now = okta.get(f"/Groups/{gid}").json()
        assert {m["value"] for m in now["members"]} == {users[0]["id"], users[1]["id"]}
        # rename (with id) is sent with every membership update
        new_name = f"Test SCIMv2 {mark}"
        r = okta.patch(
            f"/Groups/{gid}", json=fill(OKTA["rename_group"], groupId=gid, displayName=new_name)
        )
        assert r.status_code in (200, 204), r.text
        # membership: remove by filter + add in one PATCH
        r = okta.patch(
            f"/Groups/{gid}",
            json=fill(
                OKTA["membership"],
                removeId=users[0]["id"],
                addId=users[2]["id"],
                addDisplay=users[2]["userName"],
            ),
        )
        assert r.status_code in (200, 204), r.text
        now = okta.get(f"/Groups/{gid}").json()
        assert now["displayName"] == new_name
        assert {m["value"] for m in now["members"]} == {users[1]["id"], users[2]["id"]}
        # the same membership PATCH again is idempotent
        r = okta.patch(
            f"/Groups/{gid}",
            json=fill(
                OKTA["membership"],
                removeId=users[0]["id"],
                addId=users[2]["id"],
                addDisplay=users[2]["userName"],
            ),
        )
        assert r.status_code in (200, 204)
        assert len(okta.get(f"/Groups/{gid}").json()["members"]) == 2
        # GET /Groups answers fast (Runscope: < 600 ms)
        r = okta.get("/Groups?" + query(startIndex=1, count=100))
        assert r.status_code == 200 and r.elapsed.total_seconds() < 0.6
        # AIW: PUT the group
        r = okta.put(
            f"/Groups/{gid}",
            json={
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "id": gid,
                "displayName": new_name,
                "members": [{"value": users[0]["id"]}],
            },
        )
        assert r.status_code == 200
        assert [m["value"] for m in r.json()["members"]] == [users[0]["id"]]
        # unlink with delete
        assert okta.delete(f"/Groups/{gid}").status_code == 204
        assert okta.get(f"/Groups/{gid}").status_code == 404

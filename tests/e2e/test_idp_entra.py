"""Microsoft Entra ID's provisioning sequence, replayed over HTTP with Entra's bodies
(both the default job and the `aadOptscim062020` flag shapes)."""

from __future__ import annotations

import uuid

from tests.fixtures.server import ScimServer
from tests.idp_fixtures import client, fill, load, query
from tests.support.scim import ENTERPRISE_SCHEMA as ENT, LIST_SCHEMA as LIST

ENTRA = load("entra")


def test_entra_test_connection_and_schema_discovery(scim_server: ScimServer) -> None:
    with client(scim_server.base_url, scim_server.token, ENTRA["headers"]) as entra:
        r = entra.get("/Users?" + query(filter=f'userName eq "{uuid.uuid4()}"'))
        assert r.status_code == 200 and r.json()["totalResults"] == 0
        r = entra.get(
            "/Groups?"
            + query(excludedAttributes="members", filter=f'displayName eq "{uuid.uuid4()}"')
        )
        assert r.status_code == 200 and r.json()["totalResults"] == 0
        r = entra.get("/Schemas")
        assert r.status_code == 200 and r.json()["schemas"] == [LIST]
        assert "null" not in r.text
    # Test Connection without a User-Agent
    with client(scim_server.base_url, scim_server.token, {}) as bare:
        r = bare.get(
            "/Users?" + query(filter=f'userName eq "{uuid.uuid4()}"'), headers={"User-Agent": ""}
        )
        assert r.status_code == 200


def test_entra_user_lifecycle(scim_server: ScimServer) -> None:
    user_name = f"Test_User_{uuid.uuid4().hex[:8]}@contoso.com"
    ext = str(uuid.uuid4())
    with client(scim_server.base_url, scim_server.token, ENTRA["headers"]) as entra:
        r = entra.get("/Users?" + query(filter=f'userName eq "{user_name}"'))
        assert r.json()["totalResults"] == 0
        r = entra.post(
            "/Users", json=fill(ENTRA["create_user"], userName=user_name, externalId=ext)
        )
        assert r.status_code == 201, r.text
        uid = r.json()["id"]
        r = entra.post(
            "/Users", json=fill(ENTRA["create_user"], userName=user_name, externalId=ext)
        )
        assert r.status_code == 409 and r.json()["scimType"] == "uniqueness"
        # matching by externalId and by work email too
        r = entra.get("/Users?" + query(filter=f'externalId eq "{ext}"'))
        assert [x["id"] for x in r.json()["Resources"]] == [uid]
        r = entra.get("/Users?" + query(filter=f'emails[type eq "work"].value eq "{user_name}"'))
        assert [x["id"] for x in r.json()["Resources"]] == [uid]
        # default-job PATCH: capitalised ops, emails[type eq "work"].value, URN path
        r = entra.patch(f"/Users/{uid}", json=ENTRA["patch_user"])
        assert r.status_code == 200, r.text
        u = r.json()
        assert u["displayName"] == "Pvlo" and u["name"]["givenName"] == "Gtfd"
        assert [e["value"] for e in u["emails"] if e["type"] == "work"] == [
            "TestBcwqnm@test.microsoft.com"
        ]
        assert u[ENT]["employeeNumber"] == "Eqpj"
        # path-less dotted / URN keys (flag)
        r = entra.patch(f"/Users/{uid}", json=ENTRA["pathless_flag"])
        assert r.status_code == 200, r.text
        u = r.json()
        assert u["displayName"] == "Bjfe"
        assert u["name"]["givenName"] == "Kkom" and u["name"]["familyName"] == "Unua"
        assert u[ENT]["employeeNumber"] == "Aklq"
        # manager as a bare string
        r = entra.post(
            "/Users",
            json=fill(
                ENTRA["create_user"], userName="mgr-" + user_name, externalId=str(uuid.uuid4())
            ),
        )
        mgr = r.json()["id"]
        r = entra.patch(f"/Users/{uid}", json=fill(ENTRA["manager_bare_string"], managerId=mgr))
        assert r.status_code == 200, r.text
        assert r.json()[ENT]["manager"]["value"] == mgr
        # disable (string "False"), user stays readable by id and filter
        r = entra.patch(f"/Users/{uid}", json=ENTRA["disable_no_flag"])
        assert r.status_code == 200 and r.json()["active"] is False
        r = entra.get("/Users?" + query(filter=f'userName eq "{user_name}"'))
        assert r.json()["Resources"][0]["active"] is False
        r = entra.patch(f"/Users/{uid}", json=ENTRA["enable_no_flag"])
        assert r.json()["active"] is True
        r = entra.patch(f"/Users/{uid}", json=ENTRA["disable_flag"])
        assert r.json()["active"] is False
        assert entra.get(f"/Users/{uid}").json()["active"] is False
        # hard delete → 204
        assert entra.delete(f"/Users/{uid}").status_code == 204
        assert entra.get(f"/Users/{uid}").status_code == 404
        # SCIM Validator: re-create a user with the name of a deleted one
        r = entra.post(
            "/Users", json=fill(ENTRA["create_user"], userName=user_name.upper(), externalId=ext)
        )
        assert r.status_code == 201


def test_entra_groups(scim_server: ScimServer) -> None:
    mark = uuid.uuid4().hex[:8]
    with client(scim_server.base_url, scim_server.token, ENTRA["headers"]) as entra:
        users = [
            entra.post(
                "/Users",
                json=fill(
                    ENTRA["create_user"],
                    userName=f"g{i}_{mark}@contoso.com",
                    externalId=str(uuid.uuid4()),
                ),
            ).json()
            for i in range(2)
        ]
        name = f"Entra Group {mark}"
        r = entra.get(
            "/Groups?" + query(excludedAttributes="members", filter=f'displayName eq "{name}"')
        )
        assert r.json()["totalResults"] == 0
        r = entra.post(
            "/Groups",
            json=fill(ENTRA["create_group"], displayName=name, externalId=str(uuid.uuid4())),
        )
        assert r.status_code == 201, r.text
        gid = r.json()["id"]
        for u in users:  # one member per operation; Entra may repeat adds
            for _ in range(2):
                r = entra.patch(f"/Groups/{gid}", json=fill(ENTRA["add_member"], memberId=u["id"]))
                assert r.status_code == 204, r.text
        r = entra.get(f"/Groups/{gid}", params={"excludedAttributes": "members"})
        assert r.status_code == 200 and "members" not in r.json()
        members = entra.get(f"/Groups/{gid}").json()["members"]
        assert sorted(m["value"] for m in members) == sorted(u["id"] for u in users)
        # Remove with value array (no flag): only that member
        r = entra.patch(
            f"/Groups/{gid}", json=fill(ENTRA["remove_member_no_flag"], memberId=users[0]["id"])
        )
        assert r.status_code == 204
        assert [m["value"] for m in entra.get(f"/Groups/{gid}").json()["members"]] == [
            users[1]["id"]
        ]
        # filtered remove (flag)
        r = entra.patch(
            f"/Groups/{gid}", json=fill(ENTRA["remove_member_flag"], memberId=users[1]["id"])
        )
        assert r.status_code == 204
        assert "members" not in entra.get(f"/Groups/{gid}").json()
        # rename
        r = entra.patch(
            f"/Groups/{gid}",
            json=fill(ENTRA["rename_group"], displayName=name + " updatedDisplayName"),
        )
        assert r.status_code == 204
        r = entra.get(
            "/Groups?"
            + query(
                excludedAttributes="members", filter=f'displayName eq "{name} updatedDisplayName"'
            )
        )
        assert [x["id"] for x in r.json()["Resources"]] == [gid]
        assert entra.delete(f"/Groups/{gid}").status_code == 204

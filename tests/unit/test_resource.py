"""scim.resource: payload validation, normalisation (RFC 7643) and projection (RFC 7644 §3.4.2.5)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from scimgate.scim.errors import InvalidSyntax, InvalidValue, ScimError
from scimgate.scim.resource import (
    MAX_CHARS,
    MAX_MULTI_VALUES,
    Member,
    normalise,
    project,
    split_members,
)
from scimgate.scim.schema import (
    ENTERPRISE_USER_SCHEMA,
    GROUP_SCHEMA,
    GROUP_TYPE,
    USER_SCHEMA,
    USER_TYPE,
)

ENT = ENTERPRISE_USER_SCHEMA


def user(**extra: Any) -> dict[str, Any]:
    return {"schemas": [USER_SCHEMA], "userName": "alice", **extra}


def norm_user(payload: dict[str, Any], mode: str = "create") -> dict[str, Any]:
    return normalise(payload, USER_TYPE, mode=mode)


# --- real IdP bodies ------------------------------------------------------------------------


def test_entra_create_user() -> None:
    body = {
        "schemas": [USER_SCHEMA, ENT],
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": "Test_User_ab6490ee@testuser.com",
        "active": True,
        "emails": [{"primary": True, "type": "work", "value": "Test_User_x@testuser.com"}],
        "meta": {"resourceType": "User"},
        "name": {
            "formatted": "givenName familyName",
            "familyName": "familyName",
            "givenName": "givenName",
        },
        "roles": [],
    }
    out = norm_user(body)
    assert out == {
        "schemas": [USER_SCHEMA],  # no extension data: extension URN not listed
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": "Test_User_ab6490ee@testuser.com",
        "name": {
            "formatted": "givenName familyName",
            "familyName": "familyName",
            "givenName": "givenName",
        },
        "active": True,
        "emails": [{"value": "Test_User_x@testuser.com", "type": "work", "primary": True}],
    }


def test_okta_create_user_drops_password_groups_and_id() -> None:
    body = {
        "schemas": [USER_SCHEMA],
        "id": "client-chosen",
        "userName": "test.user@okta.local",
        "name": {"givenName": "Test", "familyName": "User"},
        "emails": [{"primary": True, "value": "test.user@okta.local", "type": "work"}],
        "displayName": "Test User",
        "locale": "en-US",
        "externalId": "00ujl29u0le5T6Aj10h7",
        "groups": [],
        "password": "1mz050nq",
        "active": True,
    }
    out = norm_user(body)
    assert "password" not in out and "groups" not in out and "id" not in out
    assert out["userName"] == "test.user@okta.local"
    assert out["locale"] == "en-US"


def test_entra_create_group_with_legacy_schema_and_meta() -> None:
    body = {
        "schemas": [
            GROUP_SCHEMA,
            "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group",
        ],
        "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
        "displayName": "displayName",
        "meta": {"resourceType": "Group"},
    }
    out = normalise(body, GROUP_TYPE, mode="create")
    assert out == {
        "schemas": [GROUP_SCHEMA],
        "externalId": body["externalId"],
        "displayName": "displayName",
    }


def test_okta_create_group_with_empty_members() -> None:
    out = normalise({"displayName": "Eng", "members": []}, GROUP_TYPE, mode="create")
    assert out == {"schemas": [GROUP_SCHEMA], "displayName": "Eng"}
    assert split_members(out) == (out, None)


def test_postman_case_variants_and_string_booleans() -> None:
    out = norm_user(
        {
            "UserName": "bob",
            "Active": "True",
            "Emails": [{"Primary": "false", "Value": "b@x", "TYPE": "work"}],
        }
    )
    assert out == {
        "schemas": [USER_SCHEMA],
        "userName": "bob",
        "active": True,
        "emails": [{"value": "b@x", "type": "work", "primary": False}],
    }


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("True", True),
        ("False", False),
        ("true", True),
        ("false", False),
        ("FALSE", False),
        (True, True),
    ],
)
def test_boolean_strings(raw: Any, expected: bool) -> None:
    assert norm_user(user(active=raw))["active"] is expected


@pytest.mark.parametrize("raw", ["yes", "1", 1, 0, [], {}])
def test_boolean_rejects_other_values(raw: Any) -> None:
    with pytest.raises(InvalidValue, match="'active'"):
        norm_user(user(active=raw))


# --- names, extensions, schemas ---------------------------------------------------------------


def test_extension_nested_under_urn_and_schemas_derived() -> None:
    out = norm_user(
        user(**{ENT.upper(): {"EmployeeNumber": "42", "manager": {"value": "m1", "$ref": None}}})
    )
    assert out[ENT] == {"employeeNumber": "42", "manager": {"value": "m1"}}
    assert out["schemas"] == [USER_SCHEMA, ENT]


def test_urn_qualified_top_level_keys() -> None:
    out = norm_user(user(**{f"{ENT}:department": "R&D", f"{USER_SCHEMA}:title": "Eng"}))
    assert out[ENT] == {"department": "R&D"}
    assert out["title"] == "Eng"


def test_manager_bare_string() -> None:
    assert norm_user(user(**{ENT: {"manager": "boss-id"}}))[ENT] == {
        "manager": {"value": "boss-id"}
    }


def test_manager_display_name_is_read_only_and_dropped() -> None:
    out = norm_user(user(**{ENT: {"manager": {"value": "b", "displayName": "Boss"}}}))
    assert out[ENT]["manager"] == {"value": "b"}


def test_extension_listed_without_data_not_in_schemas() -> None:
    assert norm_user({"schemas": [USER_SCHEMA, ENT], "userName": "a", ENT: {}})["schemas"] == [
        USER_SCHEMA
    ]


def test_schemas_missing_or_a_string_tolerated() -> None:
    assert norm_user({"userName": "a"})["schemas"] == [USER_SCHEMA]
    assert norm_user({"schemas": USER_SCHEMA, "userName": "a"})["schemas"] == [USER_SCHEMA]


def test_schemas_wrong_shape() -> None:
    with pytest.raises(InvalidValue, match="schemas"):
        norm_user({"schemas": [1], "userName": "a"})


@pytest.mark.parametrize(
    "key", ["nickname2", "urn:example:custom:1.0:User", "name.givenName", f"{ENT}:nope"]
)
def test_unknown_attribute(key: str) -> None:
    with pytest.raises(InvalidValue, match="unknown attribute"):
        norm_user(user(**{key: "x"}))


def test_unknown_extension_attribute() -> None:
    with pytest.raises(InvalidValue, match="unknown attribute"):
        norm_user(user(**{ENT: {"shoeSize": "44"}}))


def test_unknown_sub_attribute() -> None:
    with pytest.raises(InvalidValue, match=r"name\.nick"):
        norm_user(user(name={"nick": "x"}))


def test_duplicate_after_case_folding() -> None:
    with pytest.raises(InvalidValue, match="more than once"):
        norm_user({"userName": "a", "USERNAME": "b"})


def test_canonical_order() -> None:
    out = norm_user(
        {
            ENT: {"department": "d"},
            "active": True,
            "meta": {"version": 'W/"1"'},
            "userName": "a",
            "id": "x",
            "externalId": "e",
        },
        mode="patch-result",
    )
    assert list(out) == ["schemas", "id", "externalId", "userName", "active", ENT, "meta"]


# --- null, empty, read-only -----------------------------------------------------------------


def test_nulls_and_empties_dropped() -> None:
    out = norm_user(
        user(
            displayName=None,
            name={"givenName": None},
            emails=[],
            phoneNumbers=[{"value": None}],
            **{ENT: None},
        )
    )
    assert out == {"schemas": [USER_SCHEMA], "userName": "alice"}


def test_patch_result_keeps_read_only() -> None:
    stored = user(
        id="u1",
        meta={"resourceType": "User", "version": 'W/"3"'},
        groups=[{"value": "g1", "display": "Eng"}],
    )
    out = norm_user(stored, mode="patch-result")
    assert out["id"] == "u1" and out["meta"]["version"] == 'W/"3"' and out["groups"]


def test_password_dropped_in_every_mode() -> None:
    for mode in ("create", "replace", "patch-result"):
        assert "password" not in norm_user(user(password="x"), mode=mode)


def test_bad_mode() -> None:
    with pytest.raises(ValueError):
        normalise({}, USER_TYPE, mode="upsert")


@pytest.mark.parametrize("payload", [[], "x", None, 3])
def test_body_must_be_object(payload: Any) -> None:
    with pytest.raises(InvalidSyntax):
        normalise(payload, USER_TYPE, mode="create")


# --- required --------------------------------------------------------------------------------


def test_required_user_name() -> None:
    with pytest.raises(InvalidValue, match=r"userName.*required"):
        norm_user({"displayName": "x"})
    with pytest.raises(InvalidValue, match="userName"):
        norm_user({"userName": None})


def test_required_group_display_name() -> None:
    with pytest.raises(InvalidValue, match=r"displayName.*required"):
        normalise({"members": []}, GROUP_TYPE, mode="replace")


# --- types -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload,where",
    [
        (user(displayName=5), "displayName"),
        (user(displayName=["a"]), "displayName"),
        (user(name="Alice"), "name"),
        (user(name={"givenName": 1}), "name.givenName"),
        (user(emails=["a@x"]), "emails[0]"),
        (user(emails=[{"value": "a@x"}, [{"value": "b"}]]), "emails[1]"),
        (user(emails=[{"value": True}]), "emails[0].value"),
        (user(profileUrl=3), "profileUrl"),
        (user(x509Certificates=[{"value": "not base64!"}]), "x509Certificates[0].value"),
        (user(**{ENT: "x"}), ENT),
        (user(**{ENT: {"employeeNumber": 12}}), f"{ENT}:employeeNumber"),
    ],
)
def test_wrong_type_names_the_path(payload: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidValue) as info:
        norm_user(payload)
    assert f"'{where}'" in info.value.detail
    assert info.value.status == 400 and info.value.scim_type == "invalidValue"


def test_single_object_for_multi_valued_is_wrapped() -> None:
    assert norm_user(user(emails={"value": "a@x"}))["emails"] == [{"value": "a@x"}]


def test_binary_and_reference() -> None:
    out = norm_user(user(x509Certificates=[{"value": "TUlJ\nQ0FB"}], profileUrl="https://x/a"))
    assert out["x509Certificates"] == [{"value": "TUlJ\nQ0FB"}]
    assert out["profileUrl"] == "https://x/a"


def test_datetime_validation() -> None:
    meta_ok = {"created": "2008-01-23T04:56:22Z", "lastModified": "2024-02-29T23:59:59.123+01:00"}
    assert norm_user(user(meta=meta_ok), mode="patch-result")["meta"] == meta_ok
    for bad in ("2008-01-23", "2008-13-23T04:56:22Z", "2008-01-23T04:56:22", "yesterday", 5):
        with pytest.raises(InvalidValue, match=r"meta\.created"):
            norm_user(user(meta={"created": bad}), mode="patch-result")


def test_integer_and_decimal_checks() -> None:
    # No integer/decimal attribute in our schemas: exercise the checks through a custom type.
    from scimgate.scim.schema import Attribute, ResourceType, Schema

    schema = Schema(
        "urn:test:1.0:Thing",
        "Thing",
        "",
        (
            Attribute("name", required=True),
            Attribute("count", type="integer"),
            Attribute("ratio", type="decimal"),
        ),
    )
    rtype = ResourceType("Thing", "/Things", schema)
    assert normalise({"name": "a", "count": 3, "ratio": 0.5}, rtype, mode="create")["count"] == 3
    for bad in (
        {"count": True},
        {"count": 1.5},
        {"count": "3"},
        {"ratio": "1"},
        {"ratio": False},
        {"ratio": float("nan")},
    ):
        with pytest.raises(InvalidValue):
            normalise({"name": "a", **bad}, rtype, mode="create")


# --- limits and primary ------------------------------------------------------------------------


def test_string_limits_per_attribute() -> None:
    """Bounds in characters (issue 8: 256 for names an IdP matches on, 1024 for other
    strings, 2048 for references, 16384 for binary); the old bound was 64 KiB for all."""
    cases = [
        ({"userName": "x" * 256}, {"userName": "x" * 257}),
        (user(displayName="é" * 256), user(displayName="é" * 257)),
        (user(externalId="x" * 256), user(externalId="x" * 257)),
        (user(emails=[{"value": "x" * 256}]), user(emails=[{"value": "x" * 257}])),
        (user(title="x" * MAX_CHARS["string"]), user(title="x" * (MAX_CHARS["string"] + 1))),
        (user(name={"givenName": "x" * 1024}), user(name={"givenName": "x" * 1025})),
        (user(profileUrl="x" * 2048), user(profileUrl="x" * 2049)),
        (user(**{ENT: {"manager": {"value": "m" * 256}}}), user(**{ENT: {"manager": "m" * 257}})),
    ]
    for ok, too_long in cases:
        norm_user(ok)
        with pytest.raises(InvalidValue, match="longer than"):
            norm_user(too_long)
    normalise({"displayName": "g" * 256}, GROUP_TYPE, mode="create")
    with pytest.raises(InvalidValue, match="longer than 256"):
        normalise({"displayName": "g" * 257}, GROUP_TYPE, mode="create")
    with pytest.raises(InvalidValue, match="longer than 256"):
        normalise(
            {"displayName": "g", "members": [{"value": "i" * 257}]}, GROUP_TYPE, mode="create"
        )


@pytest.mark.parametrize("bad", ["\ud800", "a\udfffb", "\udbff\udbff", "nul\x00"])
def test_strings_must_be_well_formed_and_free_of_nul(bad: str) -> None:
    for payload in (
        {"userName": bad},
        user(displayName=bad),
        user(externalId=bad),
        user(emails=[{"value": bad}]),
        user(name={"givenName": bad}),
    ):
        with pytest.raises(InvalidValue, match=r"surrogate|NUL"):
            norm_user(payload)
    with pytest.raises(InvalidValue, match=r"surrogate|NUL"):
        normalise({"displayName": bad}, GROUP_TYPE, mode="create")
    # an escaped surrogate pair decodes to one astral character, which is fine
    assert norm_user({"userName": json.loads('"\\ud83d\\ude00"')})["userName"] == "😀"


def test_multi_valued_limit_but_members_unbounded() -> None:
    emails = [{"value": f"{i}@x"} for i in range(MAX_MULTI_VALUES)]
    norm_user(user(emails=emails))
    with pytest.raises(InvalidValue, match="more than 200"):
        norm_user(user(emails=[*emails, {"value": "z@x"}]))
    members = [{"value": f"u{i}"} for i in range(MAX_MULTI_VALUES * 3)]
    out = normalise({"displayName": "big", "members": members}, GROUP_TYPE, mode="create")
    assert len(out["members"]) == MAX_MULTI_VALUES * 3


def test_at_most_one_primary() -> None:
    with pytest.raises(InvalidValue, match="primary"):
        norm_user(user(emails=[{"value": "a", "primary": True}, {"value": "b", "primary": "True"}]))
    norm_user(user(emails=[{"value": "a", "primary": True}, {"value": "b", "primary": False}]))


# --- members ---------------------------------------------------------------------------------


def test_members_normalised_and_split() -> None:
    out = normalise(
        {
            "displayName": "G",
            "members": [
                {"value": "u1", "$ref": None, "display": "Alice"},
                {"value": "g2", "type": "group"},
            ],
        },
        GROUP_TYPE,
        mode="create",
    )
    assert out["members"] == [{"value": "u1", "display": "Alice"}, {"value": "g2", "type": "Group"}]
    rest, members = split_members(out)
    assert "members" not in rest
    assert members == (Member("u1"), Member("g2", "Group"))


@pytest.mark.parametrize(
    "member",
    [
        {"display": "no value"},
        {"value": ""},
        {"value": "u", "type": "Robot"},
        {"value": "u", "x": 1},
        "u1",
    ],
)
def test_bad_members(member: Any) -> None:
    with pytest.raises(InvalidValue, match="members"):
        normalise({"displayName": "G", "members": [member]}, GROUP_TYPE, mode="create")


# --- projection --------------------------------------------------------------------------------

FULL = {
    "schemas": [USER_SCHEMA, ENT],
    "id": "u1",
    "externalId": "e1",
    "userName": "alice",
    "name": {"givenName": "Alice", "familyName": "Liddell"},
    "emails": [{"value": "a@x", "type": "work", "primary": True}, {"value": "b@x"}],
    "active": True,
    ENT: {"employeeNumber": "7", "manager": {"value": "m"}},
    "meta": {"resourceType": "User", "version": 'W/"1"'},
}


def test_project_default_is_everything() -> None:
    assert project(FULL, USER_TYPE, None, None) == FULL


def test_project_attributes() -> None:
    out = project(FULL, USER_TYPE, ["userName", "NAME.givenName", "emails.value"], None)
    assert out == {
        "schemas": FULL["schemas"],
        "id": "u1",
        "userName": "alice",
        "name": {"givenName": "Alice"},
        "emails": [{"value": "a@x"}, {"value": "b@x"}],
        "meta": FULL["meta"],
    }


def test_project_attributes_urn() -> None:
    out = project(
        FULL,
        USER_TYPE,
        [f"{ENT}:manager", "urn:ietf:params:scim:schemas:core:2.0:User:active"],
        None,
    )
    assert out == {
        "schemas": FULL["schemas"],
        "id": "u1",
        "active": True,
        ENT: {"manager": {"value": "m"}},
        "meta": FULL["meta"],
    }
    out = project(FULL, USER_TYPE, [ENT], None)
    assert out[ENT] == FULL[ENT] and "userName" not in out


def test_project_excluded() -> None:
    out = project(
        FULL, USER_TYPE, None, ["emails", "name.familyName", "id", f"{ENT}:employeeNumber", "meta"]
    )
    assert out == {
        "schemas": FULL["schemas"],
        "id": "u1",
        "externalId": "e1",
        "userName": "alice",
        "name": {"givenName": "Alice"},
        "active": True,
        ENT: {"manager": {"value": "m"}},
    }


def test_project_excluded_members() -> None:
    group = {"schemas": [GROUP_SCHEMA], "id": "g", "displayName": "G", "members": [{"value": "u1"}]}
    assert "members" not in project(group, GROUP_TYPE, None, ["members"])
    assert project(group, GROUP_TYPE, ["members.value"], None)["members"] == [{"value": "u1"}]


def test_project_never_and_unknown() -> None:
    out = project({**FULL, "password": "secret"}, USER_TYPE, ["password", "bogus.path"], None)
    assert out == {"schemas": FULL["schemas"], "id": "u1", "meta": FULL["meta"]}


def test_project_both_lists() -> None:
    out = project(FULL, USER_TYPE, ["name", "userName"], ["name.givenName"])
    assert out["name"] == {"familyName": "Liddell"} and out["userName"] == "alice"


def test_project_request_only_attribute() -> None:
    from scimgate.scim.schema import Attribute, ResourceType, Schema

    schema = Schema(
        "urn:test:1.0:Thing",
        "Thing",
        "",
        (Attribute("name"), Attribute("secretish", returned="request")),
    )
    rtype = ResourceType("Thing", "/Things", schema)
    thing = {"schemas": [schema.id], "name": "n", "secretish": "s"}
    assert "secretish" not in project(thing, rtype, None, None)
    assert project(thing, rtype, ["secretish"], None)["secretish"] == "s"


def test_project_rejects_non_string_names() -> None:
    with pytest.raises(InvalidValue):
        project(FULL, USER_TYPE, [5], None)  # type: ignore[list-item]


def test_project_comma_separated_and_blank_names() -> None:
    out = project(FULL, USER_TYPE, ["userName, active", " "], None)
    assert out == {
        "schemas": FULL["schemas"],
        "id": "u1",
        "userName": "alice",
        "active": True,
        "meta": FULL["meta"],
    }


_attr_names = st.sampled_from(
    [
        "userName",
        "name",
        "name.givenName",
        "emails.value",
        "emails",
        "id",
        "meta",
        "meta.version",
        "members",
        "members.display",
        ENT,
        f"{ENT}:manager.value",
        "nope",
        "",
        "a,b",
        "schemas",
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.none() | st.lists(_attr_names, max_size=4), st.none() | st.lists(_attr_names, max_size=4))
def test_project_never_fails_and_keeps_id(attrs: list[str] | None, excl: list[str] | None) -> None:
    out = project(FULL, USER_TYPE, attrs, excl)
    assert out["id"] == "u1" and out["schemas"] == FULL["schemas"]
    assert "password" not in out


# --- property: arbitrary JSON raises only ScimError ----------------------------------------

_names = st.sampled_from(
    [
        "userName",
        "name",
        "emails",
        "active",
        "members",
        "displayName",
        "schemas",
        "meta",
        "id",
        "x509Certificates",
        ENT,
        "givenName",
        "value",
        "primary",
        "type",
        "manager",
        "$ref",
        "employeeNumber",
        f"{ENT}:manager",
        "groups",
        "password",
    ]
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(_names | st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(
    _json,
    st.sampled_from(["create", "replace", "patch-result"]),
    st.sampled_from([USER_TYPE, GROUP_TYPE]),
)
def test_arbitrary_json_raises_only_scim_errors(payload: Any, mode: str, rtype: Any) -> None:
    try:
        out = normalise(payload, rtype, mode=mode)
    except ScimError:
        return
    json.dumps(out)  # output is plain JSON
    assert normalise(out, rtype, mode="patch-result") == out  # idempotent

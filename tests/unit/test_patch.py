"""scim.patch: the PATCH engine (RFC 7644 §3.5.2), with the bodies Entra ID and Okta send."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from scimgate.scim.errors import (
    InvalidPath,
    InvalidSyntax,
    InvalidValue,
    Mutability,
    NoTarget,
    ScimError,
    TooMany,
)
from scimgate.scim.filter import Compare, Or
from scimgate.scim.patch import MAX_OPERATIONS, Member, PatchResult, apply_patch
from scimgate.scim.schema import (
    ENTERPRISE_USER_SCHEMA,
    GROUP_SCHEMA,
    GROUP_TYPE,
    PATCH_OP_SCHEMA,
    USER_SCHEMA,
    USER_TYPE,
)

ENT = ENTERPRISE_USER_SCHEMA

USER: dict[str, Any] = {
    "schemas": [USER_SCHEMA],
    "id": "u1",
    "externalId": "e1",
    "userName": "alice@example.com",
    "name": {"givenName": "Alice", "familyName": "Liddell"},
    "displayName": "Alice",
    "active": True,
    "emails": [{"value": "alice@home.example", "type": "home"}],
}
GROUP: dict[str, Any] = {"schemas": [GROUP_SCHEMA], "id": "g1", "displayName": "Engineering"}


def body(*ops: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP_SCHEMA], "Operations": list(ops)}


def patch_user(*ops: dict[str, Any], resource: dict[str, Any] | None = None) -> PatchResult:
    return apply_patch(resource or USER, body(*ops), USER_TYPE)


def patch_group(*ops: dict[str, Any]) -> PatchResult:
    return apply_patch(GROUP, body(*ops), GROUP_TYPE)


# --- Entra ID ------------------------------------------------------------------------------


def test_entra_default_user_patch() -> None:
    result = patch_user(
        {"op": "Replace", "path": "displayName", "value": "Pvlo"},
        {
            "op": "Replace",
            "path": 'emails[type eq "work"].value',
            "value": "TestBcwqnm@test.microsoft.com",
        },
        {"op": "Replace", "path": "name.givenName", "value": "Gtfd"},
        {"op": "Replace", "path": f"{ENT}:employeeNumber", "value": "Eqpj"},
    )
    r = result.resource
    assert result.changed
    assert r["displayName"] == "Pvlo"
    assert r["name"] == {"givenName": "Gtfd", "familyName": "Liddell"}
    assert r["emails"] == [
        {"value": "alice@home.example", "type": "home"},
        {"value": "TestBcwqnm@test.microsoft.com", "type": "work"},
    ]
    assert r[ENT] == {"employeeNumber": "Eqpj"}
    assert r["schemas"] == [USER_SCHEMA, ENT]
    assert r["id"] == "u1"


def test_entra_work_email_replaced_when_present() -> None:
    resource = {**USER, "emails": [{"value": "old@w", "type": "work", "primary": True}]}
    result = patch_user(
        {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "new@w"},
        resource=resource,
    )
    assert result.resource["emails"] == [{"value": "new@w", "type": "work", "primary": True}]


def test_entra_add_on_filtered_path_creates() -> None:
    result = patch_user(
        {"op": "Add", "path": 'phoneNumbers[type eq "mobile"].value', "value": "+1 555"}
    )
    assert result.resource["phoneNumbers"] == [{"value": "+1 555", "type": "mobile"}]


def test_filter_without_type_eq_and_no_match_is_no_target() -> None:
    with pytest.raises(NoTarget):
        patch_user({"op": "replace", "path": 'emails[value eq "nobody@x"].type', "value": "work"})
    with pytest.raises(NoTarget):
        patch_user({"op": "replace", "path": 'emails[type co "wor"].value', "value": "x"})


@pytest.mark.parametrize(
    "value,expected", [("False", False), ("True", True), (False, False), ("false", False)]
)
def test_entra_active_flag_and_no_flag(value: Any, expected: bool) -> None:
    op = "Replace" if isinstance(value, str) else "replace"
    result = patch_user({"op": op, "path": "active", "value": value})
    assert result.resource["active"] is expected
    assert result.changed is (expected is False)


def test_entra_pathless_dotted_and_urn_keys() -> None:
    result = patch_user(
        {
            "op": "replace",
            "value": {
                "displayName": "Bjfe",
                "name.givenName": "Kkom",
                "name.familyName": "Unua",
                f"{ENT}:employeeNumber": "Aklq",
            },
        }
    )
    r = result.resource
    assert r["displayName"] == "Bjfe"
    assert r["name"] == {"givenName": "Kkom", "familyName": "Unua"}
    assert r[ENT] == {"employeeNumber": "Aklq"}


def test_pathless_urn_key_with_object_merges_extension() -> None:
    resource = {**USER, ENT: {"department": "R&D", "employeeNumber": "1"}}
    result = patch_user(
        {"op": "replace", "value": {ENT: {"employeeNumber": "2"}}}, resource=resource
    )
    assert result.resource[ENT] == {"employeeNumber": "2", "department": "R&D"}


def test_entra_manager_bare_string() -> None:
    result = patch_user({"op": "Add", "path": f"{ENT}:manager", "value": "boss-id"})
    assert result.resource[ENT] == {"manager": {"value": "boss-id"}}
    again = patch_user(
        {"op": "Add", "path": f"{ENT}:manager", "value": "boss-id"}, resource=result.resource
    )
    assert not again.changed


def test_entra_group_member_add_with_null_ref() -> None:
    result = patch_group(
        {"op": "Add", "path": "members", "value": [{"$ref": None, "value": "f648f8d5ea4e4cd38e9c"}]}
    )
    assert result.members_add == (Member("f648f8d5ea4e4cd38e9c"),)
    assert not result.changed and "members" not in result.resource


def test_entra_group_member_remove_value_array() -> None:
    result = patch_group(
        {
            "op": "Remove",
            "path": "members",
            "value": [{"$ref": None, "value": "f648f8d5ea4e4cd38e9c"}],
        }
    )
    assert result.members_remove == ("f648f8d5ea4e4cd38e9c",)
    assert result.members_replace is None


def test_entra_group_member_remove_flag_form() -> None:
    result = patch_group({"op": "remove", "path": 'members[value eq "7f4bc1a3"]'})
    assert result.members_remove == ("7f4bc1a3",)
    assert result.members_remove_filter is None


def test_entra_group_rename_and_many_member_ops() -> None:
    result = patch_group(
        {"op": "Replace", "path": "displayName", "value": "Eng 2"},
        {"op": "Add", "path": "members", "value": [{"value": "a"}]},
        {"op": "Add", "path": "members", "value": [{"value": "b"}]},
        {"op": "Remove", "path": "members", "value": [{"value": "c"}]},
    )
    assert result.changed and result.resource["displayName"] == "Eng 2"
    assert result.members_add == (Member("a"), Member("b"))
    assert result.members_remove == ("c",)


# --- Okta ----------------------------------------------------------------------------------


def test_okta_deactivate_pathless() -> None:
    result = apply_patch(
        USER,
        {
            "schemas": [PATCH_OP_SCHEMA],
            "Operations": [{"op": "replace", "value": {"active": False}}],
        },
        USER_TYPE,
    )
    assert result.resource["active"] is False and result.changed
    again = apply_patch(
        result.resource,
        {
            "schemas": [PATCH_OP_SCHEMA],
            "Operations": [{"op": "replace", "value": {"active": False}}],
        },
        USER_TYPE,
    )
    assert not again.changed


def test_okta_group_rename_with_id() -> None:
    result = apply_patch(
        GROUP,
        {
            "schemas": [PATCH_OP_SCHEMA],
            "Operations": [{"op": "replace", "value": {"id": "g1", "displayName": "Test SCIMv2"}}],
        },
        GROUP_TYPE,
    )
    assert result.resource["displayName"] == "Test SCIMv2" and result.resource["id"] == "g1"
    same = patch_group({"op": "replace", "value": {"id": "g1", "displayName": "Engineering"}})
    assert not same.changed  # Okta repeats the rename with every membership update


def test_okta_group_rename_with_other_id_is_mutability() -> None:
    with pytest.raises(Mutability, match="id"):
        patch_group({"op": "replace", "value": {"id": "other", "displayName": "x"}})
    with pytest.raises(Mutability):
        patch_group({"op": "replace", "path": "id", "value": "other"})


def test_okta_membership_remove_and_add() -> None:
    result = patch_group(
        {"op": "remove", "path": 'members[value eq "89bb1940"]'},
        {
            "op": "add",
            "path": "members",
            "value": [{"value": "23a35c27", "display": "test.user@okta.local"}],
        },
    )
    assert result.members_remove == ("89bb1940",)
    assert result.members_add == (Member("23a35c27"),)
    assert not result.changed


def test_okta_full_push_replace() -> None:
    result = patch_group(
        {
            "op": "replace",
            "path": "members",
            "value": [{"value": "a", "display": "A"}, {"value": "b"}, {"value": "a"}],
        }
    )
    assert result.members_replace == (Member("a"), Member("b"))


def test_okta_password_sync_accepted_and_dropped() -> None:
    result = patch_user({"op": "replace", "value": {"password": "n3w"}})
    assert not result.changed and "password" not in result.resource


# --- membership composition ----------------------------------------------------------------


def test_add_then_remove_same_id_is_net_remove() -> None:
    result = patch_group(
        {"op": "add", "path": "members", "value": [{"value": "x"}]},
        {"op": "remove", "path": 'members[value eq "x"]'},
    )
    assert result.members_add == () and result.members_remove == ("x",)


def test_remove_then_add_same_id_is_net_add() -> None:
    result = patch_group(
        {"op": "remove", "path": 'members[value eq "x"]'},
        {"op": "add", "path": "members", "value": {"value": "x"}},
    )
    assert result.members_add == (Member("x"),) and result.members_remove == ()


def test_remove_all_without_value() -> None:
    result = patch_group({"op": "remove", "path": "members"})
    assert result.members_replace == ()


def test_replace_folds_later_ops() -> None:
    result = patch_group(
        {"op": "replace", "path": "members", "value": [{"value": "a"}, {"value": "b"}]},
        {"op": "add", "path": "members", "value": [{"value": "c", "type": "Group"}]},
        {"op": "remove", "path": 'members[value eq "a"]'},
    )
    assert result.members_replace == (Member("b"), Member("c", "Group"))
    assert result.members_add == () and result.members_remove == ()


def test_ops_before_replace_are_discarded() -> None:
    result = patch_group(
        {"op": "add", "path": "members", "value": [{"value": "a"}]},
        {"op": "remove", "path": 'members[value eq "z"]'},
        {"op": "replace", "path": "members", "value": []},
    )
    assert result.members_replace == ()
    assert result.members_add == () and result.members_remove == ()


def test_complex_member_filter_goes_to_the_store() -> None:
    result = patch_group({"op": "remove", "path": 'members[type eq "Group"]'})
    assert result.members_remove_filter == Compare("type", "eq", "Group")
    assert result.members_remove == () and result.members_replace is None


def test_member_filter_applies_to_pending_adds() -> None:
    result = patch_group(
        {
            "op": "add",
            "path": "members",
            "value": [{"value": "u1", "display": "xavier"}, {"value": "u2", "display": "bob"}],
        },
        {"op": "remove", "path": 'members[display co "x"]'},
        {"op": "remove", "path": 'members[type eq "Group"]'},
        {"op": "add", "path": "members", "value": [{"value": "u3", "display": "xena"}]},
    )
    assert result.members_add == (Member("u2"), Member("u3"))
    assert result.members_remove_filter == Or(
        Compare("display", "co", "x"), Compare("type", "eq", "Group")
    )


def test_pathless_members() -> None:
    added = patch_group({"op": "add", "value": {"members": [{"value": "a"}]}})
    assert added.members_add == (Member("a"),)
    replaced = patch_group(
        {"op": "replace", "value": {"displayName": "X", "members": [{"value": "b"}]}}
    )
    assert replaced.members_replace == (Member("b"),) and replaced.changed


def test_member_errors() -> None:
    with pytest.raises(Mutability):
        patch_group({"op": "replace", "path": 'members[value eq "a"].display', "value": "x"})
    with pytest.raises(InvalidPath):
        patch_group({"op": "add", "path": 'members[value eq "a"]', "value": {"value": "a"}})
    with pytest.raises(InvalidValue, match="member"):
        patch_group({"op": "add", "path": "members", "value": [{"display": "no id"}]})
    with pytest.raises(InvalidValue):
        patch_group({"op": "add", "path": "members", "value": ["bare-id"]})


def test_members_in_input_resource_are_ignored() -> None:
    result = apply_patch(
        {**GROUP, "members": [{"value": "a"}]},
        body({"op": "replace", "path": "displayName", "value": "Engineering"}),
        GROUP_TYPE,
    )
    assert "members" not in result.resource and not result.changed


# --- add -------------------------------------------------------------------------------------


def test_add_multi_valued_appends_and_skips_duplicates() -> None:
    new = {"value": "a@w", "type": "work"}
    result = patch_user({"op": "add", "path": "emails", "value": [new]})
    assert result.resource["emails"] == [*USER["emails"], new]
    again = patch_user(
        {"op": "add", "path": "emails", "value": [{"Value": "a@w", "type": "work"}]},
        resource=result.resource,
    )
    assert not again.changed  # RFC 7644 §3.5.2.1: no duplicate, no modification


def test_add_primary_clears_other_primary() -> None:
    resource = {**USER, "emails": [{"value": "h@x", "type": "home", "primary": True}]}
    result = patch_user(
        {
            "op": "add",
            "path": "emails",
            "value": [{"value": "w@x", "type": "work", "primary": True}],
        },
        resource=resource,
    )
    assert result.resource["emails"] == [
        {"value": "h@x", "type": "home", "primary": False},
        {"value": "w@x", "type": "work", "primary": True},
    ]


def test_two_primaries_in_one_value_rejected() -> None:
    with pytest.raises(InvalidValue, match="primary"):
        patch_user(
            {
                "op": "add",
                "path": "emails",
                "value": [{"value": "a", "primary": True}, {"value": "b", "primary": True}],
            }
        )


def test_add_single_valued_sets_and_complex_merges() -> None:
    result = patch_user(
        {"op": "add", "path": "title", "value": "Eng"},
        {"op": "add", "path": "name", "value": {"middleName": "M"}},
    )
    assert result.resource["title"] == "Eng"
    assert result.resource["name"] == {
        "familyName": "Liddell",
        "givenName": "Alice",
        "middleName": "M",
    }


def test_add_pathless_merges() -> None:
    result = patch_user({"op": "add", "value": {"nickName": "Al", "emails": [{"value": "x@w"}]}})
    assert result.resource["nickName"] == "Al"
    assert len(result.resource["emails"]) == 2


def test_add_null_is_noop() -> None:
    assert not patch_user({"op": "add", "path": "title", "value": None}).changed


def test_add_to_filter_match_merges() -> None:
    result = patch_user({"op": "add", "path": 'emails[type eq "home"]', "value": {"primary": True}})
    assert result.resource["emails"] == [
        {"value": "alice@home.example", "type": "home", "primary": True}
    ]


# --- replace --------------------------------------------------------------------------------


def test_replace_complex_keeps_unspecified_sub_attributes() -> None:
    result = patch_user({"op": "replace", "path": "name", "value": {"givenName": "Al"}})
    assert result.resource["name"] == {"givenName": "Al", "familyName": "Liddell"}
    cleared = patch_user({"op": "replace", "path": "name", "value": {"givenName": None}})
    assert cleared.resource["name"] == {"familyName": "Liddell"}


def test_replace_multi_valued_replaces_all() -> None:
    result = patch_user({"op": "replace", "path": "emails", "value": [{"value": "n@x"}]})
    assert result.resource["emails"] == [{"value": "n@x"}]


def test_replace_filter_match_replaces_element() -> None:
    result = patch_user(
        {
            "op": "replace",
            "path": 'emails[type eq "home"]',
            "value": {"value": "h2@x", "type": "other"},
        }
    )
    assert result.resource["emails"] == [{"value": "h2@x", "type": "other"}]


def test_replace_null_unassigns() -> None:
    result = patch_user({"op": "replace", "path": "displayName", "value": None})
    assert "displayName" not in result.resource


def test_replace_sub_on_multi_valued_sets_all() -> None:
    result = patch_user({"op": "replace", "path": "emails.type", "value": "other"})
    assert result.resource["emails"] == [{"value": "alice@home.example", "type": "other"}]
    with pytest.raises(NoTarget):
        patch_user({"op": "replace", "path": "phoneNumbers.value", "value": "1"})


def test_replace_same_value_is_unchanged() -> None:
    result = patch_user(
        {"op": "Replace", "path": "userName", "value": "alice@example.com"},
        {"op": "replace", "path": "active", "value": "True"},
    )
    assert not result.changed


def test_replace_whole_extension_path() -> None:
    result = patch_user({"op": "replace", "path": ENT, "value": {"department": "Ops"}})
    assert result.resource[ENT] == {"department": "Ops"}
    removed = patch_user({"op": "remove", "path": ENT}, resource=result.resource)
    assert ENT not in removed.resource and removed.resource["schemas"] == [USER_SCHEMA]


# --- remove (RFC 7644 §3.5.2.2) --------------------------------------------------------------


def test_remove_without_path_is_no_target() -> None:
    with pytest.raises(NoTarget):
        patch_user({"op": "remove"})
    with pytest.raises(NoTarget):
        patch_user({"op": "remove", "path": ""})


def test_remove_attribute_sub_and_filter() -> None:
    resource = {**USER, "emails": [{"value": "a", "type": "work"}, {"value": "b", "type": "home"}]}
    assert "displayName" not in patch_user({"op": "remove", "path": "displayName"}).resource
    assert patch_user({"op": "remove", "path": "name.givenName"}).resource["name"] == {
        "familyName": "Liddell"
    }
    assert patch_user(
        {"op": "remove", "path": 'emails[type eq "work"]'}, resource=resource
    ).resource["emails"] == [{"value": "b", "type": "home"}]
    assert patch_user(
        {"op": "remove", "path": 'emails[type eq "work"].type'}, resource=resource
    ).resource["emails"] == [{"value": "a"}, {"value": "b", "type": "home"}]
    assert (
        "emails"
        not in patch_user({"op": "remove", "path": "emails[type pr]"}, resource=resource).resource
    )


def test_remove_multi_valued_with_value_list() -> None:
    resource = {**USER, "emails": [{"value": "a", "type": "work"}, {"value": "b"}]}
    result = patch_user(
        {"op": "remove", "path": "emails", "value": [{"value": "a"}]}, resource=resource
    )
    assert result.resource["emails"] == [{"value": "b"}]


def test_remove_absent_is_noop() -> None:
    assert not patch_user({"op": "remove", "path": "title"}).changed
    assert not patch_user({"op": "remove", "path": 'emails[type eq "work"]'}).changed
    assert not patch_user({"op": "remove", "path": f"{ENT}:manager"}).changed


@pytest.mark.parametrize("path", ["userName", "USERNAME"])
def test_remove_required_is_invalid_value(path: str) -> None:
    with pytest.raises(InvalidValue, match="required"):
        patch_user({"op": "remove", "path": path})
    with pytest.raises(InvalidValue, match="required"):
        patch_user({"op": "replace", "path": path, "value": None})


def test_remove_required_group_display_name() -> None:
    with pytest.raises(InvalidValue, match="required"):
        patch_group({"op": "remove", "path": "displayName"})


# --- mutability -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op",
    [
        {"op": "replace", "path": "meta.version", "value": 'W/"9"'},
        {"op": "replace", "value": {"meta": {"resourceType": "User"}}},
        {"op": "add", "path": "groups", "value": [{"value": "g1"}]},
        {"op": "remove", "path": "id"},
        {"op": "replace", "path": f"{ENT}:manager.displayName", "value": "Boss"},
    ],
)
def test_read_only_is_mutability(op: dict[str, Any]) -> None:
    with pytest.raises(Mutability) as info:
        patch_user(op)
    assert info.value.status == 400 and info.value.scim_type == "mutability"


def test_same_id_by_path_is_accepted() -> None:
    assert not patch_user({"op": "replace", "path": "id", "value": "u1"}).changed


# --- message validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_body",
    [
        [],
        "x",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Other"],
            "Operations": [{"op": "add", "path": "title", "value": "x"}],
        },
        {"schemas": 5, "Operations": [{"op": "add", "path": "title", "value": "x"}]},
        {"schemas": [PATCH_OP_SCHEMA]},
        {"schemas": [PATCH_OP_SCHEMA], "Operations": []},
        {"schemas": [PATCH_OP_SCHEMA], "Operations": {"op": "add"}},
        {"schemas": [PATCH_OP_SCHEMA], "Operations": ["add"]},
        {"schemas": [PATCH_OP_SCHEMA], "Operations": [{"op": "move", "path": "title"}]},
        {"schemas": [PATCH_OP_SCHEMA], "Operations": [{"path": "title", "value": "x"}]},
    ],
)
def test_invalid_syntax(bad_body: Any) -> None:
    with pytest.raises(InvalidSyntax):
        apply_patch(USER, bad_body, USER_TYPE)


def test_tolerated_message_shapes() -> None:
    lower = {
        "schemas": [PATCH_OP_SCHEMA.upper()],
        "operations": [{"OP": "ADD", "Path": "title", "Value": "x"}],
    }
    assert apply_patch(USER, lower, USER_TYPE).resource["title"] == "x"
    no_schemas = {"Operations": [{"op": "replace", "value": {"active": False}}]}
    assert apply_patch(USER, no_schemas, USER_TYPE).resource["active"] is False


def test_too_many_operations() -> None:
    ops = [{"op": "replace", "path": "title", "value": str(i)} for i in range(MAX_OPERATIONS)]
    assert apply_patch(USER, body(*ops), USER_TYPE).resource["title"] == str(MAX_OPERATIONS - 1)
    with pytest.raises(TooMany):
        apply_patch(USER, body(*ops, ops[0]), USER_TYPE)


def test_missing_value() -> None:
    with pytest.raises(InvalidValue, match="needs a value"):
        patch_user({"op": "add", "path": "title"})
    with pytest.raises(InvalidValue, match="object"):
        patch_user({"op": "replace", "value": "x"})


@pytest.mark.parametrize(
    "path",
    [
        "nickname2",
        "name.nick",
        'displayName[value eq "x"]',
        "emails[type eq",
        "urn:example:x:1.0:User:foo",
        'emails[type eq "x"].nope',
    ],
)
def test_invalid_path(path: str) -> None:
    with pytest.raises(InvalidPath):
        patch_user({"op": "replace", "path": path, "value": "x"})


def test_path_not_a_string() -> None:
    with pytest.raises(InvalidPath):
        patch_user({"op": "replace", "path": 5, "value": "x"})


def test_wrong_type_names_operation_and_attribute() -> None:
    with pytest.raises(InvalidValue) as info:
        patch_user(
            {"op": "add", "path": "title", "value": "ok"},
            {"op": "replace", "path": "active", "value": "maybe"},
        )
    assert info.value.detail.startswith("operation 1 (replace):")
    assert "'active'" in info.value.detail


def test_pathless_unknown_key() -> None:
    with pytest.raises(InvalidValue, match="shoeSize"):
        patch_user({"op": "replace", "value": {"shoeSize": 44}})


def test_input_is_not_mutated_and_failure_is_atomic() -> None:
    resource = copy.deepcopy(USER)
    with pytest.raises(InvalidValue):
        apply_patch(
            resource,
            body(
                {"op": "replace", "path": "displayName", "value": "new"},
                {"op": "remove", "path": "userName"},
            ),
            USER_TYPE,
        )
    apply_patch(
        resource,
        body(
            {"op": "add", "path": "emails", "value": [{"value": "z"}]},
            {"op": "replace", "path": "name.givenName", "value": "Z"},
        ),
        USER_TYPE,
    )
    assert resource == USER


# --- property: arbitrary bodies raise only ScimError ------------------------------------------

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
_keys = st.sampled_from(
    [
        "userName",
        "name",
        "name.givenName",
        "emails",
        "active",
        "members",
        "displayName",
        "id",
        "meta",
        "value",
        "type",
        "primary",
        "display",
        "manager",
        "schemas",
        ENT,
        f"{ENT}:manager",
        "password",
        "groups",
    ]
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(_keys | st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=15,
)
_paths = st.sampled_from(
    [
        "userName",
        "name",
        "name.givenName",
        "emails",
        'emails[type eq "work"].value',
        'emails[type eq "work"]',
        "emails[value pr]",
        "emails.value",
        "active",
        "members",
        'members[value eq "a"]',
        'members[display co "x"]',
        "members.value",
        "id",
        "meta",
        f"{ENT}:manager",
        f"{ENT}:manager.value",
        ENT,
        "displayName",
        "emails[",
        "x.y.z",
        "",
        'emails[type eq "work" and primary eq true].primary',
        "title",
    ]
) | st.text(max_size=12)
_ops = st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "Replace", "remove", "bogus"])},
    optional={"path": _paths | _json, "value": _json},
)
_bodies = st.one_of(
    _json,
    st.fixed_dictionaries(
        {"schemas": st.just([PATCH_OP_SCHEMA]), "Operations": st.lists(_ops | _json, max_size=5)}
    ),
)


@settings(max_examples=500, deadline=None)
@given(_bodies, st.sampled_from([USER_TYPE, GROUP_TYPE]))
def test_arbitrary_bodies_raise_only_scim_errors(patch_body: Any, rtype: Any) -> None:
    resource = USER if rtype is USER_TYPE else GROUP
    try:
        result = apply_patch(resource, patch_body, rtype)
    except ScimError:
        return
    json.dumps(result.resource)
    assert result.resource["id"] == resource["id"]

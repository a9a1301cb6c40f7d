"""SCIM filters compiled to SQL (store/filter_sql.py), run on a real SQLite file and a real
PostgreSQL database with the same data; every case states the exact ids it must return.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, insert, select

from scimgate.scim.errors import InvalidFilter, InvalidValue
from scimgate.scim.filter import parse_filter
from scimgate.scim.filter_match import matches
from scimgate.scim.schema import (
    COMMON_ATTRIBUTES,
    ENTERPRISE_USER_SCHEMA,
    GROUP_TYPE,
    USER,
    USER_TYPE,
    Attribute,
)
from scimgate.store import tables
from scimgate.store.filter_sql import compile_filter
from scimgate.store.sort_sql import order_by, sort_key

ENT = ENTERPRISE_USER_SCHEMA
CORE = "urn:ietf:params:scim:schemas:core:2.0:User"


def _user(
    n: int,
    user_name: str,
    *,
    active: bool = True,
    display: str | None = None,
    external: str | None = None,
    **attrs: Any,
) -> dict[str, Any]:
    return {
        "id": f"u{n:02d}",
        "user_name": user_name,
        "user_name_lower": user_name.lower(),
        "external_id": external,
        "active": active,
        "display_name": display,
        "attrs": {"userName": user_name, **attrs},
        "created": f"2024-01-{n:02d}T10:00:00.000000Z",
        "last_modified": f"2024-02-{n:02d}T10:00:00.000000Z",
    }


USERS = [
    _user(
        1,
        "bjensen",
        display="Barbara Jensen",
        external="EXT-1",
        name={"givenName": "Barbara", "familyName": "Jensen"},
        emails=[
            {"value": "bjensen@example.com", "type": "work", "primary": True},
            {"value": "babs@jensen.org", "type": "home"},
        ],
        title="Tour Guide",
        userType="Employee",
        **{
            ENT: {
                "employeeNumber": "701984",
                "department": "Tour Operations",
                "manager": {"value": "u02"},
            }
        },
    ),
    _user(
        2,
        "JSmith",
        active=False,
        display="John Smith",
        external="ext-1",
        name={"givenName": "John", "familyName": "Smith"},
        emails=[{"value": "John.Smith@Example.COM", "type": "work"}],
        userType="Contractor",
        **{ENT: {"employeeNumber": "1002", "department": "Sales"}},
    ),
    _user(3, "alice", name={"familyName": "Zed"}, title="", nickName=None),
    _user(4, "bob_underscore", external="b4"),
    _user(5, "bobxunderscore"),
    _user(6, "100%real"),
    _user(7, "100xreal"),
    _user(8, "back\\slash"),
    _user(9, "Zoë"),
    _user(
        10,
        "carol",
        display="Carol",
        emails=[
            {"value": "x@other.com", "type": "work"},
            {"value": "y@example.com", "type": "home"},
        ],
    ),
    _user(
        11,
        "dave",
        name={"familyName": "adams"},
        emails=[
            {"value": "d2@ex.org", "type": "home"},
            {"value": "d1@ex.org", "type": "work", "primary": True},
        ],
    ),
    _user(
        12,
        "erin",
        active=False,
        title="Manager",
        phoneNumbers=[{"value": "+1 555 0100", "type": "mobile"}],
    ),
    _user(13, "frank", nickName="Thirteen", display="Ünïcode"),
    _user(14, "grace", addresses=[{"locality": "Paris", "country": "FR", "type": "work"}]),
    _user(15, "heidi", emails=[]),
    _user(16, "ivan", roles=[{"value": "admin"}], **{ENT: {"costCenter": "CC-9"}}),
    _user(17, "judy", name={"familyName": "Brown"}),
    _user(18, "mallory", userType="employee"),
    _user(19, "niaj", emails=[{"value": "NIAJ@EXAMPLE.COM"}]),
    _user(20, "olivia", external="x_y"),
]

GROUPS = [
    {"id": "g1", "display_name": "Admins", "external_id": "G-EXT"},
    {"id": "g2", "display_name": "Sales", "external_id": None},
    {"id": "g3", "display_name": "Empty", "external_id": None},
    {"id": "g4", "display_name": "Tour_Guides", "external_id": "g-ext"},
]
for _i, _g in enumerate(GROUPS, start=1):
    _g.update(
        display_name_lower=_g["display_name"].lower(),
        attrs={},
        created=f"2024-03-0{_i}T00:00:00.000000Z",
        last_modified=f"2024-04-0{_i}T00:00:00.000000Z",
    )

MEMBERS = [
    ("g1", "u01", "User"),
    ("g1", "u02", "User"),
    ("g1", "g2", "Group"),
    ("g2", "u02", "User"),
    ("g2", "u10", "User"),
    ("g4", "u01", "User"),
]

ALL_USERS = {u["id"] for u in USERS}
ALL_GROUPS = {g["id"] for g in GROUPS}


def _ids(*nums: int) -> set[str]:
    return {f"u{n:02d}" for n in nums}


# --------------------------------------------------------------------------- engines


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("filter_sql") / "scim.db"
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("pg_server").create_database()
    eng = create_engine(url)
    tables.metadata.create_all(eng)
    with eng.begin() as conn:
        conn.execute(insert(tables.users), USERS)
        conn.execute(insert(tables.groups), GROUPS)
        conn.execute(
            insert(tables.members),
            [{"group_id": g, "member_id": m, "member_type": t} for g, m, t in MEMBERS],
        )
    yield eng
    eng.dispose()


def run(engine: Engine, text: str, rtype: Any = USER_TYPE) -> set[str]:
    table = tables.users if rtype is USER_TYPE else tables.groups
    where = compile_filter(parse_filter(text), rtype, engine.dialect.name)
    with engine.connect() as conn:
        return set(conn.execute(select(table.c.id).where(where)).scalars())


# --------------------------------------------------------------------------- cases

USER_CASES: list[tuple[str, set[str]]] = [
    # userName: caseExact=false, via user_name_lower
    ('userName eq "bjensen"', _ids(1)),
    ('userName eq "BJENSEN"', _ids(1)),
    ('userName eq "jsmith"', _ids(2)),
    ('userName eq "ZOË"', _ids(9)),
    ('userName ne "bjensen"', ALL_USERS - _ids(1)),
    # LIKE escaping: "_", "%" and "\" are literal
    ('userName co "_"', _ids(4)),
    ('userName sw "bob_"', _ids(4)),
    ('userName co "%"', _ids(6)),
    ('userName sw "100%"', _ids(6)),
    ('userName co "\\\\"', _ids(8)),
    ('userName ew "SCORE"', _ids(4, 5)),
    ('userName sw "J"', _ids(2, 17)),
    ('userName co ""', ALL_USERS),
    ('userName gt "n"', _ids(9, 19, 20)),
    ('userName ge "niaj"', _ids(9, 19, 20)),
    ('userName lt "B"', _ids(3, 6, 7)),
    ('userName le "alice"', _ids(3, 6, 7)),
    # externalId: caseExact=true
    ('externalId eq "EXT-1"', _ids(1)),
    ('externalId eq "ext-1"', _ids(2)),
    ('externalId co "EXT"', _ids(1)),
    ('externalId co "xt"', _ids(2)),
    ('externalId sw "ext"', _ids(2)),
    ('externalId sw "E"', _ids(1)),
    ('externalId ew "-1"', _ids(1, 2)),
    ('externalId ew "T-1"', _ids(1)),
    ('externalId ew "longer than any value-1"', set()),
    ('externalId co "_"', _ids(20)),
    ('externalId gt "a"', _ids(2, 4, 20)),
    ('externalId lt "a"', _ids(1)),
    ("externalId pr", _ids(1, 2, 4, 20)),
    ("not (externalId pr)", ALL_USERS - _ids(1, 2, 4, 20)),
    ("externalId eq null", ALL_USERS - _ids(1, 2, 4, 20)),
    ("externalId ne null", _ids(1, 2, 4, 20)),
    ('externalId ne "EXT-1"', ALL_USERS - _ids(1)),
    # active: boolean column
    ("active eq false", _ids(2, 12)),
    ("active ne true", _ids(2, 12)),
    ("active eq true", ALL_USERS - _ids(2, 12)),
    ("active pr", ALL_USERS),
    # displayName column, caseExact=false
    ('displayName co "SMITH"', _ids(2)),
    ('displayName eq "carol"', _ids(10)),
    ("displayName pr", _ids(1, 2, 10, 13)),
    ('displayName ne "carol"', ALL_USERS - _ids(10)),
    # JSON single-valued strings
    ("title pr", _ids(1, 12)),
    ('title eq ""', _ids(3)),
    ('title ne "Tour Guide"', ALL_USERS - _ids(1)),
    ('title co "GUIDE"', _ids(1)),
    ("nickName pr", _ids(13)),
    ("nickName eq null", ALL_USERS - _ids(13)),
    ("nickName ne null", _ids(13)),
    ('userType eq "employee"', _ids(1, 18)),
    ('userType gt "d"', _ids(1, 18)),
    ('name.familyName eq "jensen"', _ids(1)),
    ('name.givenName sw "J"', _ids(2)),
    ('name.familyName lt "b"', _ids(11)),
    ('name.familyName le "BROWN"', _ids(11, 17)),
    ("name pr", _ids(1, 2, 3, 11, 17)),
    ("name.givenName pr", _ids(1, 2)),
    ('name[givenName eq "barbara"]', _ids(1)),
    ('name[givenName pr and familyName ew "h"]', _ids(2)),
    (f'{CORE}:name.givenName eq "John"', _ids(2)),
    (f'{CORE}:userName eq "bjensen"', _ids(1)),
    # Enterprise extension, under its URN key
    (f'{ENT}:employeeNumber eq "701984"', _ids(1)),
    (f'{ENT}:employeeNumber gt "2"', _ids(1)),
    (f'{ENT}:department co "sales"', _ids(2)),
    (f'{ENT}:manager.value eq "u02"', _ids(1)),
    (f"{ENT}:manager pr", _ids(1)),
    (f"{ENT}:costCenter pr", _ids(16)),
    (f'{ENT.upper()}:COSTCENTER eq "cc-9"', _ids(16)),
    # Multi-valued: any element; "emails" alone means emails.value
    ('emails co "example.com"', _ids(1, 2, 10, 19)),
    ('emails.value ew "EXAMPLE.COM"', _ids(1, 2, 10, 19)),
    ('emails eq "niaj@example.com"', _ids(19)),
    ('emails[type eq "work" and value co "@example.com"]', _ids(1, 2)),
    ('emails[type eq "work"].value co "@example.com"', _ids(1, 2)),
    ('emails[type eq "work" or value co "@example.com"]', _ids(1, 2, 10, 11, 19)),
    ('emails[not (type eq "work")]', _ids(1, 10, 11, 19)),
    ('emails.type eq "home"', _ids(1, 10, 11)),
    ('emails.type eq "work" and emails.value co "y@example"', _ids(10)),
    ("emails pr", _ids(1, 2, 10, 11, 19)),
    ("not (emails pr)", ALL_USERS - _ids(1, 2, 10, 11, 19)),
    ("emails eq null", ALL_USERS - _ids(1, 2, 10, 11, 19)),
    ("emails.type pr", _ids(1, 2, 10, 11)),
    ('emails.value ne "bjensen@example.com"', _ids(1, 2, 10, 11, 19)),
    ('emails.value ne "john.smith@example.com"', _ids(1, 10, 11, 19)),
    ("emails[primary eq true]", _ids(1, 11)),
    ("emails[primary ne true]", _ids(1, 2, 10, 11, 19)),
    ('phoneNumbers[type eq "mobile"]', _ids(12)),
    ('phoneNumbers.value sw "+1"', _ids(12)),
    ('addresses[locality eq "paris" and country eq "FR"]', _ids(14)),
    ("addresses.locality pr", _ids(14)),
    ('roles.value eq "admin"', _ids(16)),
    ('roles co "adm"', _ids(16)),
    # meta: fixed-width ISO text; any RFC 3339 input is normalised
    ('meta.created gt "2024-01-15T10:00:00Z"', _ids(16, 17, 18, 19, 20)),
    ('meta.created ge "2024-01-15T10:00:00Z"', _ids(15, 16, 17, 18, 19, 20)),
    ('meta.created lt "2024-01-03T11:00:00+01:00"', _ids(1, 2)),
    ('meta.created le "2024-01-02t10:00:00.0000001z"', _ids(1, 2)),
    ('meta.created eq "2024-01-05T10:00:00Z"', _ids(5)),
    ('meta.lastModified ge "2024-02-19T05:00:00-05:00"', _ids(19, 20)),
    ('meta.created sw "2024-01-1"', _ids(10, 11, 12, 13, 14, 15, 16, 17, 18, 19)),
    ("meta pr", ALL_USERS),
    ('meta.resourceType eq "User"', ALL_USERS),
    ('meta.resourceType eq "Group"', set()),
    # groups: EXISTS over the members table
    ('groups.value eq "g1"', _ids(1, 2)),
    ('groups eq "g2"', _ids(2, 10)),
    ('groups.display eq "ADMINS"', _ids(1, 2)),
    ('groups[display sw "tour_"]', _ids(1)),
    ('groups[value eq "g1" and display eq "sales"]', set()),
    ('groups[type eq "direct"]', _ids(1, 2, 10)),
    ("groups pr", _ids(1, 2, 10)),
    ("not (groups pr)", ALL_USERS - _ids(1, 2, 10)),
    ('groups.value ne "g1"', _ids(1, 2, 10)),
    # id
    ('id eq "u03"', _ids(3)),
    ('id eq "U03"', set()),
    # logic and precedence: not > and > or
    ('userName eq "bjensen" or userName eq "jsmith" and active eq true', _ids(1)),
    ('(userName eq "bjensen" or userName eq "jsmith") and active eq false', _ids(2)),
    ('not (userName sw "b") and active eq false', _ids(2, 12)),
    ('not userName sw "b" and active eq false', _ids(2, 12)),
    ('active eq false or title pr and userType eq "employee"', _ids(1, 2, 12)),
    ("not (not (title pr))", _ids(1, 12)),
    ('USERNAME EQ "bjensen" AND EmAiLs.TyPe Eq "WORK"', _ids(1)),
    (
        " or ".join(f"userName eq {json.dumps(u['user_name'])}" for u in USERS[:10]),
        _ids(*range(1, 11)),
    ),
]

GROUP_CASES: list[tuple[str, set[str]]] = [
    ('displayName eq "admins"', {"g1"}),
    ('displayName sw "TOUR"', {"g4"}),
    ('displayName co "_"', {"g4"}),
    ('displayName gt "s"', {"g2", "g4"}),
    ('externalId eq "G-EXT"', {"g1"}),
    ('externalId eq "g-ext"', {"g4"}),
    ("externalId pr", {"g1", "g4"}),
    ('members.value eq "u02"', {"g1", "g2"}),
    ('members eq "u10"', {"g2"}),
    ('members eq "U10"', set()),  # members.value is caseExact
    ("members pr", {"g1", "g2", "g4"}),
    ("not (members pr)", {"g3"}),
    ('members[type eq "group"]', {"g1"}),
    ('members[value eq "u01" and type eq "User"]', {"g1", "g4"}),
    ('members[value eq "u10" and type eq "Group"]', set()),
    ('members.value ne "u01"', {"g1", "g2"}),
    ('meta.created lt "2024-03-03T00:00:00Z"', {"g1", "g2"}),
    ('meta.resourceType eq "Group"', ALL_GROUPS),
    ('id eq "g3" or displayName eq "sales"', {"g2", "g3"}),
]


@pytest.mark.parametrize(("text", "expected"), USER_CASES, ids=[c[0][:60] for c in USER_CASES])
def test_user_filter(engine: Engine, text: str, expected: set[str]) -> None:
    assert run(engine, text) == expected


@pytest.mark.parametrize(("text", "expected"), GROUP_CASES, ids=[c[0] for c in GROUP_CASES])
def test_group_filter(engine: Engine, text: str, expected: set[str]) -> None:
    assert run(engine, text, GROUP_TYPE) == expected


def test_malformed_json_elements_do_not_break_filters(engine: Engine) -> None:
    # Data written by an older version: non-object elements, emails as an object.
    odd = _user(
        21,
        "odd",
        emails=["legacy@example.com", 7, None, {"value": "ok@example.com"}],
        phoneNumbers={"value": "not an array"},
        name="not an object",
    )
    with engine.connect() as conn, conn.begin() as trans:
        conn.execute(insert(tables.users), [odd])

        def ids(text: str) -> set[str]:
            where = compile_filter(parse_filter(text), USER_TYPE, engine.dialect.name)
            return set(conn.execute(select(tables.users.c.id).where(where)).scalars())

        assert "u21" in ids('emails co "example.com"')
        assert "u21" not in ids('emails co "legacy"')
        assert "u21" not in ids("phoneNumbers pr")
        assert "u21" not in ids("name.familyName pr")
        key = sort_key("emails", USER_TYPE, engine.dialect.name)
        got = conn.execute(select(key).where(tables.users.c.id == "u21")).scalar_one()
        assert got == "ok@example.com"
        trans.rollback()


def test_filter_expected_sets_are_not_trivial() -> None:
    # Guard against a case list where nearly everything expects "all" or "nothing".
    sizes = [len(e) for _, e in USER_CASES]
    assert sum(1 for s in sizes if 0 < s < len(ALL_USERS)) > len(sizes) * 3 // 4


# --------------------------------------------------------------------------- SQL vs matches()

# The whole resource as SCIM JSON, with an Attribute describing it, so that the in-memory
# evaluator (scim/filter.py) is an independent oracle for the SQL.
_USER_DEF = Attribute("User", type="complex", sub_attributes=(*USER.attributes, *COMMON_ATTRIBUTES))
_GROUP_NAMES = {g["id"]: g["display_name"] for g in GROUPS}


def _resource(row: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(row["attrs"])
    doc.update(
        id=row["id"],
        active=row["active"],
        meta={
            "resourceType": "User",
            "created": row["created"],
            "lastModified": row["last_modified"],
        },
    )
    if row["external_id"] is not None:
        doc["externalId"] = row["external_id"]
    if row["display_name"] is not None:
        doc["displayName"] = row["display_name"]
    doc["groups"] = [
        {"value": g, "display": _GROUP_NAMES[g], "type": "direct"}
        for g, m, _ in MEMBERS
        if m == row["id"]
    ]
    return doc


@pytest.mark.parametrize(("text", "expected"), USER_CASES, ids=[c[0][:60] for c in USER_CASES])
def test_in_memory_matcher_agrees(text: str, expected: set[str]) -> None:
    node = parse_filter(text)
    got = {u["id"] for u in USERS if matches(node, _resource(u), _USER_DEF)}
    assert got == expected


# --------------------------------------------------------------------------- errors

ERROR_CASES: list[tuple[str, Any, str]] = [
    ('nosuch eq "x"', USER_TYPE, "nosuch"),
    ('name.nosuch eq "x"', USER_TYPE, "name.nosuch"),
    (f'{ENT}:nosuch eq "x"', USER_TYPE, "nosuch"),
    ('password eq "secret"', USER_TYPE, "password"),
    ("password pr", USER_TYPE, "password"),
    ("active gt true", USER_TYPE, "boolean"),
    ("emails[primary lt false]", USER_TYPE, "boolean"),
    ('active eq "true"', USER_TYPE, "boolean"),
    ("userName eq true", USER_TYPE, "true/false"),
    ("userName eq 42", USER_TYPE, "number"),
    ('name eq "x"', USER_TYPE, "complex"),
    ("userName gt null", USER_TYPE, "null"),
    ('meta.created gt "yesterday"', USER_TYPE, "dateTime"),
    ('meta.version eq "W/\\"1\\""', USER_TYPE, "not filterable"),
    ('groups.$ref eq "x"', USER_TYPE, "not filterable"),
    ('emails[nosuch eq "x"]', USER_TYPE, "nosuch"),
    ('userName[value eq "x"]', USER_TYPE, "complex"),
    ('members.display eq "Barbara"', GROUP_TYPE, "not filterable"),
    ('members[display eq "Barbara"]', GROUP_TYPE, "not filterable"),
    ('userName eq "x"', GROUP_TYPE, "userName"),
    ('x509Certificates.value gt "a"', USER_TYPE, "binary"),
]


@pytest.mark.parametrize(("text", "rtype", "needle"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_invalid_filters(text: str, rtype: Any, needle: str, dialect: str) -> None:
    with pytest.raises(InvalidFilter) as info:
        compile_filter(parse_filter(text), rtype, dialect)
    assert needle.lower() in info.value.detail.lower()
    assert info.value.scim_type == "invalidFilter"


# --------------------------------------------------------------------------- sortBy


def sorted_ids(
    engine: Engine, path: str, *, descending: bool = False, rtype: Any = USER_TYPE
) -> list[str]:
    table = tables.users if rtype is USER_TYPE else tables.groups
    order = order_by(path, rtype, engine.dialect.name, descending=descending)
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.id).order_by(order, table.c.id))
        return list(rows.scalars())


def test_sort_by_user_name_is_case_insensitive(engine: Engine) -> None:
    expected = [u["id"] for u in sorted(USERS, key=lambda u: u["user_name"].lower())]
    assert sorted_ids(engine, "userName") == expected
    assert sorted_ids(engine, "USERNAME", descending=True) == expected[::-1]


def test_sort_by_json_attribute(engine: Engine) -> None:
    # adams < Brown < Jensen < Smith < Zed (case-folded); users without a name last.
    got = sorted_ids(engine, "name.familyName")
    assert got[:5] == ["u11", "u17", "u01", "u02", "u03"]
    assert got[5:] == sorted(ALL_USERS - _ids(1, 2, 3, 11, 17))


def test_sort_by_multi_valued_uses_primary_then_first(engine: Engine) -> None:
    # u11's primary e-mail (d1@ex.org) is its second one; u10 has no primary: first wins.
    got = sorted_ids(engine, "emails")
    assert got[:5] == ["u01", "u11", "u02", "u19", "u10"]
    assert set(got[5:]) == ALL_USERS - _ids(1, 2, 10, 11, 19)


def test_sort_by_created_descending(engine: Engine) -> None:
    assert sorted_ids(engine, "meta.created", descending=True) == sorted(ALL_USERS, reverse=True)


def test_sort_by_extension_attribute(engine: Engine) -> None:
    got = sorted_ids(engine, f"{ENT}:employeeNumber")
    assert got[:2] == ["u02", "u01"]  # "1002" < "701984" as strings
    assert got[2:] == sorted(ALL_USERS - _ids(1, 2))


def test_missing_values_sort_last_ascending_first_descending(engine: Engine) -> None:
    # RFC 7644 §3.4.2.3; SQLite and PostgreSQL disagree on NULL placement by default.
    with_title = ["u12", "u01"]  # "Manager" < "Tour Guide"; u03's "" sorts first
    asc = sorted_ids(engine, "title")
    assert asc[:3] == ["u03", *with_title]
    assert asc[3:] == sorted(ALL_USERS - _ids(1, 3, 12))
    desc = sorted_ids(engine, "title", descending=True)
    assert desc[:-3] == sorted(ALL_USERS - _ids(1, 3, 12))
    assert desc[-3:] == ["u01", "u12", "u03"]


def test_sort_groups_by_display_name(engine: Engine) -> None:
    assert sorted_ids(engine, "displayName", rtype=GROUP_TYPE) == ["g1", "g3", "g2", "g4"]


@pytest.mark.parametrize("path", ["nosuch", "name", "password", "members.display"])
def test_sort_by_unknown_attribute_is_invalid_value(path: str) -> None:
    rtype = GROUP_TYPE if path.startswith("members") else USER_TYPE
    with pytest.raises(InvalidValue):
        sort_key(path, rtype, "sqlite")

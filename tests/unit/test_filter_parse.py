"""Parser, PATCH path and in-memory matcher of scim/filter.py (RFC 7644 §3.4.2.2, §3.5.2)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scimgate.scim.errors import InvalidFilter, InvalidPath
from scimgate.scim.filter import (
    MAX_DEPTH,
    MAX_FILTER_LENGTH,
    And,
    Compare,
    Not,
    Or,
    PatchPath,
    Present,
    ValuePath,
    normalize_datetime,
    parse_filter,
    parse_path,
)
from scimgate.scim.filter_match import matches
from scimgate.scim.schema import GROUP, USER, Attribute

ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CORE = "urn:ietf:params:scim:schemas:core:2.0:User"


def C(path: str, op: str, value: object) -> Compare:
    return Compare(path, op, value)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- operators


@pytest.mark.parametrize("op", ["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"])
def test_every_compare_operator(op: str) -> None:
    assert parse_filter(f'userName {op} "x"') == C("userName", op, "x")
    assert parse_filter(f'userName {op.upper()} "x"') == C("userName", op, "x")


def test_present() -> None:
    assert parse_filter("title pr") == Present("title")
    assert parse_filter("title PR") == Present("title")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('a eq "plain"', "plain"),
        (r'a eq "q\"uote\\back\/slash"', 'q"uote\\back/slash'),
        (r'a eq "tab\tnl\nu\u00e9"', "tab\tnl\nu\u00e9"),
        ('a eq ""', ""),
        ('a eq "with ) and ] and \' inside"', "with ) and ] and ' inside"),
        ("a eq 42", 42),
        ("a eq -7", -7),
        ("a eq 0", 0),
        ("a eq 1.5", 1.5),
        ("a eq -2.5e3", -2500.0),
        ("a eq 1E-2", 0.01),
        ("a eq true", True),
        ("a eq False", False),
        ("a eq null", None),
        ("a eq NULL", None),
    ],
)
def test_values(text: str, value: object) -> None:
    node = parse_filter(text)
    assert isinstance(node, Compare)
    assert node.value == value
    assert type(node.value) is type(value)


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    "path",
    [
        "userName",
        "name.familyName",
        "meta.lastModified",
        "groups.$ref",
        "x509Certificates.value",
        f"{ENT}:employeeNumber",
        f"{ENT}:manager.value",
        f"{CORE}:name.givenName",
    ],
)
def test_attribute_paths(path: str) -> None:
    assert parse_filter(f"{path} pr") == Present(path)


# --------------------------------------------------------------------------- logic


def test_and_binds_tighter_than_or() -> None:
    assert parse_filter("a pr or b pr and c pr") == Or(
        Present("a"), And(Present("b"), Present("c"))
    )
    assert parse_filter("a pr and b pr or c pr") == Or(
        And(Present("a"), Present("b")), Present("c")
    )


def test_not_binds_tighter_than_and() -> None:
    assert parse_filter("not (a pr) and b pr") == And(Not(Present("a")), Present("b"))
    # Tolerated without parentheses, same precedence.
    assert parse_filter("not a pr and b pr") == And(Not(Present("a")), Present("b"))


def test_left_associative_chains() -> None:
    assert parse_filter("a pr and b pr and c pr") == And(
        And(Present("a"), Present("b")), Present("c")
    )
    assert parse_filter("a pr or b pr or c pr") == Or(Or(Present("a"), Present("b")), Present("c"))


def test_parentheses_override_precedence() -> None:
    assert parse_filter("(a pr or b pr) and c pr") == And(
        Or(Present("a"), Present("b")), Present("c")
    )
    assert parse_filter("((a pr))") == Present("a")


def test_keywords_case_insensitive_and_whitespace_tolerant() -> None:
    assert parse_filter('  NOT ( a Eq "x" )\tAND\nb pr  ') == And(
        Not(C("a", "eq", "x")), Present("b")
    )


def test_rfc_examples() -> None:
    # RFC 7644 §3.4.2.2 examples.
    assert parse_filter(
        'userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")'
    ) == And(
        C("userType", "eq", "Employee"),
        Or(C("emails", "co", "example.com"), C("emails.value", "co", "example.org")),
    )
    assert parse_filter(
        'userType eq "Employee" and emails[type eq "work" and value co "@example.com"]'
    ) == And(
        C("userType", "eq", "Employee"),
        ValuePath("emails", And(C("type", "eq", "work"), C("value", "co", "@example.com"))),
    )
    assert parse_filter(
        'emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]'
    ) == Or(
        ValuePath("emails", And(C("type", "eq", "work"), C("value", "co", "@example.com"))),
        ValuePath("ims", And(C("type", "eq", "xmpp"), C("value", "co", "@foo.com"))),
    )
    assert parse_filter('meta.lastModified gt "2011-05-13T04:42:34Z"') == C(
        "meta.lastModified", "gt", "2011-05-13T04:42:34Z"
    )


def test_value_path_with_not_and_parentheses() -> None:
    assert parse_filter(
        'emails[not (type eq "work") and (value co "a" or primary eq true)]'
    ) == ValuePath(
        "emails",
        And(Not(C("type", "eq", "work")), Or(C("value", "co", "a"), C("primary", "eq", True))),
    )


def test_entra_value_path_with_sub_attribute() -> None:
    assert parse_filter('emails[type eq "work"].value eq "x"') == ValuePath(
        "emails", And(C("type", "eq", "work"), C("value", "eq", "x"))
    )
    assert parse_filter('addresses[type eq "work"].locality pr and a pr') == And(
        ValuePath("addresses", And(C("type", "eq", "work"), Present("locality"))), Present("a")
    )


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("(userName pr", "expected ')'"),
        ("userName pr)", "got ')'"),
        ("((a pr)", "expected ')'"),
        ('emails[type eq "work"', "expected ']'"),
        ('emails type eq "work"]', "operator"),
        ('emails[type eq "work"]]', "got ']'"),
        ('userName xx "a"', "unknown operator 'xx'"),
        ('userName "a"', "expected an operator"),
        ("userName eq", "expected a value"),
        ("userName eq and b pr", "expected a value"),
        ("userName eq bjensen", "expected a value"),
        ("userName pr pr", "got 'pr'"),
        ('userName eq "x" garbage', "got 'garbage'"),
        ('userName eq "x" and', "expected an attribute path"),
        ("and a pr", "expected an attribute path"),
        ("not", "expected an attribute path"),
        ("a pr or or b pr", "expected an attribute path"),
        ('userName eq "unterminated', "string"),
        ('userName eq "bad \\x escape"', "string"),
        ('userName eq "\\ud800"', "string"),
        ('userName eq "raw\ncontrol"', "string"),
        ("a eq 01", "number"),
        ("a eq 1.", "number"),
        ("a eq 1e999", "number"),
        ("a eq 12abc", "number"),
        ("a..b pr", "invalid attribute path"),
        ("a.b.c pr", "invalid attribute path"),
        ("urn:x pr", "invalid attribute path"),
        ("a eq #", "unexpected character"),
        ("1abc pr", "number"),
        ("-a pr", "number"),
        ("emails[value[type pr]]", "nested"),
        ("emails[urn:x:y:value pr]", "sub-attribute"),
        ("emails[a.b pr]", "sub-attribute"),
        ('name.givenName[value eq "x"]', "complex attribute"),
        ('emails[type eq "w"]. value eq "x"', "sub-attribute"),
    ],
)
def test_syntax_errors(text: str, detail: str) -> None:
    with pytest.raises(InvalidFilter) as info:
        parse_filter(text)
    assert detail.lower() in info.value.detail.lower()
    assert info.value.scim_type == "invalidFilter"
    assert info.value.status == 400


def test_error_reports_position() -> None:
    with pytest.raises(InvalidFilter, match="at position 17"):
        parse_filter('userName eq "x" garbage')


def test_length_limit() -> None:
    ok = "a pr or " * 100 + "a pr"
    assert len(ok) < MAX_FILTER_LENGTH
    parse_filter(ok)
    with pytest.raises(InvalidFilter, match="longer than"):
        parse_filter('a eq "' + "x" * MAX_FILTER_LENGTH + '"')


def test_depth_limit() -> None:
    parse_filter("(" * MAX_DEPTH + "a pr" + ")" * MAX_DEPTH)
    with pytest.raises(InvalidFilter, match="deeper"):
        parse_filter("(" * (MAX_DEPTH + 1) + "a pr" + ")" * (MAX_DEPTH + 1))
    with pytest.raises(InvalidFilter, match="deeper"):
        parse_filter("not " * (MAX_DEPTH + 1) + "a pr")


def test_long_flat_chain_is_not_limited_by_depth() -> None:
    node = parse_filter(" and ".join(["a pr"] * 400))
    assert isinstance(node, And)
    assert matches(node, {"a": "x"}) is True


_ALPHABET = st.sampled_from(
    [*'abeqnotrpsw ()[]."\\:-_019$', "and", "or", "not", " eq ", " pr", "urn:"]
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=80), st.lists(_ALPHABET, max_size=40).map("".join)))
def test_parse_raises_only_invalid_filter(text: str) -> None:
    try:
        node = parse_filter(text)
    except InvalidFilter:
        return
    assert isinstance(node, Compare | Present | And | Or | Not | ValuePath)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_parse_path_raises_only_invalid_path(text: str) -> None:
    try:
        path = parse_path(text)
    except InvalidPath:
        return
    assert isinstance(path, PatchPath)
    assert path.attr


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_string_values_round_trip(value: str) -> None:
    import json

    node = parse_filter(f"a eq {json.dumps(value)}")
    assert node == C("a", "eq", value)


# --------------------------------------------------------------------------- PATCH paths


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("userName", PatchPath("userName", None, None)),
        ("name.givenName", PatchPath("name", None, "givenName")),
        ('members[value eq "x"]', PatchPath("members", C("value", "eq", "x"), None)),
        ('emails[type eq "work"].value', PatchPath("emails", C("type", "eq", "work"), "value")),
        (f"{ENT}:manager", PatchPath(f"{ENT}:manager", None, None)),
        (f"{ENT}:manager.value", PatchPath(f"{ENT}:manager", None, "value")),
        (f"{CORE}:name.givenName", PatchPath(f"{CORE}:name", None, "givenName")),
        (
            'emails[type eq "work" and primary eq true]',
            PatchPath("emails", And(C("type", "eq", "work"), C("primary", "eq", True)), None),
        ),
    ],
)
def test_parse_path(text: str, expected: PatchPath) -> None:
    assert parse_path(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a b",
        "a.b.c",
        "emails[",
        'emails[type eq "w"',
        'emails[type eq "w"].',
        'emails[type eq "w"]x',
        'name.givenName[value eq "x"]',
        "emails[type]",
        "a eq 1",
        "(a)",
        '"a"',
    ],
)
def test_parse_path_errors(text: str) -> None:
    with pytest.raises(InvalidPath) as info:
        parse_path(text)
    assert info.value.scim_type == "invalidPath"


# --------------------------------------------------------------------------- matches()

EMAILS = USER.attribute("emails")
MEMBERS = GROUP.attribute("members")
assert EMAILS is not None and MEMBERS is not None


@pytest.mark.parametrize(
    ("text", "element", "expected"),
    [
        ('type eq "work"', {"type": "Work", "value": "a@x"}, True),
        ('type eq "work"', {"type": "home"}, False),
        ('type ne "work"', {"value": "a@x"}, True),  # absent matches ne
        ('type eq "work"', {"value": "a@x"}, False),
        ('value co "@EXAMPLE"', {"value": "a@example.com"}, True),
        ('value sw "A@"', {"value": "a@example.com"}, True),
        ('value ew ".COM"', {"value": "a@example.com"}, True),
        ("primary eq true", {"primary": True}, True),
        ("primary eq true", {"primary": "true"}, False),
        ("primary ne true", {}, True),
        ("primary pr", {"primary": False}, True),
        ("display pr", {"display": ""}, False),
        ("display pr", {"display": None}, False),
        ("display eq null", {"display": None}, True),
        ("display ne null", {"display": "x"}, True),
        ('type eq "work" and not (value ew ".org")', {"type": "work", "value": "a@b.com"}, True),
        ('value gt "b"', {"value": "A"}, False),
        ('value gt "B"', {"value": "c"}, True),
        ('TYPE eq "work"', {"type": "work"}, True),  # attribute names are case-insensitive
    ],
)
def test_matches_email_element(text: str, element: dict[str, object], expected: bool) -> None:
    assert matches(parse_filter(text), element, EMAILS) is expected


def test_matches_respects_case_exact() -> None:
    # members.value is caseExact=true in the Group schema.
    assert matches(parse_filter('value eq "abc"'), {"value": "abc"}, MEMBERS) is True
    assert matches(parse_filter('value eq "ABC"'), {"value": "abc"}, MEMBERS) is False
    assert matches(parse_filter('value sw "AB"'), {"value": "abc"}, MEMBERS) is False
    # Without a definition, strings compare case-insensitively (RFC 7643 §2.2 default).
    assert matches(parse_filter('value eq "ABC"'), {"value": "abc"}) is True


def test_matches_datetime_normalises() -> None:
    meta = Attribute("r", type="complex", sub_attributes=(Attribute("when", type="dateTime"),))
    elem = {"when": "2024-05-01T12:00:00Z"}
    assert matches(parse_filter('when eq "2024-05-01T14:00:00+02:00"'), elem, meta) is True
    assert matches(parse_filter('when gt "2024-05-01T11:59:59.999Z"'), elem, meta) is True
    assert matches(parse_filter('when lt "2024-05-01T12:00:00Z"'), elem, meta) is False


def test_matches_multi_valued_any_and_value_path() -> None:
    user = {"emails": [{"type": "home", "value": "h@x.org"}, {"type": "work", "value": "w@x.com"}]}
    parent = Attribute("User", type="complex", sub_attributes=USER.attributes)
    assert matches(parse_filter('emails co "x.com"'), user, parent) is True
    assert (
        matches(parse_filter('emails[type eq "home" and value co "x.com"]'), user, parent) is False
    )
    assert (
        matches(parse_filter('emails[type eq "work" and value co "x.com"]'), user, parent) is True
    )
    assert matches(parse_filter('emails[type eq "work"].value ew ".org"'), user, parent) is False
    assert matches(parse_filter('emails.value ne "h@x.org"'), user, parent) is True
    assert matches(parse_filter('emails.value ne "h@x.org"'), {"emails": []}, parent) is False
    assert matches(parse_filter('emails.value ne "h@x.org"'), {}, parent) is False


@pytest.mark.parametrize(
    "text",
    ["primary gt true", 'primary eq "true"', "value eq 1", "value lt null", "value lt false"],
)
def test_matches_rejects_undefined_comparisons(text: str) -> None:
    with pytest.raises(InvalidFilter):
        matches(parse_filter(text), {"value": "x", "primary": True}, EMAILS)


# --------------------------------------------------------------------------- dateTime


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2011-05-13T04:42:34Z", "2011-05-13T04:42:34.000000Z"),
        ("2011-05-13t04:42:34.5z", "2011-05-13T04:42:34.500000Z"),
        ("2011-05-13T04:42:34.123456789Z", "2011-05-13T04:42:34.123456Z"),
        ("2011-05-13T06:42:34+02:00", "2011-05-13T04:42:34.000000Z"),
        ("2011-05-12T23:42:34-05:00", "2011-05-13T04:42:34.000000Z"),
        ("2011-05-13 04:42:34", "2011-05-13T04:42:34.000000Z"),
    ],
)
def test_normalize_datetime(text: str, expected: str) -> None:
    assert normalize_datetime(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2011-05-13",
        "yesterday",
        "2011-13-01T00:00:00Z",
        "2011-05-13T04:42:60Z",
        "2011-05-13T04:42:34+24:00",
    ],
)
def test_normalize_datetime_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        normalize_datetime(text)

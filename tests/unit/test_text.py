"""scim.text (pure): request bodies as strict UTF-8 JSON without lone surrogates, NUL,
NaN or deep nesting; safe echo of client text; the cheap pre-check agrees with the walk."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from scimgate.scim.errors import InvalidSyntax, InvalidValue, ScimError
from scimgate.scim.text import (
    MAX_DEPTH,
    char_problem,
    check_document,
    check_string,
    echo,
    parse_json,
    suspect,
)


@pytest.mark.parametrize(
    ("raw", "error", "words"),
    [
        (b'{"userName": "a\\ud800"}', InvalidValue, "userName: string is not well-formed"),
        (b'{"userName": "a\\uDFFF"}', InvalidValue, "lone surrogate U+DFFF"),
        (b'{"a": ["x", "\\u0000"]}', InvalidValue, "a[1]: string contains NUL"),
        (b'{"\\ud800": 1}', InvalidValue, "\\ud800: key is not well-formed"),
        (b'{"userName": "x\xed\xa0\x80"}', InvalidSyntax, "not UTF-8"),  # raw surrogate bytes
        (b"\xff\xfe{\x00}\x00", InvalidSyntax, "not UTF-8"),  # UTF-16: not for RFC 8259 §8.1
        (b'{"n": NaN}', InvalidSyntax, "NaN is not a JSON value"),
        (b'{"n": -Infinity}', InvalidSyntax, "-Infinity is not a JSON value"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), InvalidValue, "nested deeper"),
        (b"[" * 100_000, InvalidSyntax, "not valid JSON"),
    ],
)
def test_parse_json_refuses(raw: bytes, error: type[ScimError], words: str) -> None:
    with pytest.raises(error) as caught:
        parse_json(raw)
    assert words in caught.value.detail
    caught.value.detail.encode("utf-8")  # the detail itself always encodes


def test_parse_json_accepts_what_idps_send() -> None:
    assert parse_json(b'{"userName": "\\ud83d\\ude00 \\u00e9"}') == {"userName": "😀 é"}
    assert parse_json("\ufeff{}".encode()) == {}  # a UTF-8 BOM
    nested = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert parse_json(nested) is not None
    # check=False: the caller walks the parts (Bulk, per operation)
    assert parse_json(b'["\\ud800"]', check=False) == ["\ud800"]


def test_check_document_names_where_and_is_iterative() -> None:
    with pytest.raises(InvalidValue, match=r"Operations\[2\]\.data\.emails\[0\]\.value"):
        check_document({"data": {"emails": [{"value": "\x00"}]}}, "Operations[2]")
    deep: Any = "leaf"
    for _ in range(50_000):  # far past the recursion limit: no RecursionError
        deep = [deep]
    with pytest.raises(InvalidValue, match="nested deeper"):
        check_document(deep)


def test_check_string_and_echo() -> None:
    assert check_string("é" * 10, "x", 10) == "é" * 10
    with pytest.raises(InvalidValue, match="longer than 10"):
        check_string("é" * 11, "x", 10)
    assert char_problem("plain") is None and char_problem("é😀") is None
    assert echo("a\ud800b\x00c\n") == "a\\ud800b\\u0000c\\u000a"
    assert echo("x" * 100, 10) == "x" * 10 + "…"
    assert echo(["not", "a", "string"]) == "['not', 'a', 'string']"


JSON_TEXT = st.text(alphabet=st.characters(exclude_categories=()), max_size=8)
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | JSON_TEXT,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(JSON_TEXT, kids, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUE, ascii_only=st.booleans())
def test_the_pre_check_never_skips_a_hazard(value: Any, ascii_only: bool) -> None:
    """Whatever JSON a client sends: parse_json refuses it exactly when a key or string holds
    a lone surrogate or NUL (the pre-check may walk more often, never less)."""
    text = json.dumps(value, ensure_ascii=ascii_only)
    raw = text.encode("utf-8", "surrogatepass")
    hazard = _has_hazard(value)
    if not ascii_only and raw != text.encode("utf-8", "replace"):
        with pytest.raises(InvalidSyntax):  # raw surrogate bytes are not UTF-8
            parse_json(raw)
        return
    if hazard:
        assert suspect(text)
        with pytest.raises(InvalidValue):
            parse_json(raw)
    else:
        assert parse_json(raw) == value


def _has_hazard(value: Any) -> bool:
    if isinstance(value, str):
        return char_problem(value) is not None
    if isinstance(value, list):
        return any(_has_hazard(v) for v in value)
    if isinstance(value, dict):
        return any(_has_hazard(k) or _has_hazard(v) for k, v in value.items())
    return False

"""Payload encoding (haproxy/payload.py): bodies and their ``add map @ver <<`` requests, which
must stay under tune.bufsize (16384 on 2.6: docs/haproxy-facts.md §2a)."""

from __future__ import annotations

import hashlib
import re

import pytest

from scimgate.haproxy import (
    MAX_PAYLOAD_BYTES,
    EntryValidator,
    PayloadBody,
    UnsafeRuntimeArgument,
    encode_payload,
)
from scimgate.haproxy.payload import (
    build_payload_chunks,
    check_body,
    chunk_payload,
    payload_from_lines,
    payload_header,
)
from scimgate.haproxy.words import Word
from scimgate.sync.apply import ENTRY_VALIDATOR

PATH = Word("/etc/haproxy/maps/identities-0.map")
BUFSIZE = 16384


def key(i: int | str) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest().upper()


def test_bufsize_leaves_room() -> None:
    assert MAX_PAYLOAD_BYTES < BUFSIZE


@pytest.mark.parametrize("limit", [MAX_PAYLOAD_BYTES, 4096, 300, 64 + 80])
def test_chunks_fit_cut_at_line_ends_and_carry_every_line_once(limit: int) -> None:
    entries = {key(i): f",g{i % 7},eng," for i in range(700)}
    body = encode_payload(entries, ENTRY_VALIDATOR)
    header = payload_header(9, PATH)
    chunks = chunk_payload(9, PATH, body, limit)
    assert all(len(c) <= limit for c in chunks)
    assert all(c.startswith(header) and c.endswith(b"\n\n") for c in chunks)
    lines = [ln for c in chunks for ln in c[len(header) : -1].split(b"\n") if ln]
    assert lines == body.data.splitlines()
    if limit == MAX_PAYLOAD_BYTES:  # full chunks: as few requests as fit
        assert all(len(c) > limit - 120 for c in chunks[:-1])


def test_header_and_an_entry_too_big_for_one_request() -> None:
    assert payload_header(7, PATH) == b"add map @7 " + PATH.encode() + b" <<\n"
    body = encode_payload({key(1): "," + "a" * 300 + ","}, ENTRY_VALIDATOR)
    with pytest.raises(UnsafeRuntimeArgument):
        chunk_payload(7, PATH, body, 200)
    assert chunk_payload(7, PATH, PayloadBody(b"", 0)) == []


def test_build_payload_chunks_checks_words_that_skipped_the_validator() -> None:
    pairs = [(Word(key(i)), Word(",a,")) for i in range(10)]
    assert len(build_payload_chunks(1, PATH, pairs)) == 1
    for evil in ("a\n\nshow info", "a b", "", "é"):
        with pytest.raises(UnsafeRuntimeArgument):
            build_payload_chunks(1, PATH, [(Word(evil), Word(",a,"))])


@pytest.mark.parametrize(
    "body",
    [b"k v", b"k  v\n", b" k v\n", b"k v \n", b"k v\n\n", b"k\tv\n", b"k v;w\n", b"\nk v\n",
     b"k v<<\n", b"k\n"],
)  # fmt: skip
def test_check_body_refuses_anything_but_word_space_word_lines(body: bytes) -> None:
    with pytest.raises(UnsafeRuntimeArgument):
        check_body(body, max(1, body.count(b"\n")))


def test_check_body_counts() -> None:
    check_body(b"k v\nk2 v2\n", 2)
    check_body(b"", 0)
    for count in (1, 3):
        with pytest.raises(UnsafeRuntimeArgument):
            check_body(b"k v\nk2 v2\n", count)
    with pytest.raises(UnsafeRuntimeArgument):
        check_body(b"k v\n", 0)


def test_encode_payload_is_all_or_nothing_and_names_the_culprit() -> None:
    good = {key(i): ",eng," for i in range(3)}
    assert encode_payload(good, ENTRY_VALIDATOR).count == 3
    with pytest.raises(UnsafeRuntimeArgument, match="key"):
        encode_payload({**good, key(9).lower(): ",eng,"}, ENTRY_VALIDATOR)
    with pytest.raises(UnsafeRuntimeArgument, match="value"):
        encode_payload({**good, key(9): "eng"}, ENTRY_VALIDATOR)
    # The default allow-lists take any CLI-safe words, never CLI-special bytes.
    assert encode_payload({"alice": "Anything"}).data == b"alice Anything\n"
    with pytest.raises(UnsafeRuntimeArgument):
        encode_payload({"alice": "a;b"})


def test_the_fast_hex_path_equals_the_per_line_path() -> None:
    """Fixed-width hex keys are checked in C-level passes; the result is the per-line one."""
    narrow = EntryValidator(key_re=re.compile(r"[0-9A-F]{8}"), value_re=re.compile(r"[a-z]+"))
    assert narrow.hex_width == 8
    per_line = EntryValidator(key_re=re.compile(r"[0-9A-F]{8}|x{0}"), value_re=narrow.value_re)
    assert per_line.hex_width is None
    lines = [b"0000ABCD abc", b"12345678 z"]
    assert payload_from_lines(lines, narrow).data == payload_from_lines(lines, per_line).data
    for bad in (b"0000abcd abc", b"0000ABCD ABC", b"0000ABC abc", b"0000ABCD  abc", b"0000ABCD"):
        for validator in (narrow, per_line):
            with pytest.raises(UnsafeRuntimeArgument):
                payload_from_lines([*lines, bad], validator)


def test_the_default_allow_lists_take_the_structure_check_path() -> None:
    """With the adapter's default (any CLI-safe word) a body is checked in C-level passes,
    and refuses exactly what the per-line path refuses."""
    default = EntryValidator()
    narrowed = EntryValidator(key_re=re.compile(r"[A-Za-z0-9_.,@+:/-]+"))  # same set, per line
    lines = [b"alice ,eng,", b"bob@x Anything"]
    assert payload_from_lines(lines, default).data == payload_from_lines(lines, narrowed).data
    for bad in (
        b"a  b",
        b"a b c",
        b"a",
        b"a;b c",
        b"a b\r",
        b"x" * 4097 + b" v",
        b"k " + b"v" * 4097,
    ):
        for validator in (default, narrowed):
            with pytest.raises(UnsafeRuntimeArgument):
                payload_from_lines([*lines, bad], validator)

"""The bulk checks a resync relies on (one regex over a shard's lines, prefix bucketing,
per-request structure checks) refuse everything the per-entry validator refuses, and an
LF hidden in a value can never turn into an extra, valid-looking line."""

from __future__ import annotations

import hashlib
import re

import pytest

from scimgate.haproxy import EntryValidator, PayloadBody, PendingBodies, UnsafeRuntimeArgument
from scimgate.haproxy.payload import (
    chunk_payload,
    encode_payload,
    iter_payload_chunks,
    payload_from_lines,
)
from scimgate.haproxy.words import Word

# The identities maps' allow-lists (policy's grammar), as the sync engine hands them in.
from scimgate.sync.apply import ENTRY_VALIDATOR as DEFAULT_VALIDATOR, bucket_lines


def key(i: int | str) -> str:
    return hashlib.sha256(f"user-{i}".encode()).hexdigest().upper()


GOOD = [f"{key(i)} {v}".encode() for i, v in enumerate([",", ",eng,", ",a-b,c_d,e1,"] * 50)]

BAD_LINES = [
    key(1).lower() + " ,eng,",  # lowercase key
    key(1)[:63] + " ,eng,",  # short key
    key(1) + "0 ,eng,",  # long key
    key(1) + "  ,eng,",  # two spaces
    key(1) + "\t,eng,",  # TAB instead of space
    key(1) + " ,Eng,",  # uppercase slug
    key(1) + " eng,",  # no leading comma
    key(1) + " ,eng",  # no trailing comma
    key(1) + " ,,",  # empty slug
    key(1) + " ",  # empty value
    key(1),  # no value
    key(1) + " ,eng,<<",  # payload mode
    key(1) + " ,eng;show info,",  # command separator
    key(1) + " ,eng,\r",  # CR
    key(1) + " ,eng,\x00",  # NUL
    key(1) + " ,é,",  # non-ASCII
    key(1) + " ,eng,\n" + key(2) + " ,admins,",  # an LF inside one entry
    "#0x1 ,eng,",
    "",
    key(1) + " ," + "a" * 4095 + ",",  # value over the 4096-character word limit
]


def test_good_lines_pass_and_match_the_per_entry_encoder() -> None:
    body = payload_from_lines(GOOD, DEFAULT_VALIDATOR)
    entries = dict(line.decode().split(" ", 1) for line in GOOD)
    assert body == encode_payload(entries, DEFAULT_VALIDATOR)
    assert payload_from_lines([], DEFAULT_VALIDATOR) == PayloadBody(b"", 0, DEFAULT_VALIDATOR)
    longest = key(1) + " ," + "a" * 4094 + ","  # a value of exactly 4096 characters
    assert payload_from_lines([longest.encode()], DEFAULT_VALIDATOR).count == 1


@pytest.mark.parametrize("bad", BAD_LINES)
def test_every_bad_line_is_refused_like_the_per_entry_validator(bad: str) -> None:
    raw = bad.encode("utf-8")
    with pytest.raises(UnsafeRuntimeArgument):
        payload_from_lines([*GOOD[:10], raw, *GOOD[10:]], DEFAULT_VALIDATOR)
    # The per-entry validator agrees (when the line splits into a key and a value at all).
    k, _, v = bad.partition(" ")
    with pytest.raises(UnsafeRuntimeArgument):
        DEFAULT_VALIDATOR.key(k)
        DEFAULT_VALIDATOR.value(v)
    # A custom validator takes the per-line path and refuses CLI-unsafe lines too.
    lax = EntryValidator(key_re=re.compile(r"[^ ]+"), value_re=re.compile(r".+"))
    if any(c in bad for c in "\t\n\r\x00;<#é") or bad.count(" ") != 1 or not v:
        with pytest.raises(UnsafeRuntimeArgument):
            payload_from_lines([raw], lax)


def test_bucketing_counts_lines_against_rows() -> None:
    blob = b"".join(line + b"\n" for line in GOOD)
    pending = bucket_lines(blob, len(GOOD), 16)
    bodies = pending.wait()
    assert sum(b.count for b in bodies) == len(GOOD)
    for shard, body in enumerate(bodies):
        assert all(line[:1] == b"%X" % shard for line in body.data.splitlines())
    assert [b.count for b in bucket_lines(blob, len(GOOD), 256).wait()] != []
    assert bucket_lines(blob, len(GOOD), 1).wait()[0].count == len(GOOD)
    # An LF inside a value reads as one more line than there are rows: refused as a whole.
    forged = blob + (key(1) + " ,eng,\n" + key(2) + " ,admins,\n").encode()
    with pytest.raises(UnsafeRuntimeArgument):
        bucket_lines(forged, len(GOOD) + 1, 16)
    # A line whose prefix is no uppercase hex digit: refused as a whole.
    with pytest.raises(UnsafeRuntimeArgument):
        bucket_lines(blob + b"g" * 64 + b" ,eng,\n", len(GOOD) + 1, 16)


def test_a_failed_body_is_never_handed_out() -> None:
    bad = (key(3).lower() + " ,eng,").encode()
    pending = PendingBodies([GOOD[:5], [*GOOD[5:], bad], GOOD[:2]], DEFAULT_VALIDATOR)
    assert pending.counts == [5, len(GOOD) - 4, 2]
    assert pending[0].count == 5
    with pytest.raises(UnsafeRuntimeArgument):
        pending[1]
    assert pending[2].count == 2
    with pytest.raises(UnsafeRuntimeArgument):
        pending.wait()
    assert pending.done.is_set()
    # Stepping does the same work in small pieces.
    stepped = PendingBodies([GOOD * 5, GOOD], DEFAULT_VALIDATOR)
    steps = 1
    while stepped.step():
        steps += 1
    assert steps > 2 and stepped.done.is_set()
    assert [b.count for b in stepped.wait()] == [len(GOOD) * 5, len(GOOD)]


def test_requests_are_checked_one_by_one_before_they_are_yielded() -> None:
    path = Word("/etc/haproxy/maps/ids.map")
    body = payload_from_lines(GOOD * 40, DEFAULT_VALIDATOR)
    chunks = list(iter_payload_chunks(7, path, body, 4096))
    assert chunks == chunk_payload(7, path, body, 4096) and len(chunks) > 3
    # A body made without the checks (a bug elsewhere) fails at the first bad request,
    # after the good requests before it and never with the bad one.
    evil = PayloadBody(body.data + b"x ,a,\n\nshow info\n", body.count + 2)
    sent = []
    with pytest.raises(UnsafeRuntimeArgument):
        for c in iter_payload_chunks(7, path, evil, 4096):
            sent.append(c)
    assert all(b"show info" not in c for c in sent)
    # A count that does not match the lines is refused too.
    with pytest.raises(UnsafeRuntimeArgument):
        list(iter_payload_chunks(7, path, PayloadBody(body.data, body.count + 1), 4096))

"""drop_lines: the shard-file patch, by key search and by line split, agree."""

from __future__ import annotations

from hypothesis import given, strategies as st

from scimgate.haproxy import mapfile_patch as mapfiles
from scimgate.haproxy.mapfile_patch import drop_lines

KEYS = [bytes([c]) * 4 for c in b"ABCDEF"] + [b"AAAAB", b"AAA"]


def _reference(data: bytes, keys: set[bytes]) -> bytes:
    lines = [line for line in data.splitlines(keepends=True) if line.split(b" ", 1)[0] not in keys]
    out = b"".join(lines)
    return out + b"\n" if out and not out.endswith(b"\n") else out


def test_examples() -> None:
    data = b"# header\nAAAA ,a,\nBBBB ,b,\nAAAAB ,x,\nAAAA ,dup,\nCCCC ,c,"
    assert drop_lines(data, {b"AAAA"}) == b"# header\nBBBB ,b,\nAAAAB ,x,\nCCCC ,c,\n"
    assert drop_lines(data, {b"CCCC"}) == b"# header\nAAAA ,a,\nBBBB ,b,\nAAAAB ,x,\nAAAA ,dup,\n"
    assert drop_lines(b"AAAA ,a,\nBBBB ,b,\n", {b"AAAA"}) == b"BBBB ,b,\n"
    assert drop_lines(b"AAAA ,a,\n", {b"AAAA"}) == b""


@given(
    st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from([b",a,", b",", b"-"])), max_size=30),
    st.sets(st.sampled_from(KEYS)),
    st.booleans(),
    st.booleans(),
)
def test_find_and_split_agree(
    lines: list[tuple[bytes, bytes]], drop: set[bytes], header: bool, final_lf: bool
) -> None:
    data = (b"# written by scimgate\n" if header else b"") + b"\n".join(
        k + b" " + v for k, v in lines
    )
    if final_lf and lines:
        data += b"\n"
    expected = _reference(data, drop)
    assert drop_lines(data, drop) == expected
    limit = mapfiles.FIND_LIMIT
    try:
        mapfiles.FIND_LIMIT = -1  # the line-split branch
        assert drop_lines(data, drop) == expected
    finally:
        mapfiles.FIND_LIMIT = limit

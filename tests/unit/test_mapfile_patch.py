"""patch_sorted: a sorted map file patched by binary search equals the file rebuilt from
its entries; lower_bound finds every key's line."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from scimgate.haproxy.mapfile_patch import (
    SORTED_MARK,
    header_end,
    is_sorted_file,
    lower_bound,
    patch_sorted,
)

HEADER = b"# written by scimgate\n"
# variable lengths and shared prefixes: "AB" < "AB0" < "ABC" < "B"
KEYS = [b"A", b"AB", b"AB0", b"ABC", b"ABCD", b"B", b"B0", b"C", b"FFFF", b"0", b"09"]
VALUES = [b",", b",a,", b"-", b",a,b,@1700000000"]


def _render(entries: dict[bytes, bytes]) -> bytes:
    return HEADER + SORTED_MARK + b"".join(k + b" " + entries[k] + b"\n" for k in sorted(entries))


def _parse(data: bytes) -> dict[bytes, bytes]:
    out = {}
    for line in data[header_end(data) :].splitlines():
        key, _, value = line.partition(b" ")
        out[key] = value
    return out


@settings(max_examples=300)
@given(
    st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES)),
    st.sets(st.sampled_from(KEYS)),
    st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES)),
)
def test_patch_equals_rebuild(
    before: dict[bytes, bytes], drop: set[bytes], add: dict[bytes, bytes]
) -> None:
    data = _render(before)
    assert is_sorted_file(data, HEADER)
    lines = {k: k + b" " + v + b"\n" for k, v in add.items()}
    out = b"".join(patch_sorted(data, drop, lines))
    expected = {k: v for k, v in before.items() if k not in drop and k not in add} | add
    assert out == _render(expected)
    assert _parse(out) == expected


def test_lower_bound_finds_each_line() -> None:
    entries = {k: b"," for k in KEYS}
    data = _render(entries)
    start = header_end(data)
    assert start == len(HEADER + SORTED_MARK)
    for key in sorted(KEYS):
        pos = lower_bound(data, key, start, len(data))
        assert data.startswith(key + b" ", pos)
    # past the last key, and before the first
    assert lower_bound(data, b"ZZZ", start, len(data)) == len(data)
    assert lower_bound(data, b"", start, len(data)) == start


def test_an_unmarked_file_is_not_taken_for_sorted() -> None:
    assert not is_sorted_file(HEADER + b"B ,\nA ,\n", HEADER)
    assert not is_sorted_file(b"# other\n" + SORTED_MARK, HEADER)


def test_patch_of_an_empty_body_and_a_missing_final_lf() -> None:
    assert b"".join(patch_sorted(HEADER + SORTED_MARK, set(), {b"A": b"A ,\n"})) == _render(
        {b"A": b","}
    )
    assert b"".join(patch_sorted(HEADER + SORTED_MARK + b"A ,\nC ,", {b"C"}, {})) == _render(
        {b"A": b","}
    )


# a map line never starts with "#" (a comment) and holds no LF
LINES = st.binary(min_size=1, max_size=6).map(lambda b: b"k" + b.replace(b"\n", b"x"))


@given(st.lists(LINES, unique=True))
def test_the_writer_sorts_in_piles_to_the_same_order(lines: list[bytes]) -> None:
    from scimgate.haproxy.mapfile import HEADER as FILE_HEADER
    from scimgate.sync.mapfiles import _sorted_file

    out = _sorted_file(list(lines))
    assert is_sorted_file(out, FILE_HEADER.encode())
    body = out[header_end(out) :]
    assert body == b"".join(line + b"\n" for line in sorted(lines))

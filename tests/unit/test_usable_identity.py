"""is_usable_identity: the fast form accepts exactly printable ASCII without spaces."""

from __future__ import annotations

from hypothesis import given, strategies as st

from scimgate.policy.compiler import is_usable_identity


@given(st.text(alphabet=st.characters(max_codepoint=0x2FF), max_size=40))
def test_same_as_the_character_range(identity: str) -> None:
    assert is_usable_identity(identity) == all("!" <= ch <= "~" for ch in identity)


def test_examples() -> None:
    assert is_usable_identity("alice@example.com")
    for bad in ("a b", "tab\there", "nul\x00", "del\x7f", "ümlaut", "line\n"):
        assert not is_usable_identity(bad), bad

"""ETags and preconditions (RFC 7644 §3.14), pure: scimgate.scim.etag."""

from __future__ import annotations

import pytest

from scimgate.scim.errors import PreconditionFailed
from scimgate.scim.etag import check_if_match, etag, not_modified


def test_version_is_a_weak_etag() -> None:
    assert etag(7) == 'W/"7"'


@pytest.mark.parametrize("header", [None, "*", 'W/"3"', '"3"', 'W/"1", W/"3"', ' W/"3" '])
def test_if_match_holds(header: str | None) -> None:
    check_if_match(header, 3)


@pytest.mark.parametrize("header", ['W/"2"', '"2"', 'W/"30"', "", 'W/"2", W/"4"'])
def test_stale_if_match_is_412(header: str) -> None:
    with pytest.raises(PreconditionFailed) as exc:
        check_if_match(header, 3)
    assert exc.value.status == 412


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, False), ("", False), ("*", True), ('W/"3"', True), ('W/"1", W/"3"', True),
     ('W/"2"', False), ('"3"', False)],
)  # fmt: skip
def test_if_none_match(header: str | None, expected: bool) -> None:
    assert not_modified(header, 'W/"3"') is expected

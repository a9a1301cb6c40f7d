"""Entity tags of SCIM resources (RFC 7644 §3.14): the version as a weak ETag, and the
If-Match / If-None-Match preconditions."""

from __future__ import annotations

from scimgate.scim.errors import PreconditionFailed


def etag(version: int) -> str:
    # RFC 7644 §3.14: weak entity tags.
    return f'W/"{version}"'


def check_if_match(if_match: str | None, version: int) -> None:
    """RFC 7644 §3.14: a stale If-Match is 412 Precondition Failed."""
    if if_match is None:
        return
    tags = [t.strip() for t in if_match.split(",")]
    if "*" in tags:
        return
    current = etag(version)
    if not any(t == current or t == current[2:] for t in tags):
        raise PreconditionFailed(
            f"If-Match {if_match} does not match the current version {current}"
        )


def not_modified(if_none_match: str | None, tag: str) -> bool:
    """RFC 7644 §3.14 / RFC 7232 §3.2: a GET whose If-None-Match names the current version
    (or is ``*``) is answered 304 Not Modified."""
    if not if_none_match:
        return False
    return if_none_match.strip() == "*" or tag in [t.strip() for t in if_none_match.split(",")]

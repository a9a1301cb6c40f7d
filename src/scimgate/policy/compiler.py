"""Pure compilers: SCIM user + groups + policy -> identity-map entries.

Keys are pseudonyms: HMAC-SHA256 of the normalised identity, uppercase hex (64 chars), which
is what HAProxy computes with ``var(txn.scimgate_identity),lower,hmac(sha256,proc.scimgate_hmac),hex``.
Values are comma-wrapped sorted policy group slugs (``,admins,engineering,``; ``,`` for an
active user in no policy group). An inactive user yields no entry, which HAProxy denies.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from typing import Any

from scimgate.policy.model import Policy

VALID_SHARD_COUNTS = (1, 16, 256)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def normalise_identity(identity: str) -> str:
    """Strip and lower-case ASCII letters only: HAProxy's ``lower`` is ASCII-only (tolower in
    the C locale), so Unicode ``str.lower()`` would produce keys HAProxy never computes."""
    return identity.strip().translate(_ASCII_LOWER)


def is_usable_identity(identity: str) -> bool:
    """Only printable ASCII without spaces (``!``..``~``) can be an identity.

    HAProxy 2.6's JSON decoder turns ``\\u00fc`` into the single byte 0xFC (Latin-1), not
    UTF-8, while a raw UTF-8 claim stays UTF-8: the bytes HAProxy hashes for a non-ASCII
    identity depend on how the IdP encoded the token, and a Latin-1 reading of one name can
    equal the UTF-8 bytes of another. So non-ASCII identities are refused on both sides
    (HAProxy answers 401), never guessed.
    """
    # == all("!" <= ch <= "~" for ch in identity), without a Python-level loop (a quarter of
    # rebuild_all's compiler time at 100k users): ASCII, printable, and no space.
    return identity.isascii() and identity.isprintable() and " " not in identity


def _extension_value(user: Mapping[str, Any], attribute: str) -> Any:
    urn, _, name = attribute.rpartition(":")
    block = user.get(urn)
    if isinstance(block, Mapping):
        return block.get(name)
    return None


def _raw_values(user: Mapping[str, Any], attribute: str) -> list[Any]:
    if attribute in ("userName", "externalId"):
        return [user.get(attribute)]
    if attribute in ("emails", "emails.primary"):
        emails = user.get("emails")
        if not isinstance(emails, list):
            return []
        picked = [e for e in emails if isinstance(e, Mapping)]
        if attribute == "emails.primary":
            picked = [e for e in picked if e.get("primary") is True]
        return [e.get("value") for e in picked]
    return [_extension_value(user, attribute)]


def identity_values(user: Mapping[str, Any], policy: Policy) -> list[str]:
    """The normalised identities a SCIM user resource produces, in ``key_attributes`` order,
    de-duplicated; empty, non-string and non-ASCII values are skipped."""
    out: list[str] = []
    for attribute in policy.identity.key_attributes:
        for raw in _raw_values(user, attribute):
            if not isinstance(raw, str):
                continue
            value = normalise_identity(raw)
            if value and is_usable_identity(value) and value not in out:
                out.append(value)
    return out


def identity_key(identity: str, secret: bytes) -> str:
    """HMAC-SHA256 of the normalised identity (UTF-8), uppercase hex."""
    digest = hmac.new(secret, normalise_identity(identity).encode("utf-8"), hashlib.sha256)
    return digest.hexdigest().upper()


def policy_value(idp_group_names_and_external_ids: Iterable[str], policy: Policy) -> str:
    """Comma-wrapped sorted slugs of the policy groups that any of the given IdP group names or
    externalIds map to (exact, case-sensitive match); ``,`` when none."""
    held = {g for g in idp_group_names_and_external_ids if isinstance(g, str) and g}
    slugs = sorted(
        slug for slug, group in policy.groups.items() if held.intersection(group.idp_groups)
    )
    return "," + "".join(f"{slug}," for slug in slugs)


def is_active(user: Mapping[str, Any]) -> bool:
    """SCIM ``active``: absent means active; anything but true/"true" is inactive (fail closed)."""
    active = user.get("active", True)
    if isinstance(active, bool):
        return active
    return isinstance(active, str) and active.strip().lower() == "true"


def entries_for_user(
    user: Mapping[str, Any],
    idp_groups: Iterable[Mapping[str, Any]],
    policy: Policy,
    secret: bytes,
) -> dict[str, str]:
    """Map entries (key -> value) for one user; ``{}`` when the user is inactive or has no
    identity. ``idp_groups`` are the user's groups as ``{displayName, externalId}`` dicts."""
    if not is_active(user):
        return {}
    names: list[str] = []
    for group in idp_groups:
        for field in ("displayName", "externalId"):
            value = group.get(field)
            if isinstance(value, str) and value:
                names.append(value)
    value = policy_value(names, policy)
    return {identity_key(identity, secret): value for identity in identity_values(user, policy)}


def _check_shards(shards: int) -> None:
    if shards not in VALID_SHARD_COUNTS:
        raise ValueError(f"shards must be one of {VALID_SHARD_COUNTS}, not {shards!r}")


def shard_of(key: str, shards: int) -> int:
    """The shard holding ``key``: the value of its first 1 (16 shards) or 2 (256) hex digits."""
    _check_shards(shards)
    if shards == 1:
        return 0
    width = 1 if shards == 16 else 2
    return int(key[:width], 16)


def map_file_name(shard: int, shards: int) -> str:
    """``identities.map`` for one shard, else ``identities-<hex>.map`` (lower-case hex, 1 or 2
    digits). HAProxy's rule for shard ``s`` matches keys beginning with the upper-case digits."""
    _check_shards(shards)
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} out of range for {shards} shards")
    if shards == 1:
        return "identities.map"
    width = 1 if shards == 16 else 2
    return f"identities-{shard:0{width}x}.map"


#: The small map looked up after the shard (its entry, when present, wins): the sync engine
#: puts every change here first, because ``add``/``set``/``del map`` on 2.6 walk the whole
#: map and this one stays small; the big shards are brought up to date behind it.
OVERLAY_MAP_NAME = "identities-recent.map"
#: An overlay value meaning "no entry" (a deprovisioned key whose shard still has one);
#: never a policy value (those are comma-wrapped), so HAProxy's ``-m beg ,`` rejects it.
OVERLAY_TOMBSTONE = "-"

#: What an identity key looks like (:func:`identity_key`): 64 uppercase hex digits. The
#: Runtime API adapter checks keys against this (handed in by the sync engine), so nothing
#: else ever becomes a key in HAProxy.
IDENTITY_KEY_RE = re.compile(r"[0-9A-F]{64}")
#: What an identities-map value looks like: the comma-wrapped policy-group slugs of
#: :func:`policy_value` (``,`` for an active user in no policy group), with the token cut-off's
#: ``@<not-before>`` (:func:`with_not_before`), or, in the overlay map only,
#: :data:`OVERLAY_TOMBSTONE`. Checked with ``fullmatch`` before anything is sent.
MAP_VALUE_RE = re.compile(r"-|,(?:[a-z0-9_-]+,)*(?:@[0-9]{1,10})?")
#: Separates a value's groups from the identity's not-before time (token cut-off).
NOT_BEFORE_MARK = "@"


def with_not_before(value: str, not_before: int | None) -> str:
    """``,admins,@1764770000``: the identity's groups and the first second a token of it
    may have been issued in (its last deprovisioning; token cut-off). HAProxy splits the
    two with ``field(1,@)`` / ``field(2,@)`` and compares the second with the token's iat."""
    if not_before is None:
        return value
    return f"{value}{NOT_BEFORE_MARK}{not_before}"


def map_file_names(shards: int) -> list[str]:
    """Every map file name of a layout, in shard order."""
    _check_shards(shards)
    return [map_file_name(s, shards) for s in range(shards)]

"""Which map files a target looks identities up in, and how keys are spread over them.

The running HAProxy config is the truth: the engine writes where HAProxy reads. The shard
count a fresh config is rendered with comes from :func:`choose_shards`; a target whose
loaded maps say otherwise is followed as loaded (with a warning), never "corrected".
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from scimgate.policy.compiler import (
    OVERLAY_MAP_NAME,
    VALID_SHARD_COUNTS,
    map_file_names,
    shard_of,
)

#: HAProxy >= 2.9 indexes map entries (set/del are tree operations); 2.6-2.8 walk the whole
#: entry list on every set/del (~50-66 ms at 1M entries, docs/haproxy-facts.md §2b).
INDEXED_MAPS_SINCE = (2, 9, 0)
#: Shards when set/del are O(map size): 1M entries / 16 = 62k per map, ~3 ms per update.
UNINDEXED_SHARDS = 16

_NAME_RE = re.compile(r"identities(?:-[0-9a-f]{1,2})?\.map")


def choose_shards(version: tuple[int, int, int], configured: int = 0) -> int:
    """The shard count for an HAProxy version: ``configured`` when set (1, 16 or 256),
    else 1 where map updates are indexed (>= 2.9) and 16 below. Pure: the config renderer
    and the sync engine call this with the same inputs and agree."""
    if configured:
        if configured not in VALID_SHARD_COUNTS:
            raise ValueError(f"map_shards must be 0 or one of {VALID_SHARD_COUNTS}")
        return configured
    return 1 if tuple(version) >= INDEXED_MAPS_SINCE else UNINDEXED_SHARDS


class LayoutError(Exception):
    """The target does not load a complete identities map layout."""


@dataclass(frozen=True)
class MapLayout:
    """``map_dir`` + shard count → the identities map paths, in shard order; ``overlay``,
    the overlay map's path when the target's config loads one (configs rendered before it
    existed do not: updates then go straight to the shards). Two layouts of the same files
    are equal whether or not an overlay was discovered yet."""

    map_dir: str
    shards: int
    overlay: str | None = field(default=None, compare=False)

    def with_overlay(self) -> MapLayout:
        return MapLayout(self.map_dir, self.shards, f"{self.map_dir}/{OVERLAY_MAP_NAME}")

    @property
    def paths(self) -> list[str]:
        return [f"{self.map_dir}/{name}" for name in map_file_names(self.shards)]

    def path_of(self, key: str) -> str:
        return self.paths[shard_of(key, self.shards)]

    def split(self, entries: Mapping[str, str]) -> list[dict[str, str]]:
        """Entries per shard, in shard order (empty dicts for empty shards)."""
        out: list[dict[str, str]] = [{} for _ in range(self.shards)]
        if self.shards == 1:
            out[0].update(entries)
            return out
        shard_of("0" * 64, self.shards)  # validates the count once, not per key
        # One dict lookup per key by its leading hex digit(s) (upper or lower case, as
        # int(..., 16) accepts), no int() parse: ~3x faster at 1M keys.
        digits = "0123456789abcdef"
        by_prefix: dict[str, dict[str, str]] = {}
        if self.shards == 16:
            for i, d in enumerate(digits):
                by_prefix[d] = by_prefix[d.upper()] = out[i]
            try:
                for key, value in entries.items():
                    by_prefix[key[0]][key] = value
            except (KeyError, IndexError, TypeError):
                raise ValueError("identity keys must start with hex digits") from None
        else:
            for i in range(256):
                for p in {f"{i:02x}", f"{i:02X}", f"{i:02x}"[0] + f"{i:02X}"[1],
                          f"{i:02X}"[0] + f"{i:02x}"[1]}:  # fmt: skip
                    by_prefix[p] = out[i]
            try:
                for key, value in entries.items():
                    by_prefix[key[:2]][key] = value
            except (KeyError, TypeError):
                raise ValueError("identity keys must start with hex digits") from None
        return out

    @classmethod
    def discover(cls, loaded_paths: Iterable[str], map_dir: str | None = None) -> MapLayout | None:
        """The complete layout among the maps HAProxy has loaded (``show map``), in
        ``map_dir`` if given; the largest complete one if several; None if there is none."""
        loaded_paths = list(loaded_paths)
        by_dir: dict[str, set[str]] = {}
        for path in loaded_paths:
            directory, name = os.path.split(path)
            if _NAME_RE.fullmatch(name):
                by_dir.setdefault(directory, set()).add(name)
        if map_dir is not None:
            wanted = map_dir.rstrip("/") or "/"
            by_dir = {d: n for d, n in by_dir.items() if d == wanted}
        overlays = {os.path.split(p) for p in loaded_paths if p.endswith("/" + OVERLAY_MAP_NAME)}
        for shards in sorted(VALID_SHARD_COUNTS, reverse=True):
            for directory, names in sorted(by_dir.items()):
                if set(map_file_names(shards)) <= names:
                    layout = cls(directory, shards)
                    return (
                        layout.with_overlay()
                        if (directory, OVERLAY_MAP_NAME) in overlays
                        else layout
                    )
        return None


def resolve_layout(
    loaded_paths: Iterable[str],
    *,
    version: tuple[int, int, int],
    configured_shards: int,
    map_dir: str | None,
) -> tuple[MapLayout, str | None]:
    """The layout to follow for a target, and a warning when it is not the expected one."""
    expected = choose_shards(version, configured_shards)
    loaded = MapLayout.discover(list(loaded_paths), map_dir)
    if loaded is None:
        where = f" in {map_dir}" if map_dir else ""
        raise LayoutError(
            f"HAProxy loads no complete identities map layout{where} "
            f"(expected {expected} shard(s): {map_file_names(expected)[0]} ...)"
        )
    warning = None
    if loaded.shards != expected:
        warning = (
            f"HAProxy's config loads {loaded.shards} identities map shard(s), but "
            f"{expected} are expected for version {'.'.join(map(str, version))} and "
            f"map_shards={configured_shards}; following the running config"
        )
    return loaded, warning

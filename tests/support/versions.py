"""The HAProxy versions the suite runs against: Debian 12's 2.6 (``/usr/sbin/haproxy`` or
$PATH) and 3.0 LTS, built once by ``scripts/build-haproxy-3.0.sh`` (``make test`` does)
into ``${SCIMGATE_CACHE:-${XDG_CACHE_HOME:-~/.cache}/scimgate}/haproxy-3.0.11/haproxy``
(``$SCIMGATE_HAPROXY_30`` names another 3.0 binary).

A test asks for the ``haproxy_version`` fixture (tests/fixtures/haproxy.py) to run once per
version; its id names the version (``[haproxy-3.0]``). A version whose binary is missing is
skipped, unless ``$SCIMGATE_REQUIRE_HAPROXY`` lists it (``make test`` sets ``2.6,3.0``):
then the test fails, so CI cannot pass by skipping.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from scimgate.haproxy.process import binary_version

VERSION_LABELS = ("2.6", "3.0")
HAPROXY_30 = "3.0.11"


@dataclass(frozen=True)
class HAProxyBinary:
    label: str  # "2.6", "3.0"
    path: str
    version: tuple[int, int, int]

    @property
    def indexes_maps(self) -> bool:
        """From 2.9 on map entries are indexed: one shard, no O(n) walk."""
        return self.version >= (2, 9, 0)


def cache_dir() -> Path:
    root = os.environ.get("SCIMGATE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "scimgate"
    )
    return Path(root)


def _candidates(label: str) -> list[str]:
    if label == "2.6":
        found = shutil.which("haproxy")
        return [p for p in (found, "/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if p]
    return [
        p
        for p in (
            os.environ.get("SCIMGATE_HAPROXY_30"),
            str(cache_dir() / f"haproxy-{HAPROXY_30}" / "haproxy"),
        )
        if p
    ]


def find_binary(label: str) -> HAProxyBinary | None:
    """The binary of ``label``'s major.minor, or None."""
    for path in _candidates(label):
        if not os.access(path, os.X_OK):
            continue
        try:
            version = binary_version(path)
        except (OSError, RuntimeError):
            continue
        if f"{version[0]}.{version[1]}" == label:
            return HAProxyBinary(label, path, version)
    return None


def required() -> set[str]:
    raw = os.environ.get("SCIMGATE_REQUIRE_HAPROXY", "")
    return {part.strip() for part in raw.split(",") if part.strip()}

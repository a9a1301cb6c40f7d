"""Reply parsing: what HAProxy's CLI answers, turned into values (pure, no I/O).

Facts this relies on (HAProxy 2.6.12, measured: docs/haproxy-facts.md §1, §2a):

- Interactive (``prompt``) mode: every reply ends with ``\\n> ``; payload lines are
  acknowledged with ``+ `` prompts. A successful ``add``/``set``/``del``/``commit`` replies
  with nothing; errors are text. With ``set severity-output number`` errors start ``[3]:``.
- ``set map`` does not create (``entry not found.``); ``del map`` of an absent key says
  ``Key not found.``; ``prepare map`` says ``New version created: <n>``.
- ``show map`` without a map lists the loaded maps with ``curr_ver``/``next_ver`` and an
  ``entry_cnt`` that counts every version, staged ones too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from scimgate.haproxy.errors import RuntimeCommandError

PROMPT = b"\n> "
_PLUS_PROMPTS = re.compile(rb"(?:\+ )*")
_SEVERITY = re.compile(r"^\[(\d)\]: ?")
NOT_FOUND_SET = "entry not found."
NOT_FOUND_DEL = "Key not found."
_GET_VALUE = re.compile(r'\bvalue="(.*)", type="')
_PREPARED = re.compile(r"New version created: (\d+)")
#: What a reply that could not be read stands for in a comparison: never a real value.
UNREADABLE = "\0unreadable"


def take_replies(
    buf: bytearray, scan_from: int, payload: Sequence[bool], replies: list[str]
) -> int:
    """Move every complete reply from the front of buf into replies (in place).

    ``payload[i]`` says whether request i was a payload request (its reply is preceded by one
    ``+ `` prompt per line received). A reply ends at ``\\n> ``; its text is everything
    before (one trailing newline dropped). Returns the offset from which the next search for
    a prompt must start."""
    pos = 0
    n = len(payload)
    while len(replies) < n:
        if payload[len(replies)]:
            m = _PLUS_PROMPTS.match(buf, pos)
            pos = m.end() if m else pos
            if len(buf) - pos < 2:
                break
            scan_from = max(scan_from, pos)
        idx = buf.find(PROMPT, max(pos, scan_from))
        if idx < 0:
            scan_from = max(pos, len(buf) - len(PROMPT) + 1)
            break
        if idx == pos:
            replies.append("")
        else:
            text = buf[pos:idx].decode("utf-8", "replace")
            replies.append(text[:-1] if text.endswith("\n") else text)
        pos = idx + len(PROMPT)
    if pos:
        del buf[:pos]
    return max(0, scan_from - pos)


def message(reply: str) -> tuple[int | None, str]:
    """Split ``[3]: entry not found.`` into (3, ``entry not found.``)."""
    m = _SEVERITY.match(reply)
    if m:
        return int(m.group(1)), reply[m.end() :].strip()
    return None, reply.strip()


def set_outcome(cmd: str, reply: str) -> bool:
    """``set map``: True if updated, False on ``entry not found.``; raises on anything else."""
    if not reply.strip():
        return True
    if message(reply)[1] == NOT_FOUND_SET:
        return False
    raise RuntimeCommandError(cmd.strip(), reply)


def del_outcome(cmd: str, reply: str) -> bool:
    """``del map``: True if deleted, False on ``Key not found.``; raises on anything else."""
    if not reply.strip():
        return True
    if message(reply)[1] == NOT_FOUND_DEL:
        return False
    raise RuntimeCommandError(cmd.strip(), reply)


def get_map_value(reply: str) -> str | None:
    """``get map``: the value a request would see, None when not found. Anything else (an
    error, an unparseable reply) is :data:`UNREADABLE`: never equal to a real value, so a
    comparison fails closed."""
    if "found=no" in reply:
        return None
    m = _GET_VALUE.search(reply)
    return m.group(1) if "found=yes" in reply and m else UNREADABLE


def prepared_version(reply: str) -> int | None:
    """``prepare map``: the new version, None if the reply is anything else."""
    m = _PREPARED.fullmatch(message(reply)[1])
    return int(m.group(1)) if m else None


def parse_info(text: str) -> dict[str, str]:
    """``show info``: ``Name: value`` lines."""
    info: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


@dataclass(frozen=True)
class MapInfo:
    """One line of ``show map``: ``entry_cnt`` counts every version, staged ones too."""

    map_id: int
    path: str
    curr_ver: int
    next_ver: int
    entry_cnt: int


_MAP_LIST_LINE = re.compile(
    r"^(?P<id>-?\d+) \((?P<path>[^)]*)\).*?curr_ver=(?P<curr>\d+) next_ver=(?P<next>\d+)"
    r" entry_cnt=(?P<cnt>\d+)"
)


def parse_map_list(text: str) -> list[MapInfo]:
    """``show map`` (no argument): every loaded map; lines that are not map lines are skipped."""
    out = []
    for line in text.splitlines():
        m = _MAP_LIST_LINE.match(line)
        if m:
            out.append(
                MapInfo(int(m["id"]), m["path"], int(m["curr"]), int(m["next"]), int(m["cnt"]))
            )
    return out


def parse_map_entries(reply: str) -> list[tuple[str, str]]:
    """``show map [@ver] <map>``: every ``0x<id> key value`` line in order, duplicates
    included; raises on an error reply or a line of another shape."""
    if message(reply)[0] is not None:
        raise RuntimeCommandError("show map", reply)
    entries: list[tuple[str, str]] = []
    for line in reply.split("\n"):
        if not line:
            continue
        parts = line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("0x"):
            raise RuntimeCommandError("show map", reply, f"unparseable show map line {line!r}")
        entries.append((parts[1], parts[2] if len(parts) == 3 else ""))
    return entries


def parse_version(text: str) -> tuple[int, int, int]:
    """``2.6.12-1+deb12u4`` → (2, 6, 12); ``3.0-dev1`` → (3, 0, 0)."""
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if m is None:
        raise ValueError(f"no HAProxy version in {text!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)

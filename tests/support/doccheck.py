"""The docs check: the shell sessions in README.md and docs/*.md, parsed, run and compared.

Conventions (HTML comments, invisible on a rendered page), on the line right before a fence:

* ``<!-- doc-check: skip REASON -->``: the block is an example only (a production host name,
  a real IdP tenant, systemd); REASON is required and is counted in the check's summary.
* ``<!-- doc-check: file PATH -->``: the block is the content of PATH in the instance
  directory, compared after normalisation.
* no marker: a ``console`` or ``sh`` block is run. Each ``$ `` line (with its ``\\``
  continuations and multi-line quotes) is one command; the lines up to the next ``$ `` are
  its output, compared after normalisation. An output line ``…`` stands for any number of
  lines, and ``…`` inside a line for any text.

A document opts in to a live instance with one comment anywhere in it:
``<!-- doc-check: instance /tmp/ops-demo ports=18431,18481 -->``: the path and the ports in
the commands are replaced by a fresh directory and free ports, and mapped back in the output.
With ``up`` after the path, the check starts ``scimgate up`` on that directory first (for a
page that assumes a running instance).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

MARKER_RE = re.compile(r"^<!--\s*doc-check:\s*(\w+)\s*(.*?)\s*-->\s*$")
INSTANCE_RE = re.compile(
    r"<!--\s*doc-check:\s*instance\s+(\S+)(\s+up)?(?:\s+ports=([\d,]+))?\s*-->"
)
FENCE_RE = re.compile(r"^```(\w*)\s*$")
# languages whose blocks hold commands: each must be run or carry a skip marker
SHELL_LANGUAGES = frozenset({"console", "sh", "shell", "bash"})
ELLIPSIS = "…"


@dataclass
class Command:
    line: int
    text: str
    expected: list[str] = field(default_factory=list)


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    lines: list[str]
    marker: str | None = None  # "skip", "file", or None
    argument: str = ""

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.marker is None and self.language in SHELL_LANGUAGES


@dataclass
class Document:
    path: Path
    blocks: list[Block]
    instance_path: str | None = None
    start_up: bool = False  # the check starts `scimgate up` itself (the page assumes one)
    ports: list[int] = field(default_factory=list)


def parse_document(path: Path) -> Document:
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = FENCE_RE.match(lines[i])
        if not fence:
            i += 1
            continue
        start = i
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        block = Block(path, start + 1, fence.group(1), lines[start + 1 : j])
        prev = start - 1
        while prev >= 0 and not lines[prev].strip():
            prev -= 1
        marker = MARKER_RE.match(lines[prev]) if prev >= 0 else None
        if marker and marker.group(1) in ("skip", "file"):
            block.marker, block.argument = marker.group(1), marker.group(2)
        blocks.append(block)
        i = j + 1
    doc = Document(path, blocks)
    instance = INSTANCE_RE.search(path.read_text())
    if instance:
        doc.instance_path = instance.group(1)
        doc.start_up = bool(instance.group(2))
        doc.ports = [int(p) for p in (instance.group(3) or "").split(",") if p]
    return doc


def _open_quote(text: str) -> bool:
    """True while a single- or double-quoted string is still open (a multi-line argument)."""
    quote = ""
    escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\" and quote != "'":
            escaped = True
        elif quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
    return bool(quote)


def commands_of(block: Block) -> list[Command]:
    """The block's commands and the output each one shows."""
    commands: list[Command] = []
    i = 0
    lines = block.lines
    while i < len(lines):
        line = lines[i]
        if not line.startswith("$ "):
            if commands:
                commands[-1].expected.append(line)
            i += 1
            continue
        text = line[2:]
        start = i
        while (text.endswith("\\") or _open_quote(text)) and i + 1 < len(lines):
            i += 1
            text += "\n" + lines[i]
        commands.append(Command(block.line + 1 + start, text))
        i += 1
    return commands


_NORMALISERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\r$", re.MULTILINE), ""),  # HTTP header lines as `curl -i` prints them
    (re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+"), "<JWT>"),
    (re.compile(r"sgt_[\w-]+"), "sgt_<SECRET>"),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<UUID>"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z"), "<TIME>"),
    (re.compile(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d\.\d+"), "<TIME>"),
    (re.compile(r"^date: .*$", re.IGNORECASE | re.MULTILINE), "date: <DATE>"),
    (re.compile(r"\b[0-9A-Fa-f]{64}\b"), "<HEX64>"),
    (re.compile(r"\b[0-9a-f]{32}\b"), "<HEX32>"),
    (re.compile(r"\d+\.\d+(?:e[+-]?\d+)?"), "<NUM>"),
    (re.compile(r'"(pid|scimgate|haproxy)": \d+'), r'"\1": <PID>'),
    (re.compile(r"\(pid \d+\)"), "(pid <PID>)"),
    (re.compile(r"[ \t]+"), " "),
)


def normalise(text: str) -> str:
    """Ids, times, hashes, secrets, decimals and column padding: what differs between runs."""
    for pattern, replacement in _NORMALISERS:
        text = pattern.sub(replacement, text)
    return "\n".join(line.rstrip() for line in text.splitlines())


def expected_pattern(expected: list[str]) -> re.Pattern[str]:
    """The shown output as a regex: ``…`` alone on a line is any lines, inside a line any text."""
    parts: list[str] = []
    for line in normalise("\n".join(expected)).splitlines():
        if line.strip() == ELLIPSIS:
            parts.append(r"(?:[^\n]*\n)*?")
            continue
        body = ".*?".join(re.escape(piece) for piece in line.split(ELLIPSIS))
        parts.append(body + r"\n")
    return re.compile("".join(parts), re.DOTALL)


def output_matches(expected: list[str], actual: str) -> bool:
    while expected and not expected[-1].strip():
        expected = expected[:-1]
    text = normalise(actual)
    text = text + "\n" if text else ""
    return expected_pattern(expected).fullmatch(text) is not None

"""The docs check: every command in README.md and docs/*.md runs against a real `scimgate up`
instance (one per document) and prints what the page shows, so a page that drifts from the
product fails `make test`. Blocks that cannot run here carry a `doc-check: skip REASON`
marker; the conventions are in tests/support/doccheck.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.doccheck import (
    Document,
    commands_of,
    normalise,
    output_matches,
    parse_document,
)
from tests.support.docshell import DocShell, shell_env, venv_bin
from tests.support.net import free_port
from tests.support.up import UpStack, start_up

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _documents() -> list[Document]:
    return [parse_document(page) for page in PAGES]


def test_every_shell_block_runs_or_says_why_not() -> None:
    """A shell block is run, or marked as an example with a reason; a run command is whole."""
    problems: list[str] = []
    run = skipped = 0
    for doc in _documents():
        for block in doc.blocks:
            if block.marker == "skip":
                skipped += 1
                if not block.argument:
                    problems.append(f"{block.where}: skip marker without a reason")
            if block.marker == "file" and doc.instance_path is None:
                problems.append(f"{block.where}: file block in a page without an instance")
            if not block.runs:
                continue
            run += 1
            if doc.instance_path is None:
                problems.append(f"{block.where}: shell block in a page without an instance marker")
            commands = commands_of(block)
            if not commands:
                problems.append(f"{block.where}: shell block without a `$ ` command")
            for command in commands:
                if "…" in command.text:
                    problems.append(
                        f"{doc.path.name}:{command.line}: elided command {command.text!r}"
                    )
    assert not problems, "\n".join(problems)
    assert run > 0, "no shell block is run: the marker conventions broke"
    print(f"docs check: {run} shell blocks run, {skipped} marked as examples only")


def _runnable() -> list[Document]:
    return [d for d in _documents() if any(b.runs or b.marker == "file" for b in d.blocks)]


@pytest.fixture(scope="module")
def running_instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpStack]:
    """One `scimgate up` shared by the pages that assume a running instance (`up` marker):
    they only add tokens of their own names and read files, so they do not disturb each
    other, and one start instead of one per page keeps the check short."""
    up = start_up(tmp_path_factory.mktemp("docs") / "instance")
    try:
        yield up
    finally:
        up.stop()


@pytest.mark.parametrize("doc", _runnable(), ids=lambda d: d.path.name)
def test_page_commands_print_what_the_page_shows(
    doc: Document, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    assert doc.instance_path is not None
    if doc.start_up:
        instance = request.getfixturevalue("running_instance").directory
    else:
        instance = tmp_path / "instance"
    swaps = [(doc.instance_path, str(instance))]
    swaps += [(str(port), str(free_port())) for port in doc.ports]
    shell = DocShell(tmp_path, shell_env(venv_bin(), tmp_path))
    failures: list[str] = []
    try:
        for block in doc.blocks:
            if not block.runs:
                continue
            for command in commands_of(block):
                text = command.text
                for doc_value, real_value in swaps:
                    text = re.sub(rf"(?<![\w.]){re.escape(doc_value)}(?!\d)", real_value, text)
                output, _ = shell.run(text)
                output = _unswap(output, swaps)
                if not output_matches(command.expected, output):
                    failures.append(
                        f"{doc.path.name}:{command.line}: $ {command.text}\n"
                        f"--- shown\n" + "\n".join(command.expected) + f"\n--- printed\n{output}"
                    )
                    if len(failures) >= 5:
                        break
            if len(failures) >= 5:
                break
        # files are compared once the page's commands ran (a page may show a file before the
        # command that creates it, as operations.md does with scimgate.yaml)
        for block in doc.blocks:
            if block.marker == "file":
                # the same rules as shown output: `…` inside a line is any text (the demo
                # policy's WebSocket backend listens on a free port chosen at start-up)
                real = _unswap((instance / block.argument).read_text(), swaps)
                if not output_matches(block.lines, real):
                    failures.append(f"{block.where}: {block.argument} differs:\n{normalise(real)}")
    finally:
        shell.close()
    assert not failures, "\n\n".join(failures)


def _unswap(text: str, swaps: list[tuple[str, str]]) -> str:
    for doc_value, real_value in swaps:
        text = re.sub(rf"(?<![\w.]){re.escape(real_value)}(?!\d)", doc_value, text)
    return text

"""House rule, checked on the code: in sync/ and haproxy/ no object reaches into another
object's private members (``other._x``): it calls the owner's methods instead."""

from __future__ import annotations

import ast
from pathlib import Path

import scimgate

SRC = Path(scimgate.__file__).parent
ROOMS = ("sync", "haproxy")


def private_reaches(source: str) -> list[str]:
    """``line: .name`` of every ``x._name`` where ``x`` is not ``self``/``cls``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        if not node.attr.startswith("_") or node.attr.startswith("__"):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        found.append(f"{node.lineno}: .{node.attr}")
    return found


def test_no_reaching_into_private_members() -> None:
    files = [f for room in ROOMS for f in sorted((SRC / room).glob("*.py"))]
    assert len(files) > 15
    hits = [f"{f.relative_to(SRC)}:{h}" for f in files for h in private_reaches(f.read_text())]
    assert hits == []


def test_the_check_sees_a_reach() -> None:
    sample = "def f(engine, self):\n    return engine._head, self._ok, engine.__class__\n"
    assert private_reaches(sample) == ["2: ._head"]

"""Well-formed text for everything a SCIM client sends (RFC 8259, RFC 7644 §3.12).

Does: parse a request body as UTF-8 JSON (RFC 8259 §8.1) and refuse what no store can hold
or no response can echo: lone UTF-16 surrogates (``"\\ud800"`` escapes, or raw surrogate
bytes, which Python's ``json`` would accept), NUL (PostgreSQL text cannot hold it), ``NaN``
and ``Infinity`` (not JSON), nesting deeper than :data:`MAX_DEPTH`; check one string against
a length bound; render client text safely inside an error detail.
Does not: per-attribute rules (``scim.resource``), or anything about HTTP.

Cost: a body is walked only when a byte-level pre-check says it might hold a hazard (a
``\\uD8xx``-``\\uDFxx`` or ``\\u0000`` escape, or more brackets than :data:`MAX_DEPTH`); the
common IdP body costs one regex scan and two ``str.count`` calls.
"""

from __future__ import annotations

import json
import re
from typing import Any

from scimgate.scim.errors import InvalidSyntax, InvalidValue

# SCIM resources nest 4 levels at most (extension → manager → value); a Bulk operation adds 3.
MAX_DEPTH = 32
# Hazards only escapes can carry once the body is strict UTF-8 (raw NUL is not legal JSON).
_SUSPECT_ESCAPE = re.compile(r"\\u(?:[dD][89a-fA-F][0-9a-fA-F]{2}|0000)")
_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")
_UNSAFE_ECHO = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
_BOM = "\ufeff"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_json(raw: bytes, *, check: bool = True) -> Any:
    """The body as JSON; any defect is invalidSyntax (or invalidValue, naming where).

    ``check=False`` skips the walk for surrogates, NUL and depth: the caller checks the parts
    it uses with :func:`check_document` (Bulk: one operation at a time, so that one bad
    operation fails alone, RFC 7644 §3.7.3).
    """
    try:
        text = raw.decode("utf-8")  # strict: encoded surrogates (ED A0..BF ..) are refused
    except UnicodeDecodeError as exc:
        raise InvalidSyntax(f"request body is not UTF-8 (byte {exc.start})") from None
    if text.startswith(_BOM):
        text = text[1:]
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        detail = str(exc) if isinstance(exc, ValueError) else "JSON nested too deeply"
        raise InvalidSyntax(f"request body is not valid JSON: {echo(detail, 200)}") from None
    if check and suspect(text):
        check_document(value)
    return value


def suspect(text: str) -> bool:
    """Whether parsed JSON of ``text`` may hold a surrogate, NUL or deep nesting."""
    return _SUSPECT_ESCAPE.search(text) is not None or text.count("[") + text.count("{") > MAX_DEPTH


def check_document(value: Any, where: str = "") -> None:
    """Every key and string well-formed (no lone surrogate, no NUL), nesting bounded.

    Iterative: a document nested up to Python's recursion limit cannot overflow the stack.
    """
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, str):
            if problem := char_problem(node):
                raise InvalidValue(f"{path or 'value'}: string {problem}")
        elif isinstance(node, dict | list):
            if depth >= MAX_DEPTH:
                raise InvalidValue(f"{path or 'body'}: nested deeper than {MAX_DEPTH} levels")
            if isinstance(node, dict):
                for key, item in node.items():
                    child = f"{path}.{echo(key, 40)}" if path else echo(key, 40)
                    if problem := char_problem(key):
                        raise InvalidValue(f"{child}: key {problem}")
                    stack.append((item, child, depth + 1))
            else:
                stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(node))


def char_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored (a lone surrogate, NUL), or None."""
    if text.isascii() and "\x00" not in text:
        return None
    bad = _BAD_CHAR.search(text)
    if bad is None:
        return None
    if bad.group() == "\x00":
        return "contains NUL (U+0000)"
    return f"is not well-formed Unicode (lone surrogate U+{ord(bad.group()):04X})"


def check_string(value: str, path: str, max_chars: int) -> str:
    """One string to be stored: well-formed, no NUL, at most ``max_chars`` characters."""
    if problem := char_problem(value):
        raise InvalidValue(f"attribute '{path}': {problem}")
    if len(value) > max_chars:
        raise InvalidValue(f"attribute '{path}': longer than {max_chars} characters")
    return value


def echo(text: Any, limit: int = 64) -> str:
    """Client text made safe to put in an error detail: bounded, control characters and
    surrogates escaped (a detail must always encode as UTF-8)."""
    shown = text if isinstance(text, str) else repr(text)
    cut = shown[:limit] + ("…" if len(shown) > limit else "")
    if cut.isprintable() and cut.isascii():
        return cut
    return _UNSAFE_ECHO.sub(lambda m: f"\\u{ord(m.group()):04x}", cut)

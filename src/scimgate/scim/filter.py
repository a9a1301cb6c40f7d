"""SCIM filter and PATCH path parsing (RFC 7644 §3.4.2.2, §3.5.2): the filter AST.

Pure Python, no I/O. The grammar is RFC 7644 Figure 1:

    FILTER    = attrExp / logExp / valuePath / *1"not" "(" FILTER ")"
    valuePath = attrPath "[" valFilter "]"
    attrExp   = (attrPath SP "pr") / (attrPath SP compareOp SP compValue)
    logExp    = FILTER SP ("and" / "or") SP FILTER

parsed by recursive descent with the usual precedence ``not`` > ``and`` > ``or``
(RFC 7644 §3.4.2.2, "Filters MUST be evaluated using the following order of operations").

Tolerated extensions, because real identity providers send them:

* ``emails[type eq "work"].value eq "x"`` (Microsoft Entra), read as
  ``emails[type eq "work" and value eq "x"]``;
* ``not`` without parentheses (``not userName eq "x"``), binding tighter than ``and``;
* any whitespace between tokens, not only SP.

The SQL translation lives in ``scimgate.store.filter_sql``; ``scim.filter_match.matches``
evaluates a filter against one JSON object (PATCH on multi-valued attributes, RFC 7644
§3.5.2).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import TypeAlias

from scimgate.scim.errors import InvalidFilter, InvalidPath, ScimError

MAX_FILTER_LENGTH = 4096
MAX_DEPTH = 32

Value: TypeAlias = str | int | float | bool | None

# RFC 7644 §3.4.2.2, Table 3.
COMPARE_OPS = frozenset({"eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"})
ORDER_OPS = frozenset({"gt", "ge", "lt", "le"})
SUBSTRING_OPS = frozenset({"co", "sw", "ew"})


# --------------------------------------------------------------------------- AST


@dataclass(frozen=True)
class Compare:
    path: str
    op: str  # lower-case, one of COMPARE_OPS
    value: Value


@dataclass(frozen=True)
class Present:
    path: str


@dataclass(frozen=True)
class And:
    left: Node
    right: Node


@dataclass(frozen=True)
class Or:
    left: Node
    right: Node


@dataclass(frozen=True)
class Not:
    inner: Node


@dataclass(frozen=True)
class ValuePath:
    """``attr[filter]``; paths inside ``filter`` are relative to ``attr`` (RFC 7644 §3.4.2.2)."""

    attr: str
    filter: Node


Node: TypeAlias = Compare | Present | And | Or | Not | ValuePath


@dataclass(frozen=True)
class PatchPath:
    """RFC 7644 §3.5.2: ``PATH = attrPath / valuePath [subAttr]``.

    ``attr`` keeps its schema URN prefix when one was given (``urn:...:User:manager``).
    """

    attr: str
    filter: Node | None
    sub: str | None


# --------------------------------------------------------------------------- lexer

# Token kinds
_WORD = "word"  # attribute path or keyword
_STRING = "string"
_NUMBER = "number"
_LPAREN = "("
_RPAREN = ")"
_LBRACK = "["
_RBRACK = "]"
_DOT = "."
_END = "end of input"


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    pos: int  # 0-based offset in the input
    value: Value = None


# RFC 7644 §3.10 / RFC 7643 §2.1: ATTRNAME = ALPHA *(nameChar), nameChar = "-" / "_" /
# DIGIT / ALPHA; URN prefixes add ":" and "." (e.g. "...:2.0:User:"). "$" admits "$ref".
_WORD_RE = re.compile(r"[A-Za-z$_][A-Za-z0-9$_\-:.]*")
# RFC 7159 §6 number.
_NUMBER_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
# RFC 7159 §7 string (control characters must be escaped).
_STRING_RE = re.compile(r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"')
_SPACE_RE = re.compile(r"\s+")
_ATTRNAME = r"[A-Za-z$][A-Za-z0-9$_\-]*"
_SIMPLE_PATH_RE = re.compile(rf"{_ATTRNAME}(?:\.{_ATTRNAME})?")
_ATTRNAME_RE = re.compile(_ATTRNAME)
_URN_RE = re.compile(r"urn:[A-Za-z0-9][A-Za-z0-9\-]*:[A-Za-z0-9()+,\-.:=@;$_!*'%/?#]+", re.I)


def _describe(tok: _Token) -> str:
    if tok.kind == _END:
        return "end of input"
    text = tok.text if len(tok.text) <= 40 else tok.text[:37] + "..."
    return repr(text)


class _Lexer:
    def __init__(self, text: str, error: type[ScimError]) -> None:
        self.text = text
        self.error = error
        self.tokens = self._tokenize()

    def fail(self, pos: int, message: str) -> ScimError:
        return self.error(f"{message} at position {pos + 1}")

    def _tokenize(self) -> list[_Token]:
        text = self.text
        out: list[_Token] = []
        i = 0
        n = len(text)
        while i < n:
            m = _SPACE_RE.match(text, i)
            if m:
                i = m.end()
                continue
            ch = text[i]
            if ch in "()[].":
                out.append(_Token(ch, ch, i))
                i += 1
            elif ch == '"':
                m = _STRING_RE.match(text, i)
                if not m:
                    raise self.fail(i, "unterminated or malformed string literal")
                try:
                    decoded = json.loads(m.group())
                    decoded.encode("utf-8")  # rejects lone surrogates ("\ud800")
                except (ValueError, UnicodeEncodeError):
                    raise self.fail(i, "malformed string literal") from None
                out.append(_Token(_STRING, m.group(), i, decoded))
                i = m.end()
            elif ch == "-" or ch.isdigit():
                m = _NUMBER_RE.match(text, i)
                if not m:
                    raise self.fail(i, "malformed number")
                end = m.end()
                if end < n and (text[end].isalnum() or text[end] in "$_-:."):
                    raise self.fail(i, "malformed number")
                raw = m.group()
                num: int | float
                if re.fullmatch(r"-?[0-9]+", raw):
                    num = int(raw)
                else:
                    num = float(raw)
                    if not math.isfinite(num):
                        raise self.fail(i, "number out of range")
                out.append(_Token(_NUMBER, raw, i, num))
                i = end
            else:
                m = _WORD_RE.match(text, i)
                if not m:
                    raise self.fail(i, f"unexpected character {ch!r}")
                out.append(_Token(_WORD, m.group(), i))
                i = m.end()
        out.append(_Token(_END, "", n))
        return out


def _check_attr_path(path: str, *, relative: bool) -> bool:
    """Syntax of ``attrPath = [URI ":"] ATTRNAME *1subAttr`` (RFC 7644 §3.10).

    Inside ``[...]`` (``relative``) only a bare ATTRNAME (optionally ``.sub``) is allowed.
    """
    if relative:
        return bool(_ATTRNAME_RE.fullmatch(path))
    if ":" in path:
        urn, _, rest = path.rpartition(":")
        return bool(_URN_RE.fullmatch(urn)) and bool(_SIMPLE_PATH_RE.fullmatch(rest))
    return bool(_SIMPLE_PATH_RE.fullmatch(path))


def _adjacent_name(dot: _Token, tok: _Token) -> bool:
    """``].sub``: an ATTRNAME right after the dot, no space (RFC 7644 §3.5.2 subAttr)."""
    return tok.kind == _WORD and tok.pos == dot.pos + 1 and bool(_ATTRNAME_RE.fullmatch(tok.text))


# --------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, text: str, error: type[ScimError]) -> None:
        self.lexer = _Lexer(text, error)
        self.tokens = self.lexer.tokens
        self.i = 0
        self.depth = 0
        self.error = error

    # helpers
    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def advance(self) -> _Token:
        tok = self.tokens[self.i]
        if tok.kind != _END:
            self.i += 1
        return tok

    def fail(self, tok: _Token, expected: str) -> ScimError:
        return self.lexer.fail(tok.pos, f"expected {expected}, got {_describe(tok)}")

    def is_keyword(self, tok: _Token, *words: str) -> bool:
        return tok.kind == _WORD and tok.text.lower() in words

    def expect(self, kind: str, expected: str) -> _Token:
        if self.tok.kind != kind:
            raise self.fail(self.tok, expected)
        return self.advance()

    def enter(self, tok: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.lexer.fail(tok.pos, f"filter nested deeper than {MAX_DEPTH} levels")

    # grammar
    def parse_filter(self) -> Node:
        node = self.or_expr(in_brackets=False)
        if self.tok.kind != _END:
            raise self.fail(self.tok, "'and', 'or' or end of filter")
        return node

    def or_expr(self, *, in_brackets: bool) -> Node:
        node = self.and_expr(in_brackets=in_brackets)
        while self.is_keyword(self.tok, "or"):
            self.advance()
            node = Or(node, self.and_expr(in_brackets=in_brackets))
        return node

    def and_expr(self, *, in_brackets: bool) -> Node:
        node = self.unary(in_brackets=in_brackets)
        while self.is_keyword(self.tok, "and"):
            self.advance()
            node = And(node, self.unary(in_brackets=in_brackets))
        return node

    def unary(self, *, in_brackets: bool) -> Node:
        tok = self.tok
        if self.is_keyword(tok, "not"):
            self.advance()
            self.enter(tok)
            inner = self.unary(in_brackets=in_brackets)
            self.depth -= 1
            return Not(inner)
        if tok.kind == _LPAREN:
            self.advance()
            self.enter(tok)
            inner = self.or_expr(in_brackets=in_brackets)
            self.expect(_RPAREN, "')' to close the '(' at position " + str(tok.pos + 1))
            self.depth -= 1
            return inner
        return self.attr_expr(in_brackets=in_brackets)

    def attr_path(self, *, relative: bool) -> str:
        tok = self.tok
        if tok.kind != _WORD or self.is_keyword(tok, "and", "or", "not"):
            raise self.fail(tok, "an attribute path" + ("" if relative else ", '(' or 'not'"))
        if not _check_attr_path(tok.text, relative=relative):
            what = "sub-attribute name" if relative else "attribute path"
            raise self.lexer.fail(tok.pos, f"invalid {what} {_describe(tok)}")
        self.advance()
        return tok.text

    def attr_expr(self, *, in_brackets: bool) -> Node:
        path_tok = self.tok
        path = self.attr_path(relative=in_brackets)
        if self.tok.kind == _LBRACK:
            if in_brackets:
                raise self.lexer.fail(self.tok.pos, "nested '[' filters are not allowed")
            if "." in path.rpartition(":")[2]:
                raise self.lexer.fail(
                    path_tok.pos,
                    f"'[' must follow a complex attribute, not the sub-attribute {path!r}",
                )
            open_tok = self.advance()
            self.enter(open_tok)
            inner = self.or_expr(in_brackets=True)
            self.expect(_RBRACK, f"']' to close the '[' at position {open_tok.pos + 1}")
            self.depth -= 1
            if self.tok.kind == _DOT:
                # Entra: emails[type eq "work"].value eq "x"
                dot = self.advance()
                sub_tok = self.tok
                if not _adjacent_name(dot, sub_tok):
                    raise self.fail(sub_tok, "a sub-attribute name directly after '].'")
                self.advance()
                inner = And(inner, self.comparison(sub_tok.text))
            return ValuePath(path, inner)
        return self.comparison(path)

    def comparison(self, path: str) -> Node:
        op_tok = self.tok
        if op_tok.kind != _WORD:
            raise self.fail(
                op_tok, f"an operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr) after {path!r}"
            )
        op = op_tok.text.lower()
        if op == "pr":
            self.advance()
            return Present(path)
        if op not in COMPARE_OPS:
            raise self.lexer.fail(
                op_tok.pos,
                f"unknown operator {_describe(op_tok)} after {path!r} "
                "(expected eq, ne, co, sw, ew, gt, ge, lt, le or pr)",
            )
        self.advance()
        val_tok = self.tok
        if val_tok.kind in (_STRING, _NUMBER):
            self.advance()
            return Compare(path, op, val_tok.value)
        if val_tok.kind == _WORD and val_tok.text.lower() in ("true", "false", "null"):
            self.advance()
            word = val_tok.text.lower()
            return Compare(path, op, None if word == "null" else word == "true")
        raise self.fail(val_tok, f"a value (string, number, true, false or null) after '{op}'")


def _check_length(text: str, error: type[ScimError]) -> None:
    if len(text) > MAX_FILTER_LENGTH:
        raise error(f"longer than {MAX_FILTER_LENGTH} characters")


def parse_filter(text: str) -> Node:
    """Parse a SCIM filter (RFC 7644 §3.4.2.2); any syntax error raises InvalidFilter."""
    _check_length(text, InvalidFilter)
    if not text.strip():
        raise InvalidFilter("empty filter")
    return _Parser(text, InvalidFilter).parse_filter()


def parse_path(text: str) -> PatchPath:
    """Parse a PATCH ``path`` (RFC 7644 §3.5.2); any syntax error raises InvalidPath."""
    _check_length(text, InvalidPath)
    if not text.strip():
        raise InvalidPath("empty path")
    p = _Parser(text, InvalidPath)
    attr = p.attr_path(relative=False)
    flt: Node | None = None
    sub: str | None = None
    urn, colon, rest = attr.rpartition(":")
    if "." in rest:
        # attrPath = [URI ":"] ATTRNAME subAttr: name.givenName, urn:...:User:name.givenName
        head, _, sub = rest.partition(".")
        attr = urn + colon + head
    if p.tok.kind == _LBRACK:
        if sub is not None:
            raise p.lexer.fail(
                p.tok.pos, f"'[' must follow a complex attribute, not {text[: p.tok.pos]!r}"
            )
        open_tok = p.advance()
        p.enter(open_tok)
        flt = p.or_expr(in_brackets=True)
        p.expect(_RBRACK, f"']' to close the '[' at position {open_tok.pos + 1}")
        p.depth -= 1
        if p.tok.kind == _DOT:
            dot = p.advance()
            sub_tok = p.tok
            if not _adjacent_name(dot, sub_tok):
                raise p.fail(sub_tok, "a sub-attribute name directly after '].'")
            p.advance()
            sub = sub_tok.text
    if p.tok.kind != _END:
        raise p.fail(p.tok, "'[' or end of path" if flt is None and sub is None else "end of path")
    return PatchPath(attr, flt, sub)


# --------------------------------------------------------------------------- dateTime

_DATETIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))?"
)


def normalize_datetime(text: str) -> str:
    """An RFC 3339 date-time as the stored fixed-width UTC form ``YYYY-MM-DDTHH:MM:SS.ffffffZ``.

    xsd:dateTime (RFC 7643 §2.3.5) allows a missing offset: read as UTC. Fractional
    seconds beyond microseconds are truncated. Raises ValueError when not a date-time.
    """
    m = _DATETIME_RE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"not an RFC 3339 date-time: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac = (m.group(7) or "")[:6].ljust(6, "0")
    tz = UTC
    if m.group(9):
        offset = timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        if offset >= timedelta(hours=24):
            raise ValueError(f"bad UTC offset in {text!r}")
        tz = timezone(-offset if m.group(9) == "-" else offset)
    dt = datetime(year, month, day, hour, minute, second, int(frac), tzinfo=tz)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

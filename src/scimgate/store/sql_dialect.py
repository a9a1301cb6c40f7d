"""The SQL that differs between SQLite and PostgreSQL in filters and sorts: JSON access
(``json_extract``/``json_each`` on SQLite, ``jsonb_extract_path``/``jsonb_array_elements``
on PostgreSQL), code-point ordering, substring tests, LIKE escaping."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, Numeric, Text, case, collate, func, literal
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.expression import FromClause

DIALECTS = ("sqlite", "postgresql")
LIKE_ESCAPE = "\\"

Bool = ColumnElement[bool]


class Dialect:
    """The JSON and string functions that differ between SQLite and PostgreSQL."""

    def __init__(self, name: str) -> None:
        if name not in DIALECTS:
            raise ValueError(f"unsupported dialect {name!r} (expected one of {DIALECTS})")
        self.name = name
        self.pg = name == "postgresql"

    @staticmethod
    def _sqlite_path(keys: tuple[str, ...]) -> str:
        # SQLite JSON path with quoted labels: keys contain ":" and "." (URNs).
        return "$" + "".join(f'."{k}"' for k in keys)

    def json_type(self, doc: ColumnElement[Any], keys: tuple[str, ...]) -> ColumnElement[str]:
        """A normalised JSON type tag, never NULL: string, number, true, false, null,
        object, array, or '' when absent."""
        if self.pg:
            node = func.jsonb_extract_path(doc, *keys, type_=JSONB)
            raw: ColumnElement[str] = case(
                (
                    func.jsonb_typeof(node) == "boolean",
                    func.jsonb_extract_path_text(doc, *keys, type_=Text),
                ),
                else_=func.jsonb_typeof(node, type_=Text),
            )
        else:
            raw = case(
                (func.json_type(doc, self._sqlite_path(keys)) == "text", literal("string")),
                (
                    func.json_type(doc, self._sqlite_path(keys)).in_(["integer", "real"]),
                    literal("number"),
                ),
                else_=func.json_type(doc, self._sqlite_path(keys), type_=Text),
            )
        return func.coalesce(raw, literal(""), type_=Text)

    def json_text(self, doc: ColumnElement[Any], keys: tuple[str, ...]) -> ColumnElement[str]:
        if self.pg:
            return func.jsonb_extract_path_text(doc, *keys, type_=Text)
        return func.json_extract(doc, self._sqlite_path(keys), type_=Text)

    def json_number(self, doc: ColumnElement[Any], keys: tuple[str, ...]) -> ColumnElement[Any]:
        if self.pg:
            # CASE keeps the cast away from non-numbers (AND does not short-circuit in PG).
            return case(
                (
                    self.json_type(doc, keys) == "number",
                    func.cast(func.jsonb_extract_path_text(doc, *keys), Numeric),
                ),
                else_=None,
            )
        return func.json_extract(doc, self._sqlite_path(keys), type_=Numeric)

    def json_is_empty_object(self, doc: ColumnElement[Any], keys: tuple[str, ...]) -> Bool:
        if self.pg:
            return func.jsonb_extract_path(doc, *keys, type_=JSONB) == func.cast(
                literal("{}", Text), JSONB
            )
        return func.json_extract(doc, self._sqlite_path(keys), type_=Text) == "{}"

    def json_array_elements(
        self, doc: ColumnElement[Any], keys: tuple[str, ...], *, ordinal: bool = False
    ) -> FromClause:
        """One row per element of the JSON array at ``keys`` (none if absent/not an array);
        column ``value`` is the element (JSON), ``n`` its position when ``ordinal``."""
        is_array = self.json_type(doc, keys) == "array"
        if self.pg:
            arr = case((is_array, func.jsonb_extract_path(doc, *keys)), else_=None)
            fn = func.jsonb_array_elements(arr, type_=JSONB)
            if ordinal:
                return fn.table_valued("value", with_ordinality="n").render_derived().alias()
            return fn.table_valued("value").render_derived().alias()
        arr = case((is_array, func.json_extract(doc, self._sqlite_path(keys))), else_=None)
        if ordinal:
            return func.json_each(arr).table_valued("value", "type", "key").alias()
        return func.json_each(arr).table_valued("value", "type").alias()

    def element_doc(self, src: FromClause) -> ColumnElement[Any]:
        """The element of :meth:`json_array_elements` as a JSON object, NULL otherwise.

        SQLite's json_each gives a string element as raw text, on which json_extract
        would fail ("malformed JSON"); PostgreSQL's jsonb functions return NULL anyway.
        """
        if self.pg:
            return src.c.value
        return case((src.c.type == "object", src.c.value), else_=None)

    def ordered(self, expr: ColumnElement[Any]) -> ColumnElement[Any]:
        """Code-point order on both databases (SQLite BINARY is already code-point)."""
        return collate(expr, "C") if self.pg else expr

    def contains(self, hay: ColumnElement[Any], needle: str) -> Bool:
        if self.pg:
            return func.strpos(hay, literal(needle, Text), type_=Integer) > 0
        return func.instr(hay, literal(needle, Text), type_=Integer) > 0


def like_escape(value: str) -> str:
    return (
        value.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2)
        .replace("%", LIKE_ESCAPE + "%")
        .replace("_", LIKE_ESCAPE + "_")
    )

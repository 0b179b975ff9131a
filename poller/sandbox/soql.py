r"""The SOQL subset the poller issues, parsed and evaluated against in-memory records.

Supported:

    SELECT f1[, f2 ...] FROM Entity
      [WHERE cond]
      [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST][, ...]]
      [LIMIT n]

    cond := term (AND term)* | term (OR term)*      -- mixing AND/OR needs parentheses, as in SOQL
    term := NOT term | '(' cond ')' | f op value | f [NOT] IN (value, ...) | f LIKE 'pattern'
    op   := = | != | <> | < | <= | > | >=
    value:= 'string' | number | true | false | null

String literals take the SOQL escapes (\\ \' \" \n \r \t \b \f \uXXXX, and \% \_ in LIKE), i.e.
whatever simple-salesforce's `format_soql` produces. String comparisons are case-insensitive, as in
Salesforce (unless a field spec says `caseSensitive`). Keywords, entity and field names are
case-insensitive; results use the canonical field names.

Errors raise `SoqlError(error_code, message)`, with Salesforce's message layout (the query, a caret
under the offending token, `ERROR at Row:R:Column:C`, the reason).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

__all__ = ["SoqlError", "Query", "compile_query"]

KEYWORDS = {
    "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "LIMIT", "ORDER", "BY",
    "ASC", "DESC", "NULLS", "FIRST", "LAST", "TRUE", "FALSE", "NULL", "OFFSET", "GROUP", "HAVING",
}

_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}

_LEX = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>-?\d+(?:\.\d+)?(?![A-Za-z_]))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op><=|>=|!=|<>|=|<|>)
  | (?P<punct>[(),])
    """,
    re.VERBOSE,
)


class SoqlError(Exception):
    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message


@dataclass
class _Tok:
    kind: str  # ident, kw, string, number, op, punct, eof
    text: str  # the source text (for strings: the raw content between the quotes)
    pos: int
    value: Any = None  # decoded literal
    like: str = ""  # strings only: the literal as a LIKE regex (% and _ wild, \% and \_ literal)

    def show(self) -> str:
        return "<EOF>" if self.kind == "eof" else self.text if self.kind != "string" else f"'{self.text}'"


def _error(text: str, pos: int, code: str, reason: str) -> SoqlError:
    row = text.count("\n", 0, pos) + 1
    line_start = text.rfind("\n", 0, pos) + 1
    line_end = text.find("\n", pos)
    line = text[line_start : line_end if line_end != -1 else len(text)]
    col = pos - line_start + 1
    return SoqlError(code, f"\n{line}\n{' ' * (col - 1)}^\nERROR at Row:{row}:Column:{col}\n{reason}")


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos] == "'":
            start = pos
            pos += 1
            out: list[str] = []
            pat: list[str] = []
            while True:
                if pos >= len(text):
                    raise _error(text, start, "MALFORMED_QUERY", "unexpected token: <EOF>")
                ch = text[pos]
                if ch == "'":
                    break
                if ch == "\\":
                    nxt = text[pos + 1 : pos + 2]
                    if nxt in _ESCAPES:
                        decoded, pos = _ESCAPES[nxt], pos + 2
                    elif nxt in ("%", "_"):  # a literal % or _ inside LIKE
                        decoded, pos = nxt, pos + 2
                    elif nxt == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", text[pos + 2 : pos + 6]):
                        decoded, pos = chr(int(text[pos + 2 : pos + 6], 16)), pos + 6
                    else:
                        raise _error(
                            text, pos, "MALFORMED_QUERY",
                            f"Invalid string literal '{text[start + 1 : pos + 2]}'. Illegal escape sequence",
                        )
                    out.append(decoded)
                    pat.append(re.escape(decoded))
                    continue
                out.append(ch)
                pat.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
                pos += 1
            toks.append(_Tok("string", text[start + 1 : pos], start, "".join(out), "".join(pat)))
            pos += 1
            continue
        m = _LEX.match(text, pos)
        if not m:
            raise _error(text, pos, "MALFORMED_QUERY", f"unexpected token: '{text[pos]}'")
        kind = m.lastgroup
        tok_text = m.group()
        if kind == "ident" and tok_text.upper() in KEYWORDS:
            toks.append(_Tok("kw", tok_text.upper(), pos))
        elif kind == "number":
            toks.append(_Tok("number", tok_text, pos, float(tok_text) if "." in tok_text else int(tok_text)))
        elif kind != "ws":
            toks.append(_Tok(kind, tok_text, pos))
        pos = m.end()
    toks.append(_Tok("eof", "", len(text)))
    return toks


# --- AST -------------------------------------------------------------------------------------


@dataclass
class _Field:
    name: str  # as written; resolved to canonical by compile_query
    pos: int
    spec: dict = field(default_factory=dict)


@dataclass
class _Cmp:
    field: _Field
    op: str
    value: Any


@dataclass
class _In:
    field: _Field
    values: list[Any]
    negate: bool


@dataclass
class _Like:
    field: _Field
    pattern: re.Pattern[str]


@dataclass
class _Bool:
    op: str  # AND / OR
    terms: list[Any]


@dataclass
class _Not:
    term: Any


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def advance(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def fail(self, tok: _Tok | None = None) -> SoqlError:
        tok = tok or self.tok
        return _error(self.text, tok.pos, "MALFORMED_QUERY", f"unexpected token: {tok.show()}")

    def is_kw(self, *words: str) -> bool:
        return self.tok.kind == "kw" and self.tok.text in words

    def expect_kw(self, word: str) -> _Tok:
        if not self.is_kw(word):
            raise self.fail()
        return self.advance()

    def expect_punct(self, ch: str) -> _Tok:
        if not (self.tok.kind == "punct" and self.tok.text == ch):
            raise self.fail()
        return self.advance()

    def ident(self) -> _Field:
        if self.tok.kind != "ident":
            raise self.fail()
        tok = self.advance()
        return _Field(tok.text, tok.pos)

    def parse(self) -> "Query":
        self.expect_kw("SELECT")
        fields = [self.ident()]
        while self.tok.kind == "punct" and self.tok.text == ",":
            self.advance()
            fields.append(self.ident())
        self.expect_kw("FROM")
        entity = self.ident()
        where = None
        order: list[tuple[_Field, bool, bool]] = []
        limit = None
        if self.is_kw("WHERE"):
            self.advance()
            where = self.condition()
        if self.is_kw("ORDER"):
            self.advance()
            self.expect_kw("BY")
            while True:
                f = self.ident()
                desc = False
                if self.is_kw("ASC", "DESC"):
                    desc = self.advance().text == "DESC"
                nulls_last = False
                if self.is_kw("NULLS"):
                    self.advance()
                    if not self.is_kw("FIRST", "LAST"):
                        raise self.fail()
                    nulls_last = self.advance().text == "LAST"
                order.append((f, desc, nulls_last))
                if self.tok.kind == "punct" and self.tok.text == ",":
                    self.advance()
                    continue
                break
        if self.is_kw("LIMIT"):
            self.advance()
            if self.tok.kind != "number" or not isinstance(self.tok.value, int) or self.tok.value < 0:
                raise self.fail()
            limit = self.advance().value
        if self.tok.kind != "eof":
            raise self.fail()
        return Query(self.text, entity, fields, where, order, limit)

    def condition(self) -> Any:
        terms = [self.term()]
        joiner = None
        while self.is_kw("AND", "OR"):
            if joiner is not None and self.tok.text != joiner:
                raise self.fail()  # SOQL needs parentheses to mix AND and OR
            joiner = self.advance().text
            terms.append(self.term())
        return terms[0] if joiner is None else _Bool(joiner, terms)

    def term(self) -> Any:
        if self.is_kw("NOT"):
            self.advance()
            return _Not(self.term())
        if self.tok.kind == "punct" and self.tok.text == "(":
            self.advance()
            cond = self.condition()
            self.expect_punct(")")
            return cond
        f = self.ident()
        if self.tok.kind == "op":
            op = self.advance().text
            return _Cmp(f, "!=" if op == "<>" else op, self.literal())
        negate = False
        if self.is_kw("NOT"):
            self.advance()
            negate = True
            if not self.is_kw("IN"):
                raise self.fail()
        if self.is_kw("IN"):
            self.advance()
            self.expect_punct("(")
            values = [self.literal()]
            while self.tok.kind == "punct" and self.tok.text == ",":
                self.advance()
                values.append(self.literal())
            self.expect_punct(")")
            return _In(f, values, negate)
        if self.is_kw("LIKE"):
            self.advance()
            if self.tok.kind != "string":
                raise self.fail()
            return _Like(f, re.compile(self.advance().like, re.IGNORECASE | re.DOTALL))
        raise self.fail()

    def literal(self) -> Any:
        tok = self.tok
        if tok.kind == "string":
            self.advance()
            return tok.value
        if tok.kind == "number":
            self.advance()
            return tok.value
        if tok.kind == "kw" and tok.text in ("TRUE", "FALSE", "NULL"):
            self.advance()
            return {"TRUE": True, "FALSE": False, "NULL": None}[tok.text]
        raise self.fail()


# --- evaluation ------------------------------------------------------------------------------


def _fold(value: Any, spec: dict) -> Any:
    if isinstance(value, str) and not spec.get("caseSensitive"):
        return value.casefold()
    return value


def _equal(actual: Any, literal: Any, spec: dict) -> bool:
    if actual == "":
        actual = None  # Salesforce stores blank text as null
    if literal is None or actual is None:
        return literal is None and actual is None
    if isinstance(literal, bool) or isinstance(actual, bool):
        return actual is literal
    if isinstance(literal, (int, float)) and isinstance(actual, (int, float)):
        return actual == literal
    return _fold(str(actual), spec) == _fold(str(literal), spec)


def _order(actual: Any, op: str, literal: Any, spec: dict) -> bool:
    if actual is None or literal is None or isinstance(actual, bool) or isinstance(literal, bool):
        return False
    if isinstance(literal, (int, float)) and isinstance(actual, (int, float)):
        a, b = actual, literal
    else:
        a, b = _fold(str(actual), spec), _fold(str(literal), spec)
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def _eval(node: Any, record: Mapping[str, Any]) -> bool:
    if isinstance(node, _Bool):
        results = (_eval(t, record) for t in node.terms)
        return all(results) if node.op == "AND" else any(results)
    if isinstance(node, _Not):
        return not _eval(node.term, record)
    actual = record.get(node.field.name)
    if isinstance(node, _Cmp):
        if node.op == "=":
            return _equal(actual, node.value, node.field.spec)
        if node.op == "!=":
            return not _equal(actual, node.value, node.field.spec)
        return _order(actual, node.op, node.value, node.field.spec)
    if isinstance(node, _In):
        hit = any(_equal(actual, v, node.field.spec) for v in node.values)
        return hit != node.negate
    if isinstance(node, _Like):
        return actual is not None and node.pattern.fullmatch(str(actual)) is not None
    raise TypeError(node)


@dataclass
class Query:
    text: str
    entity_ref: _Field
    field_refs: list[_Field]
    where: Any
    order_by: list[tuple[_Field, bool, bool]]
    limit: int | None

    @property
    def entity(self) -> str:
        return self.entity_ref.name

    @property
    def fields(self) -> list[str]:
        return [f.name for f in self.field_refs]

    def matches(self, record: Mapping[str, Any]) -> bool:
        return self.where is None or _eval(self.where, record)

    def rows(self, records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The matching records themselves, filtered, sorted and limited."""
        rows = [r for r in records if self.matches(r)]
        for f, desc, nulls_last in reversed(self.order_by):
            present = [r for r in rows if r.get(f.name) is not None]
            missing = [r for r in rows if r.get(f.name) is None]
            present.sort(key=lambda r: _fold(r[f.name], f.spec), reverse=desc)
            rows = present + missing if nulls_last else missing + present
        return rows if self.limit is None else rows[: self.limit]

    def project(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """One result row: the selected fields in SELECT order (missing ones as None)."""
        return {name: record.get(name) for name in self.fields}

    def run(self, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [self.project(r) for r in self.rows(records)]


def _walk_fields(node: Any) -> Iterable[_Field]:
    if isinstance(node, _Bool):
        for t in node.terms:
            yield from _walk_fields(t)
    elif isinstance(node, _Not):
        yield from _walk_fields(node.term)
    elif node is not None:
        yield node.field


def compile_query(text: str, schemas: Mapping[str, Mapping[str, dict]]) -> Query:
    """Parse `text` and resolve its names against `schemas` (entity -> {field name -> field spec}).

    Raises SoqlError with MALFORMED_QUERY, INVALID_TYPE or INVALID_FIELD.
    """
    if not text or not text.strip():
        raise SoqlError("MALFORMED_QUERY", "A query string has to be specified")
    query = _Parser(text).parse()

    entities = {name.lower(): name for name in schemas}
    entity = entities.get(query.entity_ref.name.lower())
    if entity is None:
        raise _error(
            text, query.entity_ref.pos, "INVALID_TYPE",
            f"sObject type '{query.entity_ref.name}' is not supported. If you are attempting to use a custom "
            "object, be sure to append the '__c' after the entity name. Please reference your WSDL or the "
            "describe call for the appropriate names.",
        )
    query.entity_ref.name = entity
    fields = {name.lower(): name for name in schemas[entity]}

    seen: set[str] = set()
    refs = list(query.field_refs) + list(_walk_fields(query.where)) + [f for f, _, _ in query.order_by]
    for i, ref in enumerate(refs):
        canonical = fields.get(ref.name.lower())
        if canonical is None:
            raise _error(
                text, ref.pos, "INVALID_FIELD",
                f"No such column '{ref.name}' on entity '{entity}'. If you are attempting to use a custom "
                "field, be sure to append the '__c' after the custom field name. Please reference your WSDL "
                "or the describe call for the appropriate names.",
            )
        if i < len(query.field_refs):
            if canonical in seen:
                raise _error(text, ref.pos, "MALFORMED_QUERY", f"duplicate field selected: {canonical}")
            seen.add(canonical)
        ref.name = canonical
        ref.spec = schemas[entity][canonical]
    return query

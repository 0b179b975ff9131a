"""A small Lucene query parser/evaluator: the subset Auth0's user search (v3) and log search accept.

Supported:

* `field:term`, `field:"quoted phrase"`, `field:te*m?` (wildcards), `field:*` (field exists)
* `field:(a OR "b" OR c)` and `field:(a AND b)`: a group of values for one field
* ranges `field:[A TO B]`, `field:{A TO B}`, mixed `[A TO B}`, either end `*`
* `_exists_:field`
* `AND`, `OR`, `NOT`, `&&`, `||`, `!`, a leading `-`/`+`, parentheses; adjacency means OR (Lucene's
  default operator)
* dotted paths (`app_metadata.plan`, `identities.user_id`): a list anywhere on the path matches if any
  element matches

Values compare by the type of the stored value: booleans against `true`/`false`, numbers numerically,
strings exactly (case-insensitively for `case_insensitive_fields`, as Auth0 does for email, name, ...).
In ranges, values that both parse as ISO 8601 dates compare as instants, numbers as numbers, anything
else as strings. Empty objects, empty arrays and nulls are "not indexed": they never match, and
`_exists_` is false for them (Auth0's documented behaviour).

A bare term with no field matches any top-level string value equal to it (Auth0 matches it against the
normalized fields); this emulator never relies on it.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Union

__all__ = ["QueryError", "parse", "matches", "compile_query", "exact_values", "Query", "DEFAULT_CASE_INSENSITIVE"]


class QueryError(ValueError):
    """A query this parser does not understand (the emulator answers 400)."""


# --- tokens -------------------------------------------------------------------------------------

_SPECIAL = set('()[]{}:"')


@dataclass
class _Tok:
    kind: str  # WORD, PHRASE, LPAREN, RPAREN, LBRACK, RBRACK, COLON, AND, OR, NOT, TO, PLUS, MINUS
    value: str
    pos: int
    wild: bool = False  # WORD contains an unescaped * or ?


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(text)
    in_range = False  # inside [..] / {..} a ':' is part of a bound (2019-01-01T01:00:00)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c == "(":
            toks.append(_Tok("LPAREN", c, i))
            i += 1
        elif c == ")":
            toks.append(_Tok("RPAREN", c, i))
            i += 1
        elif c in "[{":
            toks.append(_Tok("LBRACK", c, i))
            in_range = True
            i += 1
        elif c in "]}":
            toks.append(_Tok("RBRACK", c, i))
            in_range = False
            i += 1
        elif c == ":":
            toks.append(_Tok("COLON", c, i))
            i += 1
        elif text.startswith("&&", i):
            toks.append(_Tok("AND", "&&", i))
            i += 2
        elif text.startswith("||", i):
            toks.append(_Tok("OR", "||", i))
            i += 2
        elif c == "!":
            toks.append(_Tok("NOT", c, i))
            i += 1
        elif c in "+-" and (not toks or toks[-1].kind not in ("WORD", "PHRASE", "RPAREN", "RBRACK")):
            toks.append(_Tok("PLUS" if c == "+" else "MINUS", c, i))
            i += 1
        elif c == '"':
            start = i
            i += 1
            buf = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(text[i])
                i += 1
            if i >= n:
                raise QueryError(f"unterminated quoted string at position {start}")
            i += 1
            toks.append(_Tok("PHRASE", "".join(buf), start))
        else:
            start = i
            buf = []
            wild = False
            while i < n and not text[i].isspace() and (text[i] not in _SPECIAL or (in_range and text[i] == ":")):
                if text[i] == "\\" and i + 1 < n:
                    buf.append("\\" + text[i + 1])  # keep the escape for wildcard handling
                    i += 2
                    continue
                if text[i] in "*?":
                    wild = True
                buf.append(text[i])
                i += 1
            raw = "".join(buf)
            word = re.sub(r"\\(.)", r"\1", raw)
            if not wild and word in ("AND", "OR", "NOT", "TO"):
                toks.append(_Tok(word, word, start))
            else:
                toks.append(_Tok("WORD", raw if wild else word, start, wild))
    return toks


# --- AST ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    value: str
    phrase: bool = False
    wild: bool = False  # value keeps backslash escapes when wild


@dataclass(frozen=True)
class Range:
    lo: str | None  # None = open (*)
    hi: str | None
    lo_inclusive: bool
    hi_inclusive: bool


@dataclass(frozen=True)
class ValueOr:
    items: tuple["ValueExpr", ...]


@dataclass(frozen=True)
class ValueAnd:
    items: tuple["ValueExpr", ...]


@dataclass(frozen=True)
class ValueNot:
    item: "ValueExpr"


ValueExpr = Union[Term, Range, ValueOr, ValueAnd, ValueNot]


@dataclass(frozen=True)
class Field:
    name: str | None  # None: a bare term
    value: ValueExpr


@dataclass(frozen=True)
class Exists:
    name: str


@dataclass(frozen=True)
class And:
    items: tuple["Query", ...]


@dataclass(frozen=True)
class Or:
    items: tuple["Query", ...]


@dataclass(frozen=True)
class Not:
    item: "Query"


@dataclass(frozen=True)
class MatchAll:
    pass


Query = Union[Field, Exists, And, Or, Not, MatchAll]


# --- parser -------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0

    def peek(self, offset: int = 0) -> _Tok | None:
        j = self.i + offset
        return self.toks[j] if j < len(self.toks) else None

    def next(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise QueryError("unexpected end of query")
        self.i += 1
        return tok

    def expect(self, kind: str) -> _Tok:
        tok = self.next()
        if tok.kind != kind:
            raise QueryError(f"expected {kind} at position {tok.pos}, got {tok.value!r}")
        return tok

    def parse(self) -> Query:
        if not self.toks:
            return MatchAll()
        q = self.or_expr()
        if self.peek() is not None:
            tok = self.peek()
            raise QueryError(f"unexpected {tok.value!r} at position {tok.pos}")
        return q

    # query := and ( (OR | implicit) and )*
    def or_expr(self) -> Query:
        items = [self.and_expr()]
        while True:
            tok = self.peek()
            if tok is None or tok.kind == "RPAREN":
                break
            if tok.kind == "OR":
                self.next()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self) -> Query:
        items = [self.unary()]
        while self.peek() is not None and self.peek().kind == "AND":
            self.next()
            items.append(self.unary())
        return items[0] if len(items) == 1 else And(tuple(items))

    def unary(self) -> Query:
        tok = self.peek()
        if tok is None:
            raise QueryError("unexpected end of query")
        if tok.kind in ("NOT", "MINUS"):
            self.next()
            return Not(self.unary())
        if tok.kind == "PLUS":
            self.next()
            return self.unary()
        return self.primary()

    def primary(self) -> Query:
        tok = self.next()
        if tok.kind == "LPAREN":
            q = self.or_expr()
            self.expect("RPAREN")
            return q
        if tok.kind == "WORD" and not tok.wild and self.peek() is not None and self.peek().kind == "COLON":
            self.next()
            name = tok.value
            if name == "_exists_":
                target = self.next()
                if target.kind not in ("WORD", "PHRASE"):
                    raise QueryError(f"_exists_ needs a field name at position {target.pos}")
                return Exists(target.value)
            return Field(name, self.value_expr())
        if tok.kind in ("WORD", "PHRASE"):
            return Field(None, self._term(tok))
        raise QueryError(f"unexpected {tok.value!r} at position {tok.pos}")

    @staticmethod
    def _term(tok: _Tok) -> Term:
        if tok.kind == "PHRASE":
            return Term(tok.value, phrase=True)
        return Term(tok.value, wild=tok.wild)

    def value_expr(self) -> ValueExpr:
        tok = self.next()
        if tok.kind in ("WORD", "PHRASE"):
            return self._term(tok)
        if tok.kind == "LBRACK":
            return self.range_rest(tok)
        if tok.kind == "LPAREN":
            v = self.value_or()
            self.expect("RPAREN")
            return v
        raise QueryError(f"expected a value at position {tok.pos}, got {tok.value!r}")

    def value_or(self) -> ValueExpr:
        items = [self.value_and()]
        while True:
            tok = self.peek()
            if tok is None or tok.kind == "RPAREN":
                break
            if tok.kind == "OR":
                self.next()
            items.append(self.value_and())
        return items[0] if len(items) == 1 else ValueOr(tuple(items))

    def value_and(self) -> ValueExpr:
        items = [self.value_unary()]
        while self.peek() is not None and self.peek().kind == "AND":
            self.next()
            items.append(self.value_unary())
        return items[0] if len(items) == 1 else ValueAnd(tuple(items))

    def value_unary(self) -> ValueExpr:
        tok = self.peek()
        if tok is not None and tok.kind in ("NOT", "MINUS"):
            self.next()
            return ValueNot(self.value_unary())
        if tok is not None and tok.kind == "PLUS":
            self.next()
        return self.value_expr()

    def range_rest(self, open_tok: _Tok) -> Range:
        lo = self._bound()
        self.expect("TO")
        hi = self._bound()
        close = self.expect("RBRACK")
        return Range(lo, hi, open_tok.value == "[", close.value == "]")

    def _bound(self) -> str | None:
        tok = self.next()
        if tok.kind == "PHRASE":
            return tok.value
        if tok.kind == "WORD":
            if tok.value == "*":
                return None
            return re.sub(r"\\(.)", r"\1", tok.value) if tok.wild else tok.value
        raise QueryError(f"expected a range bound at position {tok.pos}, got {tok.value!r}")


def parse(text: str) -> Query:
    """Parse a query string; raises `QueryError` for anything outside the subset."""
    return _Parser(text or "").parse()


# --- evaluation ---------------------------------------------------------------------------------

def _resolve(doc: Any, path: str) -> list[Any]:
    """All values at a dotted path; lists on the way (and at the end) are flattened."""
    current = [doc]
    for part in path.split("."):
        nxt: list[Any] = []
        for value in current:
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, dict) and part in item:
                    nxt.append(item[part])
        current = nxt
    flat: list[Any] = []
    for value in current:
        if isinstance(value, list):
            flat.extend(value)
        else:
            flat.append(value)
    return flat


def _indexed(value: Any) -> bool:
    return value is not None and value != {} and value != []


def _parse_date(text: str) -> datetime | None:
    if not isinstance(text, str) or not re.match(r"^\d{4}-\d{2}-\d{2}", text):
        return None
    s = text.strip()
    if s.endswith("Z") or s.endswith("z"):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt


def _as_number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _term_matches(stored: Any, term: Term, ci: bool) -> bool:
    if isinstance(stored, bool):
        return not term.wild and term.value.lower() == ("true" if stored else "false")
    if isinstance(stored, (int, float)):
        if term.wild:
            return fnmatch.fnmatchcase(str(stored), term.value)
        number = _as_number(term.value)
        return number is not None and number == stored
    if isinstance(stored, str):
        if term.wild:
            pattern = _wild_to_regex(term.value)
            return re.fullmatch(pattern, stored, re.IGNORECASE if ci else 0) is not None
        if ci:
            return stored.casefold() == term.value.casefold()
        return stored == term.value
    return False


def _wild_to_regex(raw: str) -> str:
    out = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "\\" and i + 1 < len(raw):
            out.append(re.escape(raw[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "*" else "." if c == "?" else re.escape(c))
        i += 1
    return "".join(out)


def _cmp_key(stored: Any, bound: str) -> tuple[Any, Any] | None:
    if isinstance(stored, bool):
        return None
    if isinstance(stored, (int, float)):
        number = _as_number(bound)
        return None if number is None else (stored, number)
    if isinstance(stored, str):
        a, b = _parse_date(stored), _parse_date(bound)
        if a is not None and b is not None:
            return a, b
        return stored, bound
    return None


def _range_matches(stored: Any, rng: Range) -> bool:
    if rng.lo is not None:
        pair = _cmp_key(stored, rng.lo)
        if pair is None:
            return False
        if pair[0] < pair[1] or (not rng.lo_inclusive and pair[0] == pair[1]):
            return False
    if rng.hi is not None:
        pair = _cmp_key(stored, rng.hi)
        if pair is None:
            return False
        if pair[0] > pair[1] or (not rng.hi_inclusive and pair[0] == pair[1]):
            return False
    if rng.lo is None and rng.hi is None:
        return _indexed(stored)
    return True


def _value_matches(values: list[Any], expr: ValueExpr, ci: bool) -> bool:
    if isinstance(expr, ValueOr):
        return any(_value_matches(values, item, ci) for item in expr.items)
    if isinstance(expr, ValueAnd):
        return all(_value_matches(values, item, ci) for item in expr.items)
    if isinstance(expr, ValueNot):
        return not _value_matches(values, expr.item, ci)
    if isinstance(expr, Range):
        return any(_range_matches(v, expr) for v in values if _indexed(v))
    assert isinstance(expr, Term)
    if expr.wild and expr.value == "*":
        return any(_indexed(v) for v in values)
    return any(_term_matches(v, expr, ci) for v in values if _indexed(v))


DEFAULT_CASE_INSENSITIVE = frozenset({"email", "name", "given_name", "family_name", "nickname"})


def matches(query: Query, doc: dict, *, case_insensitive_fields: Iterable[str] = ()) -> bool:
    """Does `doc` satisfy `query`?"""
    ci_fields = frozenset(case_insensitive_fields)
    return _eval(query, doc, ci_fields)


def _eval(q: Query, doc: dict, ci_fields: frozenset[str]) -> bool:
    if isinstance(q, MatchAll):
        return True
    if isinstance(q, And):
        return all(_eval(item, doc, ci_fields) for item in q.items)
    if isinstance(q, Or):
        return any(_eval(item, doc, ci_fields) for item in q.items)
    if isinstance(q, Not):
        return not _eval(q.item, doc, ci_fields)
    if isinstance(q, Exists):
        return any(_indexed(v) for v in _resolve(doc, q.name))
    assert isinstance(q, Field)
    if q.name is None:
        values = [v for v in doc.values() if isinstance(v, str)]
        return _value_matches(values, q.value, True)
    return _value_matches(_resolve(doc, q.name), q.value, q.name in ci_fields)


def exact_values(query: Query, field: str) -> frozenset[str] | None:
    """The values of a query that only asks for `field` to equal one of some exact terms
    (`user_id:"a"`, `user_id:("a" OR "b")`), so an emulator can answer it from an index; else None."""
    if not isinstance(query, Field) or query.name != field:
        return None
    items = query.value.items if isinstance(query.value, ValueOr) else (query.value,)
    if not all(isinstance(item, Term) and not item.wild for item in items):
        return None
    return frozenset(item.value for item in items)


def compile_query(text: str, *, case_insensitive_fields: Iterable[str] = ()):
    """Parse once; return a predicate `doc -> bool`."""
    query = parse(text)
    ci_fields = frozenset(case_insensitive_fields)
    return lambda doc: _eval(query, doc, ci_fields)

"""The safe arithmetic evaluator of the synthetic world: integer expressions linear in one unknown.

A trace step's value is an expression such as ``3b - (a + 2)``. :func:`evaluate` reads it with a small
recursive-descent parser (:func:`tokenize`, then the grammar below) into a linear form ``a*u + b`` of the reverse-mode
unknown u (:class:`midtrain.synth.world.Lin`); names are resolved by the caller, so that one evaluator serves
plain numbers, compact letters and natural-language bindings alike. Nothing is ever ``eval``'d::

    expr   := term (('+' | '-') term)*
    term   := factor (('*' factor) | implicit factor)*        implicit product: 3b, 2(b+1)
    factor := ('-' | '+') factor | number | name | '(' expr ')'

Hostile input is bounded, each by a limit below: an expression of at most ``MAX_EXPR_CHARS`` characters, numbers of
at most ``MAX_DIGITS`` digits, ``MAX_DEPTH`` nested parentheses or signs, and intermediate values below ``BIG``; a
product of two forms that both depend on u (not linear), an unknown name or any other character is a
:class:`ParseError`, so any string is answered in time linear in its capped length, never by another exception.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from midtrain.synth.world import Lin

MAX_EXPR_CHARS = 512
MAX_DEPTH = 32
MAX_DIGITS = 40
BIG = 10**120  # far above any honest value (40-digit literals, products of a few of them), far below a slow bigint

_TOKEN = re.compile(r"\s*(?:([0-9]+)|([^\W\d_]+)|([-+*()]))")

Token = tuple[str, str]  # (kind, text), kind in num | name | op
Resolve = Callable[[str], Lin]


class ParseError(ValueError):
    """An expression the safe evaluator refuses."""


def tokenize(text: str) -> list[Token]:
    """``[(kind, text)]`` with kind in num | name | op; raises ParseError on anything else."""
    text = text.strip()
    if not text:
        raise ParseError("empty expression")
    if len(text) > MAX_EXPR_CHARS:
        raise ParseError("expression too long")
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ParseError(f"unexpected character {text[pos]!r}")
        pos = m.end()
        num, name, op = m.groups()
        if num is not None:
            if len(num) > MAX_DIGITS:
                raise ParseError("number too long")
            out.append(("num", num))
        elif name is not None:
            out.append(("name", name))
        else:
            out.append(("op", op))
    return out


def multiply(x: Lin, y: Lin) -> Lin:
    """``x * y`` when at most one of them depends on the unknown (else the value would not be linear)."""
    if x.a and y.a:
        raise ParseError("not linear in the unknown")
    v = Lin(x.a * y.b + y.a * x.b, x.b * y.b)
    if abs(v.a) > BIG or abs(v.b) > BIG:  # repeated products of 40-digit numbers would grow without bound
        raise ParseError("number too large")
    return v


class Parser:
    """The recursive-descent parser of the grammar in the module docstring, over the tokens of one expression."""

    def __init__(self, tokens: list[Token], resolve: Resolve) -> None:
        self.toks, self.i, self.resolve = tokens, 0, resolve

    def peek(self) -> Token | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> Token:
        tok = self.peek()
        if tok is None:
            raise ParseError("unexpected end of expression")
        self.i += 1
        return tok

    def parse(self) -> Lin:
        v = self.expr(0)
        tok = self.peek()
        if tok is not None:
            raise ParseError(f"unexpected {tok[1]!r}")
        return v

    def expr(self, depth: int) -> Lin:
        v = self.term(depth)
        while self.peek() in (("op", "+"), ("op", "-")):
            op = self.take()[1]
            w = self.term(depth)
            v = v + w if op == "+" else v - w
        return v

    def term(self, depth: int) -> Lin:
        v = self.factor(depth)
        while True:
            tok = self.peek()
            if tok == ("op", "*"):
                self.take()
                v = multiply(v, self.factor(depth))
            elif tok is not None and (tok[0] == "name" or tok == ("op", "(")):
                v = multiply(v, self.factor(depth))  # implicit product: 3b, 2(b+1)
            else:
                return v

    def factor(self, depth: int) -> Lin:
        if depth > MAX_DEPTH:  # "((((…" or "----…1": Python's own recursion limit must never be the one that stops us
            raise ParseError("nested too deeply")
        kind, text = self.take()
        if kind == "num":
            return Lin(0, int(text))
        if kind == "name":
            return self.resolve(text)
        if text in "+-":
            v = self.factor(depth + 1)
            return Lin(-v.a, -v.b) if text == "-" else v
        if text == "(":
            v = self.expr(depth + 1)
            if self.take() != ("op", ")"):
                raise ParseError("unbalanced parenthesis")
            return v
        raise ParseError(f"unexpected {text!r}")


def no_names(name: str) -> Lin:
    """The default resolver: an expression with a name in it is refused."""
    raise ParseError(f"unknown name {name!r}")


def evaluate(text: str, resolve: Resolve | None = None, modulus: int | None = None) -> Lin:
    """The value of an arithmetic expression, reduced modulo ``modulus`` when given; names go through ``resolve``
    (default: any name is an error)."""
    plain = text.strip()
    if plain.isascii() and plain.isdigit() and len(plain) <= MAX_DIGITS:  # fast path: most values are numbers
        return Lin(0, int(plain)).mod(modulus)
    return Parser(tokenize(text), resolve or no_names).parse().mod(modulus)


__all__ = ["BIG", "MAX_DEPTH", "MAX_DIGITS", "MAX_EXPR_CHARS", "ParseError", "Parser", "evaluate", "multiply", "no_names", "tokenize"]

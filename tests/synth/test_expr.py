"""The safe evaluator: the grammar, linear forms in the unknown, the modulus, and every refusal."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midtrain.synth.expr import BIG, MAX_DEPTH, MAX_DIGITS, MAX_EXPR_CHARS, ParseError, evaluate, multiply, tokenize
from midtrain.synth.world import Lin


def sym(name):
    if name == "b":
        return Lin(1, 0)
    raise ParseError(name)


@pytest.mark.parametrize(
    "text, value",
    [
        ("3", Lin(0, 3)),
        ("2 + 3 * 4", Lin(0, 14)),
        ("(2 + 3) * 4", Lin(0, 20)),
        ("7 - 2 - 1", Lin(0, 4)),
        ("-3 + 1", Lin(0, -2)),
        ("3b+6", Lin(3, 6)),
        ("3 * (b + 2)", Lin(3, 6)),
        ("-b + 3", Lin(-1, 3)),
        ("2(b-1)", Lin(2, -2)),
        ("b", Lin(1, 0)),
        ("((((1))))", Lin(0, 1)),
        ("4b - (b + 2)", Lin(3, -2)),
        ("+-+2", Lin(0, -2)),
    ],
)
def test_evaluator(text, value):
    assert evaluate(text, sym) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1 +",
        "(1",
        "1)",
        "b * b",
        "c + 1",
        "__import__('os')",
        "1 / 2",
        "2 ** 3",
        "1e5",
        "1.5",
        "9" * (MAX_DIGITS + 1),
        "(" * 40 + "1" + ")" * 40,
        "-" * 40 + "1",
        "1" + " + 1" * 200,
        "lambda: 0",
        "\x00",
        "٣",
    ],
)
def test_evaluator_refuses(text):
    with pytest.raises(ParseError):
        evaluate(text, sym)


def test_names_are_refused_without_a_resolver():
    with pytest.raises(ParseError, match="unknown name 'b'"):
        evaluate("b + 1")


def test_limits_sit_exactly_at_their_bounds():
    assert evaluate("(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH) == Lin(0, 1)
    with pytest.raises(ParseError, match="nested too deeply"):
        evaluate("(" * (MAX_DEPTH + 2) + "1" + ")" * (MAX_DEPTH + 2))
    assert evaluate("9" * MAX_DIGITS) == Lin(0, int("9" * MAX_DIGITS))
    longest = "1+" * ((MAX_EXPR_CHARS - 1) // 2) + "1"
    assert len(longest) <= MAX_EXPR_CHARS and evaluate(longest) == Lin(0, longest.count("1"))
    with pytest.raises(ParseError, match="too long"):
        evaluate(longest + "+1")


def test_products_stay_linear_and_bounded():
    assert multiply(Lin(2, 3), Lin(0, 5)) == Lin(10, 15)
    assert multiply(Lin(0, 5), Lin(2, 3)) == Lin(10, 15)
    with pytest.raises(ParseError, match="not linear"):
        multiply(Lin(1, 0), Lin(1, 0))
    big = "9" * MAX_DIGITS
    assert int(big) ** 3 < BIG < int(big) ** 4
    assert evaluate("*".join([big] * 3)) == Lin(0, int(big) ** 3)  # three maximal literals multiply fine ...
    with pytest.raises(ParseError, match="too large"):  # ... and a long chain of them stops before bigints slow us
        evaluate("*".join([big] * 4))


def test_evaluator_modulus_and_tokens():
    assert evaluate("3 * 7 + 5", modulus=10) == Lin(0, 6)
    assert evaluate("3b + 17", sym, modulus=10) == Lin(3, 7)
    assert evaluate("-3", modulus=10) == Lin(0, 7)
    assert tokenize("3ψ+(2)") == [("num", "3"), ("name", "ψ"), ("op", "+"), ("op", "("), ("num", "2"), ("op", ")")]


def expressions(depth: int = 3):
    """(text, value) of random integer expressions over + - * and parentheses, and their Python value."""
    leaf = st.integers(0, 999).map(lambda n: (str(n), n))
    if depth == 0:
        return leaf

    def combine(parts):
        (a, x), op, (b, y) = parts
        value = {"+": x + y, "-": x - y, "*": x * y}[op]
        return f"({a} {op} {b})", value

    sub = expressions(depth - 1)
    return st.one_of(leaf, st.tuples(sub, st.sampled_from("+-*"), sub).map(combine))


@settings(max_examples=200, deadline=None)
@given(expressions(), st.sampled_from([None, 7, 10]))
def test_evaluator_agrees_with_integer_arithmetic(case, modulus):
    text, value = case
    assert evaluate(text, modulus=modulus) == Lin(0, value if modulus is None else value % modulus)

"""Surface contexts and renderings of a graph: natural and compact text, gold traces, raw documents, annotator.

**Contexts** (``contexts/*.yaml``, or any YAML a user writes with the same keys) name quantities with two levels:
``groups`` (zoo locations, cities, festivals) and ``items`` (animals, school types, genres), a ``quantity``
template (``"the number of {item} in {group}"``), a ``total`` template (``"the total number of animals in
{group}"``) and an ``alphabet`` for compact names. A total's group belongs to it alone: every quantity named in
that group is one of its children, which is what makes the natural "total" implicit and correct.

**Renderings** of one graph (``render_record``):

- ``natural``: one English sentence per fact ("The number of lions in Bundle Zoo equals 3 times the number of
  owls in Harbor Zoo."), totals implicit as in the paper, question "What is ...?". The gold trace walks the
  necessary nodes in dependency order, one step per quantity:
  ``Define <quantity> as <letter>; <letter> = <expr> = <values> = <value>.`` … ``Answer: <value>.``
- ``compact`` (the learnable probe of DESIGN §4): names are consecutive letters of the context's alphabet from a
  random start, one fact per '.'-separated clause (``a=2.b=3*a.c=a+b.?c``) and trace steps
  ``name=expr=values=value.`` (``a=2.b=3*a=3*2=6.c=a+b=2+6=8.``).

In reverse mode the unknown u has no fact, the target's value is given (``c=8`` / "The number of ... is 8."),
steps that depend on u carry linear forms (``b=3*a=3a``) and the trace ends with the linear equation and its
solution (``3a+2=8:a=2`` / "We know c = 8, so 3a + 2 = 8; a = 2."). Records wrap the text as
``<question> … </question> <think> … </think> <answer> … </answer>``: ``prompt`` is everything up to and
including ``<think>``, ``completion`` the gold rest. Natural text puts one space around tags, compact none.

The **raw document** is the question block and the answer block without a trace; ``annotate`` turns it into an
augmented record (DESIGN §2) whose thought, inserted between question and answer, is the trace: the programmatic
stand-in for the annotator LLM of thinking mid-training.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from midtrain.config import read_yaml
from midtrain.errors import ConfigError
from midtrain.synth import mix
from midtrain.synth.world import Graph, Lin, Node, forms
from midtrain.thoughts import render_augmented  # noqa: F401  (re-exported: one implementation)

CONTEXT_DIR = Path(__file__).with_name("contexts")
BUILTIN_CONTEXTS = ("zoo", "teachers", "movies")
LATIN = "abcdefghijklmnopqrstuvwxyz"
_NAME_OK = re.compile(r"[A-Za-z](?:[A-Za-z' \-]*[A-Za-z])?")
_CONTEXT_KEYS = {"name", "description", "groups", "items", "quantity", "total", "alphabet"}


# -- contexts ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Context:
    name: str
    groups: tuple[str, ...]
    items: tuple[str, ...]
    quantity: str = "the number of {item} in {group}"
    total: str = "the total number of items in {group}"
    alphabet: str = LATIN
    source: str = ""

    def quantity_name(self, group: str, item: str) -> str:
        return self.quantity.format(group=group, item=item)

    def total_name(self, group: str) -> str:
        return self.total.format(group=group)


def _bad(source: str, key: str, why: str) -> ConfigError:
    return ConfigError(f"context {source}: key '{key}': {why}")


def _names(data: dict, key: str, source: str) -> tuple[str, ...]:
    vals = data.get(key)
    if not isinstance(vals, list) or len(vals) < 2:
        raise _bad(source, key, "needs a list of at least 2 names")
    seen: set[str] = set()
    for v in vals:
        if not isinstance(v, str) or not _NAME_OK.fullmatch(v) or " as " in f" {v.lower()} ":
            raise _bad(source, key, f"{v!r} is not a plain name (letters, spaces, ' and -; not the word 'as')")
        if v.lower() in seen:
            raise _bad(source, key, f"duplicate name {v!r}")
        seen.add(v.lower())
    return tuple(vals)


def context_from_dict(data: dict[str, Any], source: str) -> Context:
    """Validate a context mapping (the YAML of a context file)."""
    if not isinstance(data, dict):
        raise ConfigError(f"context {source}: the top level must be a mapping")
    unknown = sorted(set(data) - _CONTEXT_KEYS)
    if unknown:
        raise _bad(source, unknown[0], f"unknown key (valid: {', '.join(sorted(_CONTEXT_KEYS))})")
    name = data.get("name", Path(source).stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise _bad(source, "name", f"{name!r} must be a word of letters, digits, '_' or '-'")
    groups, items = _names(data, "groups", source), _names(data, "items", source)
    quantity = data.get("quantity", Context.quantity)
    total = data.get("total", Context.total)
    alphabet = data.get("alphabet", LATIN)
    for key, tpl, fields in (("quantity", quantity, ("{item}", "{group}")), ("total", total, ("{group}",))):
        if not isinstance(tpl, str) or any(f not in tpl for f in fields):
            raise _bad(source, key, f"must be a string containing {' and '.join(fields)}")
        try:
            sample = tpl.format(group=groups[0], item=items[0])
        except (KeyError, IndexError, ValueError):
            raise _bad(source, key, "only {group} and {item} may be used as fields") from None
        if not _NAME_OK.fullmatch(sample) or " as " in f" {sample.lower()} ":
            raise _bad(source, key, f"renders as {sample!r}: use letters, spaces, ' and - only, not the word 'as'")
    if quantity.format(group=groups[0], item=items[0]).lower() == total.format(group=groups[0]).lower():
        raise _bad(source, "total", "must differ from the quantity template")
    if not isinstance(alphabet, str) or len(alphabet) < 2 or len(set(alphabet)) != len(alphabet) or not all(c.isalpha() for c in alphabet):
        raise _bad(source, "alphabet", "must be a string of at least 2 distinct letters")
    return Context(name, groups, items, quantity, total, alphabet, source)


@lru_cache(maxsize=64)
def load_context(spec: str) -> Context:
    """A built-in context by name, or a context YAML by path."""
    path = Path(spec)
    if not path.suffix and "/" not in spec and not path.exists():
        path = CONTEXT_DIR / f"{spec}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"key 'contexts': unknown context '{spec}' (built-in: {', '.join(BUILTIN_CONTEXTS)}; or give the path of a context YAML)"
            )
    elif not path.is_file():
        raise ConfigError(f"key 'contexts': context file not found: {spec}")
    return context_from_dict(read_yaml(path), str(path))


def load_contexts(items: Sequence[str], weights: dict[str, float] | None = None) -> list[tuple[Context, float]]:
    """Contexts with normalised mixture weights from ``["zoo:0.99", "teachers:0.01"]`` or a weight mapping."""
    pairs = [mix.parse_context_item(i) for i in items]
    if not pairs:
        raise ConfigError("key 'contexts': give at least one context")
    loaded = [(load_context(spec), spec, w) for spec, w in pairs]
    names = [c.name for c, _, _ in loaded]
    if len(set(names)) != len(names):
        raise ConfigError(f"key 'contexts': a context is listed twice ({', '.join(names)})")
    if weights:
        if any(w is not None for _, _, w in loaded):
            raise ConfigError("keys 'contexts' and 'context_weights': give weights in one place only")
        extra = sorted(set(weights) - set(names) - {s for _, s, _ in loaded})
        if extra:
            raise ConfigError(f"key 'context_weights': '{extra[0]}' is not among the contexts ({', '.join(names)})")
        loaded = [(c, s, weights.get(c.name, weights.get(s))) for c, s, _ in loaded]
        if any(w is None for _, _, w in loaded):
            raise ConfigError("key 'context_weights': give a weight for every context")
    given = [w is not None for _, _, w in loaded]
    if any(given) and not all(given):
        raise ConfigError("key 'contexts': give a ':weight' to every context or to none")
    out = [(c, 1.0 if w is None else float(w)) for c, _, w in loaded]
    if any(w < 0 for _, w in out) or sum(w for _, w in out) <= 0:
        raise ConfigError("key 'contexts': weights must be >= 0 and not all zero")
    total = sum(w for _, w in out)
    return [(c, w / total) for c, w in out]


# -- naming -----------------------------------------------------------------------------------------------------
def _natural_names(g: Graph, ctx: Context, rng: random.Random) -> tuple[dict[int, str], dict[int, tuple]] | None:
    """Quantity names: each total owns a group; other quantities are distinct (group, item) pairs elsewhere."""
    totals = [n for n in g.nodes if n.kind == "total"]
    free = list(ctx.groups)
    rng.shuffle(free)
    if len(totals) >= len(free):
        return None
    parts: dict[int, tuple] = {}
    for t in totals:
        grp = free.pop()
        if len(t.parents) > len(ctx.items):
            return None
        for p, item in zip(t.parents, rng.sample(ctx.items, len(t.parents))):
            parts[p] = (grp, item)
        parts[t.id] = (grp, None)
    others = [n.id for n in g.nodes if n.id not in parts]
    need = -(-len(others) // len(ctx.items))
    if need > len(free):
        return None
    use = free[: max(need, min(len(free), rng.randint(1, 3)))]
    for nid, j in zip(others, rng.sample(range(len(use) * len(ctx.items)), len(others))):
        parts[nid] = (use[j // len(ctx.items)], ctx.items[j % len(ctx.items)])
    names = {nid: ctx.total_name(grp) if item is None else ctx.quantity_name(grp, item) for nid, (grp, item) in parts.items()}
    return names, parts


def _compact_names(g: Graph, ctx: Context, rng: random.Random) -> dict[int, str]:
    """Consecutive letters of the alphabet from a random start, in dependency order (doubled past its end)."""
    a = ctx.alphabet
    s = rng.randrange(len(a))
    return {nid: a[(s + i) % len(a)] * (i // len(a) + 1) for i, nid in enumerate(g.order)}


# -- text pieces ------------------------------------------------------------------------------------------------
def lin_text(v: Lin, sym: str, compact: bool) -> str:
    """``3b+6`` / ``3b + 6``; a plain number when the form does not depend on the unknown."""
    if v.a == 0:
        return str(v.b)
    head = ("" if v.a == 1 else "-" if v.a == -1 else str(v.a)) + sym
    if v.b == 0:
        return head
    sign = "+" if v.b > 0 else "-"
    return f"{head}{sign}{abs(v.b)}" if compact else f"{head} {sign} {abs(v.b)}"


def _sub_text(v: Lin, sym: str, compact: bool) -> str:
    """A parent's value substituted into an expression: parenthesised unless a number or a single term."""
    t = lin_text(v, sym, compact)
    return t if v.a == 0 or (v.b == 0 and v.a > 0) else f"({t})"


def _expr(n: Node, parts: list[str], compact: bool) -> str:
    sp = "" if compact else " "
    if n.kind == "mul":
        return f"{n.k}{sp}*{sp}{parts[0]}"
    return f"{sp}{'-' if n.kind == 'diff' else '+'}{sp}".join(parts)


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _fact(n: Node, nm: dict[int, str], compact: bool) -> str | None:
    ps = [nm[p] for p in n.parents]
    if compact:
        return f"{nm[n.id]}={n.k if n.kind == 'const' else _expr(n, ps, True)}"
    if n.kind == "total":
        return None  # implicit: the sum of every quantity named in its group
    if n.kind == "const":
        rhs = str(n.k)
    elif n.kind == "mul":
        rhs = f"{n.k} times {ps[0]}"
    elif n.kind == "diff":
        rhs = f"{ps[0]} minus {ps[1]}"
    else:
        rhs = "the sum of " + (" and ".join(ps) if len(ps) == 2 else ", ".join(ps[:-1]) + " and " + ps[-1])
    return f"{_cap(nm[n.id])} equals {rhs}."


def _facts(g: Graph, nm: dict[int, str], compact: bool) -> list[str]:
    out = []
    for i in g.order:
        if i != g.unknown:
            f = _fact(g.nodes[i], nm, compact)
            if f:
                out.append(f)
        if i == g.target and g.unknown is not None:
            given = g.nodes[g.target].value
            out.append(f"{nm[i]}={given}" if compact else f"{_cap(nm[i])} is {given}.")
    return out


def trace_steps(g: Graph, nm: dict[int, str], letters: dict[int, str], compact: bool) -> list[str]:
    """The gold steps (without their final '.'), one per necessary quantity, in dependency order."""
    fs = forms(g.nodes, g.unknown, g.modulus)
    u = g.unknown
    sym = letters[u] if u is not None else ""
    eq = "=" if compact else " = "
    steps = []
    for i in g.trace_order():
        n, L = g.nodes[i], letters[i]
        if i == u:
            if not compact:
                steps.append(f"Define {nm[i]} as {L}; {L} is unknown")
            continue
        if n.kind == "const":
            parts = [str(n.k), str(fs[i].b)]
        else:
            parts = [
                _expr(n, [letters[p] for p in n.parents], compact),
                _expr(n, [_sub_text(fs[p], sym, compact) for p in n.parents], compact),
                lin_text(fs[i], sym, compact),
            ]
        parts = [p for j, p in enumerate(parts) if j == 0 or p != parts[j - 1]]
        body = L + eq + eq.join(parts)
        steps.append(body if compact else f"Define {nm[i]} as {L}; {body}")
    if u is not None:
        given, lin_d, val = g.nodes[g.target].value, lin_text(fs[g.target], sym, compact), g.nodes[u].value
        if compact:
            steps.append(f"{lin_d}={given}:{sym}={val}")
        else:
            steps.append(f"We know {letters[g.target]} = {given}, so {lin_d} = {given}; {sym} = {val}")
    if not compact:
        steps.append(f"Answer: {g.nodes[g.asked].value}")
    return steps


def graph_dict(g: Graph, nm: dict[int, str], letters: dict[int, str], parts: dict[int, tuple], op: int, render: str) -> dict[str, Any]:
    """The JSON form of a rendered graph: enough to re-verify any completion."""
    nodes = []
    for n in g.nodes:
        d: dict[str, Any] = {
            "id": n.id,
            "name": nm[n.id],
            "kind": n.kind,
            "parents": n.parents,
            "k": n.k,
            "value": n.value,
            "necessary": n.necessary,
        }
        if n.id in letters and n.necessary:
            d["letter"] = letters[n.id]
        if n.id in parts:
            d["group"], d["item"] = parts[n.id]
        nodes.append(d)
    given = {"node": g.target, "value": g.nodes[g.target].value} if g.unknown is not None else None
    return {
        "nodes": nodes,
        "target": g.target,
        "asked": g.asked,
        "unknown": g.unknown,
        "given": given,
        "modulus": g.modulus,
        "op": op,
        "render": render,
        "order": g.order,
        "trace": g.trace_order(),
    }


def render_record(
    g: Graph, ctx: Context, render: str, order: str, rng: random.Random, *, op: int, mode: str
) -> tuple[dict[str, Any] | None, str]:
    """One problem record (or None and why the context could not name this graph)."""
    compact = render == "compact"
    parts: dict[int, tuple] = {}
    if compact:
        nm = _compact_names(g, ctx, rng)
        letters = nm
    else:
        named = _natural_names(g, ctx, rng)
        if named is None:
            return None, "too few names in the context"
        nm, parts = named
        nec = g.trace_order()
        pool = LATIN if len(nec) <= len(LATIN) else LATIN + LATIN.upper()
        letters = dict(zip(nec, rng.sample(pool, len(nec))))
    facts = _facts(g, nm, compact)
    if order == "shuffled":
        rng.shuffle(facts)
    steps = trace_steps(g, nm, letters, compact)
    answer = str(g.nodes[g.asked].value)
    if compact:
        problem, question = ".".join(facts) + ".", "?" + nm[g.asked]
        prompt = f"<question>{problem}{question}</question><think>"
        solution = ".".join(steps) + "."
        completion = f"{solution}</think><answer>{answer}</answer>"
    else:
        header = [f"All quantities are computed modulo {g.modulus}."] if g.modulus else []
        problem, question = " ".join(header + facts), f"What is {nm[g.asked]}?"
        prompt = f"<question> {problem} {question} </question> <think>"
        solution = ". ".join(steps) + "."
        completion = f" {solution} </think> <answer> {answer} </answer>"
    rid = "syn-" + hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]
    return {
        "id": rid,
        "op": op,
        "context": ctx.name,
        "mode": mode,
        "render": render,
        "problem": problem,
        "question": question,
        "solution": solution,
        "answer": answer,
        "graph": graph_dict(g, nm, letters, parts, op, render),
        "prompt": prompt,
        "completion": completion,
    }, ""


# -- raw documents and the programmatic annotator ---------------------------------------------------------------
def _raw_parts(problem: dict[str, Any]) -> tuple[str, str]:
    if problem.get("render") == "compact":
        return f"<question>{problem['problem']}{problem['question']}</question>", f"<answer>{problem['answer']}</answer>"
    return (f"<question> {problem['problem']} {problem['question']} </question> ", f"<answer> {problem['answer']} </answer>")


def raw_document(problem: dict[str, Any]) -> str:
    """The problem and its answer without a trace (a plain pretraining document)."""
    head, tail = _raw_parts(problem)
    return head + tail


def split_steps(solution: str, render: str) -> list[str]:
    """The steps of a gold solution, each keeping its final '.' (their concatenation, modulo spaces, is it)."""
    if render == "compact":
        return [s + "." for s in solution.split(".") if s]
    return [s if s.endswith(".") else s + "." for s in re.split(r"(?<=\.) ", solution) if s]


def annotate(problem: dict[str, Any], *, per_step: bool = False) -> dict[str, Any]:
    """An augmented record (DESIGN §2) of the raw document whose thought is the gold trace.

    The raw document is split into the question block and the answer block; the thought sits between them.
    With ``per_step`` each step is its own thought (empty text segments between them), otherwise the whole
    trace is one thought. The concatenation of the segment texts is exactly ``raw_document(problem)``.
    """
    head, tail = _raw_parts(problem)
    thoughts = split_steps(problem["solution"], problem.get("render", "natural")) if per_step else [problem["solution"]]
    segments = [{"text": head, "thought": thoughts[0]}]
    segments += [{"text": "", "thought": t} for t in thoughts[1:]]
    segments.append({"text": tail, "thought": ""})
    return {
        "id": f"{problem['id']}-think",
        "source_id": problem["id"],
        "chunk": head + tail,
        "domain": "synthetic",
        "segments": segments,
        "annotator": "programmatic",
        "status": "accepted",
    }


__all__ = [
    "Context",
    "BUILTIN_CONTEXTS",
    "context_from_dict",
    "load_context",
    "load_contexts",
    "lin_text",
    "trace_steps",
    "graph_dict",
    "render_record",
    "raw_document",
    "split_steps",
    "annotate",
    "render_augmented",
]

"""The controlled synthetic world: dependency graphs over quantities, and the problem generator.

A problem is a DAG over quantities. Each quantity is a **constant** (a literal 1..const_max) or a combination of
earlier quantities: **sum** (2-3 parents), **difference** (first parent minus second), **product with a small
multiplier** (k times one parent) or a **total** (the sum of every quantity of one group, e.g. "the total number
of animals in Bundle Zoo"). Difficulty is the **op count**: the number of edges of the necessary DAG, where a
constant's literal counts as one edge and a multiplier belongs to its operation. So ``a=2, b=3*a, c=3*b`` has
op 3 and ``a=2, b=3, c=a+b`` has op 4.

``build_dag`` spends an edge budget exactly. Starting from nothing it repeatedly adds a constant (cost 1) or a
combination of existing nodes (cost = number of parents), and keeps the *frontier* of nodes not yet used as a
parent. It only takes an action after which the remaining budget can still merge the frontier into a single node
(merging f nodes with at most 3 parents per node costs f-1+ceil((f-1)/2)), so it ends with one node, the target,
whose ancestors are all the nodes it built: op equals the requested value by construction, and every built node
is necessary. Parents come mostly from the frontier and sometimes from used nodes, so the graph is a DAG with
shared sub-results, not a tree. Without a modulus every value stays in 0..max_value (a difference puts its larger
parent first); with one, all arithmetic is mod m and multipliers are units mod m.

Then distractors (quantities the target does not need) are added on top. In **reverse** mode one necessary
constant u becomes the unknown and the target's value is given instead; products only multiply by literals, so
the target is linear in u, target = alpha*u + beta (``forms``), and u = (given - beta)/alpha is unique when
alpha != 0 (a unit mod m). With a modulus the hidden value of u is redrawn from all residues 0..m-1 (it is never
stated, and answers limited to 1..const_max would make guessing easy). A dependency (topological) order of all nodes is the fact order of
``order=dependency`` and, restricted to necessary nodes, the step order of the gold trace.

``generate_problems(cfg)`` draws (op, context, mode) slots stratified by the configured mixture (``mix.py``),
builds and renders one problem per slot (``render.py``) and deduplicates by a content hash of the model input: a
duplicate or a dead end is redrawn, at most ``max_tries`` times per slot, after which the request is impossible
and a MidtrainError says why. Everything comes from one ``random.Random(seed)``: the same config gives the same
records. Launch::

    midtrain synth generate --ops 2-8 --contexts zoo,teachers,movies --n 300 --seed 1 --out problems.jsonl
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Any

KINDS = ("sum", "diff", "mul", "total")  # combination rules; constants are always allowed
MAX_PARENTS = 3
MIN_OP, MAX_OP = 1, 40
_WEIGHTS = {"const": 3.0, "mul": 2.0, "sum": 2.5, "diff": 1.5, "total": 1.0}
_P_FRONTIER = 0.75  # chance that a parent is taken from the frontier rather than reused
_PROPOSALS = 40  # random proposals per step before the enumerated fallbacks


# -- values -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lin:
    """``a*u + b``: a value linear in the reverse-mode unknown u (``a == 0`` for a plain number)."""

    a: int
    b: int

    def __add__(self, o: Lin) -> Lin:
        return Lin(self.a + o.a, self.b + o.b)

    def __sub__(self, o: Lin) -> Lin:
        return Lin(self.a - o.a, self.b - o.b)

    def scale(self, k: int) -> Lin:
        return Lin(self.a * k, self.b * k)

    def mod(self, m: int | None) -> Lin:
        return self if m is None else Lin(self.a % m, self.b % m)


@dataclass
class Node:
    id: int
    kind: str  # const | mul | sum | diff | total
    parents: list[int]
    k: int | None = None  # the literal of a constant, the multiplier of a product
    value: int = 0
    necessary: bool = True

    @property
    def cost(self) -> int:
        """Edges this node adds to the op count (a constant's literal counts as one)."""
        return 1 if self.kind == "const" else len(self.parents)


@dataclass
class Graph:
    nodes: list[Node]
    target: int  # the forward question; in reverse mode the node whose value is given
    modulus: int | None = None
    unknown: int | None = None  # reverse mode: the constant to solve for (the asked node)
    order: list[int] = field(default_factory=list)  # a dependency order of all nodes

    @property
    def asked(self) -> int:
        return self.target if self.unknown is None else self.unknown

    def trace_order(self) -> list[int]:
        return [i for i in self.order if self.nodes[i].necessary]


def _literal(kind: str, k: int | None) -> int:
    """``k`` of a constant or a product node, which always has one."""
    if k is None:
        raise ValueError(f"a {kind} node needs its literal k")
    return k


def _combine(kind: str, k: int | None, vals: list[Any], modulus: int | None) -> Any:
    """One node's value from its parents' values (ints or Lins)."""
    v: Any
    if kind == "const":
        v = _literal(kind, k)
    elif kind == "mul":
        m = _literal(kind, k)
        v = vals[0].scale(m) if isinstance(vals[0], Lin) else vals[0] * m
    elif kind in ("sum", "total"):
        v = vals[0]
        for w in vals[1:]:
            v = v + w
    elif kind == "diff":
        v = vals[0] - vals[1]
    else:
        raise ValueError(f"unknown node kind {kind!r}")
    if modulus is not None:
        return v.mod(modulus) if isinstance(v, Lin) else v % modulus
    return v


def forms(nodes: list[Node], unknown: int | None = None, modulus: int | None = None) -> list[Lin]:
    """Every node's value as a linear form in the unknown (plain numbers ``Lin(0, v)`` when there is none)."""
    out: list[Lin] = []
    for n in nodes:  # parents always have smaller ids
        if n.id == unknown:
            out.append(Lin(1, 0))
        elif n.kind == "const":
            out.append(Lin(0, _literal(n.kind, n.k)).mod(modulus))
        else:
            out.append(_combine(n.kind, n.k, [out[p] for p in n.parents], modulus))
    return out


def ancestors(nodes: list[Node], root: int) -> set[int]:
    """``root`` and every node it depends on."""
    seen, stack = {root}, [root]
    while stack:
        for p in nodes[stack.pop()].parents:
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return seen


def op_count(nodes: list[Node], target: int) -> int:
    """Edges of the DAG that ``target`` needs, a constant's literal counting as one."""
    return sum(nodes[i].cost for i in ancestors(nodes, target))


# -- the generator of one graph ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorldSpec:
    const_max: int = 4
    multipliers: tuple[int, ...] = (2, 3)
    modulus: int | None = None
    max_value: int = 999
    kinds: tuple[str, ...] = KINDS
    max_distractors: int = 4  # 0: none

    @property
    def fan_in(self) -> int:
        """Largest number of parents a merging node can have."""
        if "sum" in self.kinds or "total" in self.kinds:
            return MAX_PARENTS
        return 2 if "diff" in self.kinds else 1


def _need(f: int, fan_in: int) -> float:
    """Least budget that merges ``f`` frontier nodes into one."""
    if f <= 1:
        return 0
    if fan_in < 2:
        return math.inf
    return (f - 1) + -(-(f - 1) // (fan_in - 1))


Proposal = tuple[str, list[int], "int | None"]


def _value(prop: Proposal, nodes: list[Node], spec: WorldSpec) -> int:
    kind, parents, k = prop
    return _combine(kind, k, [nodes[p].value for p in parents], spec.modulus)


def _ok_value(v: int, spec: WorldSpec) -> bool:
    return spec.modulus is not None or 0 <= v <= spec.max_value


def _draw(kind: str, nodes: list[Node], frontier: list[int], in_total: set[int], rng: random.Random, spec: WorldSpec) -> Proposal | None:
    """A random proposal of ``kind`` (parents mostly from the frontier), or None if there are too few nodes."""
    if kind == "const":
        return ("const", [], rng.randint(1, spec.const_max))
    n = {"mul": 1, "diff": 2}.get(kind) or rng.randint(2, MAX_PARENTS)
    if len(nodes) < n:
        return None
    if kind == "total":  # children of a total: plain quantities that belong to no other total
        pool = [x.id for x in nodes if x.kind != "total" and x.id not in in_total]
    else:
        pool = [x.id for x in nodes]
    if len(pool) < n:
        return None
    fset = set(frontier)
    front = [i for i in pool if i in fset]
    rest = [i for i in pool if i not in fset]
    parents = []
    for _ in range(n):
        src = front if front and (not rest or rng.random() < _P_FRONTIER) else rest
        parents.append(src.pop(rng.randrange(len(src))))
    k = rng.choice(spec.multipliers) if kind == "mul" else None
    if kind == "diff" and spec.modulus is None and nodes[parents[0]].value < nodes[parents[1]].value:
        parents.reverse()
    return (kind, parents, k)


def _feasible(prop: Proposal, frontier: list[int], budget: int, nodes: list[Node], spec: WorldSpec) -> bool:
    kind, parents, _ = prop
    cost = 1 if kind == "const" else len(parents)
    f2 = len(frontier) - sum(p in frontier for p in parents) + 1
    if budget - cost < _need(f2, spec.fan_in):
        return False
    return _ok_value(_value(prop, nodes, spec), spec)


def _fallbacks(nodes: list[Node], frontier: list[int], in_total: set[int], rng: random.Random, spec: WorldSpec) -> list[Proposal]:
    """Merges of frontier nodes, products and a constant: what a tight budget still allows."""
    fr = frontier[:]
    rng.shuffle(fr)
    out: list[Proposal] = []
    if len(fr) >= 2:
        for kind in ("sum", "total"):
            if kind in spec.kinds:
                for j in sorted({min(len(fr), MAX_PARENTS), 2}, reverse=True):
                    out.append((kind, fr[:j], None))
        if "diff" in spec.kinds:
            a, b = fr[0], fr[1]
            if spec.modulus is None and nodes[a].value < nodes[b].value:
                a, b = b, a
            out.append(("diff", [a, b], None))
    if fr and "mul" in spec.kinds:
        out += [("mul", [fr[0]], m) for m in spec.multipliers]
    out.append(("const", [], rng.randint(1, spec.const_max)))
    return [p for p in out if p[0] != "total" or all(nodes[q].kind != "total" and q not in in_total for q in p[1])]


def build_dag(op: int, rng: random.Random, spec: WorldSpec) -> list[Node] | None:
    """Nodes of a DAG whose last node (the target) needs exactly ``op`` edges; None on a dead end."""
    nodes: list[Node] = []
    frontier: list[int] = []
    in_total: set[int] = set()
    kinds = ["const", *spec.kinds]
    cum = list(itertools.accumulate(_WEIGHTS[k] for k in kinds))
    budget = op
    while budget > 0:
        prop = None
        for _ in range(_PROPOSALS):
            cand = _draw(rng.choices(kinds, cum_weights=cum)[0], nodes, frontier, in_total, rng, spec)
            if cand is not None and _feasible(cand, frontier, budget, nodes, spec):
                prop = cand
                break
        if prop is None:
            prop = next((c for c in _fallbacks(nodes, frontier, in_total, rng, spec) if _feasible(c, frontier, budget, nodes, spec)), None)
        if prop is None:
            return None
        kind, parents, k = prop
        node = Node(len(nodes), kind, list(parents), k, _value(prop, nodes, spec))
        nodes.append(node)
        frontier = [f for f in frontier if f not in parents] + [node.id]
        if kind == "total":
            in_total.update(parents)
        budget -= node.cost
    return nodes if len(frontier) == 1 else None


def add_distractors(nodes: list[Node], count: int, rng: random.Random, spec: WorldSpec) -> None:
    """Append ``count`` quantities that nothing necessary depends on (never totals: they would need a group)."""
    kinds = ["const", *[k for k in spec.kinds if k != "total"]]
    weights = [_WEIGHTS[k] for k in kinds]
    for _ in range(count):
        for _try in range(20):
            prop = _draw(rng.choices(kinds, weights)[0], nodes, [], set(), rng, spec)
            if prop is not None and _ok_value(_value(prop, nodes, spec), spec):
                kind, parents, k = prop
                nodes.append(Node(len(nodes), kind, list(parents), k, _value(prop, nodes, spec), necessary=False))
                break


def choose_unknown(nodes: list[Node], target: int, rng: random.Random, modulus: int | None) -> int | None:
    """A necessary constant whose value the target's value determines uniquely, or None."""
    cands = [n.id for n in nodes if n.necessary and n.kind == "const" and n.id != target]
    rng.shuffle(cands)
    for u in cands:
        a = forms(nodes, u, modulus)[target].a
        if a != 0 and (modulus is None or math.gcd(a, modulus) == 1):
            return u
    return None


def dependency_order(nodes: list[Node], rng: random.Random) -> list[int]:
    """Necessary nodes in build order, each distractor inserted at a random place after its parents."""
    order = [n.id for n in nodes if n.necessary]
    for n in nodes:
        if not n.necessary:
            lo = max((order.index(p) + 1 for p in n.parents), default=0)
            order.insert(rng.randint(lo, len(order)), n.id)
    return order


def build_graph(op: int, mode: str, rng: random.Random, spec: WorldSpec, distractors: bool) -> tuple[Graph | None, str]:
    """One graph (or None and the reason of the dead end)."""
    nodes = build_dag(op, rng, spec)
    if nodes is None:
        return None, "dead end"
    target = nodes[-1].id
    if distractors and spec.max_distractors > 0:
        add_distractors(nodes, rng.randint(1, spec.max_distractors), rng, spec)
    unknown = None
    if mode == "reverse":
        unknown = choose_unknown(nodes, target, rng, spec.modulus)
        if unknown is None:
            return None, "no solvable unknown"
        if spec.modulus is not None:  # the hidden value need not look like a stated constant: any residue
            nodes[unknown].k = rng.randrange(spec.modulus)
            for n, v in zip(nodes, forms(nodes, None, spec.modulus)):
                n.value = v.b
    return Graph(nodes, target, spec.modulus, unknown, dependency_order(nodes, rng)), ""


# -- config and the record generator ----------------------------------------------------------------------------


__all__ = [
    "KINDS",
    "MAX_OP",
    "Lin",
    "Node",
    "Graph",
    "WorldSpec",
    "forms",
    "ancestors",
    "op_count",
    "build_dag",
    "add_distractors",
    "choose_unknown",
    "dependency_order",
    "build_graph",
]

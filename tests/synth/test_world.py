"""The graph generator: exact op counts, determinism, dedup, values, reverse solvability, impossible requests."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midtrain.errors import ConfigError, MidtrainError
from midtrain.synth.generate import SynthConfig, generate_problems
from midtrain.synth.world import KINDS, Lin, Node, WorldSpec, ancestors, build_graph, forms, op_count

from .conftest import CONTEXTS, problems


def nodes_of(rec: dict) -> list[Node]:
    return [Node(d["id"], d["kind"], d["parents"], d["k"], d["value"], d["necessary"]) for d in rec["graph"]["nodes"]]


def test_op_count_definition_on_hand_made_graphs():
    chain = [Node(0, "const", [], 2, 2), Node(1, "mul", [0], 3, 6), Node(2, "mul", [1], 3, 18)]
    assert op_count(chain, 2) == 3  # literal + two products
    summed = [Node(0, "const", [], 2, 2), Node(1, "const", [], 3, 3), Node(2, "sum", [0, 1], None, 5)]
    assert op_count(summed, 2) == 4  # two literals + two edges
    shared = summed + [Node(3, "diff", [2, 0], None, 3), Node(4, "const", [], 1, 1, necessary=False)]
    assert op_count(shared, 3) == 6 and ancestors(shared, 3) == {0, 1, 2, 3}  # a reused node counts once


def test_forms_are_linear_in_the_unknown():
    nodes = [
        Node(0, "const", [], 2, 2),
        Node(1, "const", [], 3, 3),
        Node(2, "mul", [0], 3, 6),
        Node(3, "sum", [2, 1], None, 9),
        Node(4, "diff", [3, 0], None, 7),
    ]
    assert forms(nodes)[4] == Lin(0, 7)
    assert forms(nodes, unknown=0)[4] == Lin(2, 3)  # (3u + 3) - u
    assert forms(nodes, unknown=0, modulus=5)[4] == Lin(2, 3)
    assert forms(nodes, unknown=1, modulus=5)[3] == Lin(1, 1)


def draw(op, mode, rng, spec):
    """build_graph with the generator's redraws (a reverse draw may have no solvable unknown)."""
    for _ in range(100):
        g, _ = build_graph(op, mode, rng, spec, distractors=True)
        if g is not None:
            return g
    raise AssertionError(f"no graph for op {op} {mode}")


@pytest.mark.parametrize("op", range(1, 31))
def test_op_count_is_exact_for_every_op(op):
    rng = random.Random(op)
    for i in range(40):
        for spec in (WorldSpec(), WorldSpec(modulus=10, multipliers=(3,))):
            mode = "reverse" if i % 2 and op >= 2 else "forward"
            g = draw(op, mode, rng, spec)
            assert op_count(g.nodes, g.target) == op
            assert ancestors(g.nodes, g.target) == {n.id for n in g.nodes if n.necessary}


@pytest.mark.slow
def test_op_count_exact_in_1000_samples_per_op():
    spec = WorldSpec()
    for op in range(2, 31):
        rng = random.Random(1000 + op)
        for i in range(1000):
            g = draw(op, "reverse" if i % 2 else "forward", rng, spec)
            assert op_count(g.nodes, g.target) == op


def test_record_op_counts_and_graphs():
    recs = problems(ops="2-30", n=29 * 12, seed=3, mode="mixed", contexts=tuple(CONTEXTS))
    for r in recs:
        assert op_count(nodes_of(r), r["graph"]["target"]) == r["op"] == r["graph"]["op"]
    per_op = {op: sum(r["op"] == op for r in recs) for op in range(2, 31)}
    assert set(per_op.values()) == {12}  # stratified, not sampled


@given(
    seed=st.integers(0, 2**31), op=st.integers(2, 20), modulus=st.sampled_from([None, 7, 10]), mode=st.sampled_from(["forward", "reverse"])
)
@settings(max_examples=120, deadline=None)
def test_values_bounds_and_reverse_solvability(seed, op, modulus, mode):
    cfg = SynthConfig(ops=str(op), n=1, seed=seed, mode=mode, modulus=modulus, max_value=500)
    rec = generate_problems(cfg)[0]
    g, nodes = rec["graph"], nodes_of(rec)
    lo, hi = (0, modulus - 1) if modulus else (0, 500)
    assert all(lo <= n.value <= hi for n in nodes)
    assert all(n.k in cfg.multipliers() for n in nodes if n.kind == "mul")
    assert all(1 <= n.k <= cfg.const_max for n in nodes if n.kind == "const" and n.id != g["unknown"])
    if g["unknown"] is not None:  # the hidden value: any residue with a modulus, a stated-looking one without
        assert 0 <= nodes[g["unknown"]].k <= (modulus - 1 if modulus else cfg.const_max)
    assert forms(nodes, None, modulus) == [Lin(0, n.value) for n in nodes]  # values are consistent
    for n in nodes:
        if n.kind == "total":  # children are plain quantities of its own group, in no other total
            assert all(nodes[p].kind != "total" for p in n.parents)
    assert all(not n.necessary for n in nodes if n.id not in ancestors(nodes, g["target"]))
    if mode == "forward":
        assert g["unknown"] is None and g["asked"] == g["target"] and rec["answer"] == str(nodes[g["target"]].value)
    else:
        u = g["unknown"]
        assert nodes[u].kind == "const" and nodes[u].necessary and g["asked"] == u
        assert rec["answer"] == str(nodes[u].value) and g["given"] == {"node": g["target"], "value": nodes[g["target"]].value}
        lin = forms(nodes, u, modulus)[g["target"]]
        # the given value determines u uniquely
        cands = [x for x in range(hi + 1 if modulus else 2 * hi + 1) if Lin(lin.a * x + lin.b, 0).mod(modulus).a == g["given"]["value"]]
        assert cands == [nodes[u].value]


def test_deterministic_and_deduplicated():
    a = generate_problems(SynthConfig(ops="2-8", n=150, seed=7, contexts=CONTEXTS, mode="mixed"))
    b = generate_problems(SynthConfig(ops="2-8", n=150, seed=7, contexts=CONTEXTS, mode="mixed"))
    c = generate_problems(SynthConfig(ops="2-8", n=150, seed=8, contexts=CONTEXTS, mode="mixed"))
    assert a == b and a != c
    assert len({r["id"] for r in a}) == len({r["prompt"] for r in a}) == 150


def test_generate_problems_call_forms():
    cfg = SynthConfig(ops="3-4", n=5, seed=2)
    assert generate_problems(5, ops="3-4", seed=2) == generate_problems(cfg) == generate_problems(n=5, ops="3-4", seed=2)
    assert len(generate_problems(cfg, n=2)) == 2
    with pytest.raises(ConfigError, match="nope"):
        generate_problems(3, nope=1)


def test_distractors_switch_and_kinds():
    with_d = problems(ops="6", n=40, seed=1)
    without = problems(ops="6", n=40, seed=1, distractors=False)
    assert all(any(not d["necessary"] for d in r["graph"]["nodes"]) for r in with_d)
    assert all(all(d["necessary"] for d in r["graph"]["nodes"]) for r in without)
    chains = problems(ops="7", n=30, seed=2, kinds=("mul",), distractors=False)
    assert all({d["kind"] for d in r["graph"]["nodes"]} == {"const", "mul"} for r in chains)
    assert all(len(r["graph"]["nodes"]) == 7 for r in chains)
    wide = problems(ops="12", n=30, seed=2, const_max=9)
    assert max(d["k"] for r in wide for d in r["graph"]["nodes"] if d["kind"] == "const") > 4


def test_impossible_requests_fail_clearly():
    with pytest.raises(MidtrainError, match="cannot generate problem .* distinct"):
        generate_problems(SynthConfig(ops="2", n=400, render="compact", modulus=10, distractors=False, max_tries=50))
    with pytest.raises(MidtrainError, match="cannot generate"):  # op 2 needs a product
        generate_problems(SynthConfig(ops="2", n=1, kinds=["sum"], max_tries=20))
    for bad, match in [
        (dict(ops="0-3"), "ops"),
        (dict(ops="2-50"), "ops"),
        (dict(ops="x"), "ops"),
        (dict(n=0), "'n'"),
        (dict(mode="reverse", ops="1-3"), "reverse"),
        (dict(modulus=1), "modulus"),
        (dict(kinds=["pow"]), "kinds"),
        (dict(modulus=6, max_multiplier=4), "coprime"),
        (dict(preset="nope"), "preset"),
        (dict(preset="tiny-id", ops="3"), "preset"),
        (dict(contexts=["mars"]), "mars"),
    ]:
        with pytest.raises(ConfigError, match=match):
            SynthConfig.from_dict(bad)


def test_kinds_constant_is_complete():
    assert set(KINDS) == {"sum", "diff", "mul", "total"}

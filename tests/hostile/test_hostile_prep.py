"""Hostile inputs for the preparation verbs: tokenizer train, model init, synth generate/verify/stats/diagnose.

Each case is one bad input on top of a command that works; the universal rules are in ``hostile_support``.
"""

from __future__ import annotations

import json
import re

import pytest
from hostile_support import BAD_UTF8, Case, Env, bad_utf8, check_case, dup_key_yaml, params, truncated_jsonl

pytestmark = pytest.mark.timeout(60)


# -- tokenizer train --------------------------------------------------------------------------------------------
def TT(e: Env, *extra: str, corpus: str | None = None) -> list[str]:
    return ["tokenizer", "train", "--corpus", corpus or str(e.a.corpus), "--out", str(e.out), "--vocab-size", "280", *extra]


def TT_yaml(e: Env, text: str) -> list[str]:
    cfg = e.write("tok.yaml", text)
    return ["tokenizer", "train", "--config", cfg, "--corpus", str(e.a.corpus), "--out", str(e.out)]


TOKENIZER = [
    Case("tokenizer/missing-corpus", lambda e: ["tokenizer", "train", "--out", str(e.out)], ["corpus"]),
    Case("tokenizer/missing-out", lambda e: ["tokenizer", "train", "--corpus", str(e.a.corpus)], ["out"]),
    Case("tokenizer/unknown-key", lambda e: TT(e, "vocab=300"), ["vocab"]),
    Case("tokenizer/wrong-type", lambda e: TT(e, "--vocab-size", "many"), ["vocab_size"]),
    Case("tokenizer/vocab-negative", lambda e: TT(e, "--vocab-size", "-5"), ["vocab_size"]),
    Case("tokenizer/vocab-huge", lambda e: TT(e, "--vocab-size", "1000000000000"), ["vocab_size"], process=True),
    Case("tokenizer/model-max-length-zero", lambda e: TT(e, "--model-max-length", "0"), ["model_max_length"]),
    Case("tokenizer/kind-unknown", lambda e: TT(e, "--kind", "wordpiece"), ["kind"]),
    Case("tokenizer/corpus-missing-file", lambda e: TT(e, corpus=str(e.path("nope.jsonl"))), ["nope.jsonl"]),
    Case("tokenizer/corpus-is-empty-dir", lambda e: TT(e, corpus=e.dir("emptydir")), ["emptydir"]),
    Case("tokenizer/corpus-empty-file", lambda e: TT(e, corpus=e.write("empty.jsonl", "")), ["empty.jsonl"]),
    Case("tokenizer/corpus-bad-utf8", lambda e: TT(e, corpus=e.write("bad.jsonl", BAD_UTF8)), ["bad.jsonl:2"]),
    Case(
        "tokenizer/corpus-truncated-line",
        lambda e: TT(e, corpus=e.write("trunc.jsonl", truncated_jsonl([{"text": "a b c"}, {"text": "d e f"}, {"text": "g h i"}]))),
        ["trunc.jsonl:3"],
    ),
    Case("tokenizer/corpus-not-objects", lambda e: TT(e, corpus=e.write("list.jsonl", "[1, 2]\n")), ["list.jsonl:1"]),
    Case("tokenizer/corpus-missing-text", lambda e: TT(e, corpus=e.jsonl("c.jsonl", [{"body": "x"}])), ["c.jsonl:1", "text"]),
    Case("tokenizer/out-under-a-file", lambda e: TT(e, "--out", str(e.file_parent() / "tok")), ["afile"]),
    Case("tokenizer/out-unwritable", lambda e: TT(e, "--out", str(e.unwritable())), [lambda e: str(e.unwritable().parent)]),
    Case("tokenizer/yaml-duplicate-key", lambda e: TT_yaml(e, dup_key_yaml("vocab_size", 300, 280)), ["vocab_size", "tok.yaml"]),
    Case("tokenizer/yaml-not-a-mapping", lambda e: TT_yaml(e, "- vocab_size\n- 300\n"), ["tok.yaml"]),
    Case("tokenizer/config-missing", lambda e: TT(e, "--config", str(e.path("nope.yaml"))), ["nope.yaml"]),
]


# -- model init -------------------------------------------------------------------------------------------------
def MI(e: Env, *extra: str, tok: str | None = None) -> list[str]:
    return ["model", "init", "--preset", "nano", "--tokenizer", tok or str(e.a.tok), "--out", str(e.out), *extra]


MODEL_INIT = [
    Case("model-init/max-positions-zero", lambda e: MI(e, "--max-position-embeddings", "0"), ["max_position_embeddings"]),
    Case("model-init/max-positions-negative", lambda e: MI(e, "--max-position-embeddings", "-8"), ["max_position_embeddings"]),
    Case(
        "model-init/max-positions-huge",
        lambda e: MI(e, "--max-position-embeddings", "1000000000000"),
        ["max_position_embeddings"],
        process=True,
    ),
    Case("model-init/rope-theta-negative", lambda e: MI(e, "--rope-theta", "-1"), ["rope_theta"]),
    Case("model-init/rope-theta-negative-exponent", lambda e: MI(e, "--rope-theta", "-1e4"), ["rope_theta"]),
    Case("model-init/rope-theta-nan", lambda e: MI(e, "--rope-theta", "nan"), ["rope_theta"]),
    Case("model-init/rope-theta-inf", lambda e: MI(e, "--rope-theta", "inf"), ["rope_theta"]),
    Case("model-init/preset-unknown", lambda e: MI(e, "--preset", "giant"), ["preset"]),
    Case("model-init/arch-unknown", lambda e: MI(e, "--arch", "gpt2"), ["arch"]),
    Case("model-init/tokenizer-missing", lambda e: MI(e, tok=str(e.path("notok"))), ["notok"]),
    Case("model-init/tokenizer-is-a-file", lambda e: MI(e, tok=e.write("tok.txt", "hello")), ["tok.txt"]),
    Case(
        "model-init/tokenizer-garbage",
        lambda e: MI(e, tok=(e.dir("badtok"), e.write("badtok/tokenizer.json", "{oops"), e.write("badtok/tokenizer_config.json", "{}"))[0]),
        ["badtok"],
    ),
    Case("model-init/out-is-a-file", lambda e: MI(e, "--out", str(e.file_parent("outfile"))), ["outfile"]),
    Case("model-init/out-unwritable", lambda e: MI(e, "--out", str(e.unwritable())), [lambda e: str(e.unwritable().parent)]),
]


# -- synth generate ---------------------------------------------------------------------------------------------
def SG(e: Env, *extra: str, out: str | None = None) -> list[str]:
    return [
        "synth",
        "generate",
        "--ops",
        "2-3",
        "--n",
        "4",
        "--render",
        "compact",
        "--modulus",
        "10",
        "--out",
        out or str(e.path("p.jsonl")),
        *extra,
    ]


def SG_yaml(e: Env, text: str) -> list[str]:
    return ["synth", "generate", "--config", e.write("gen.yaml", text), "--out", str(e.path("p.jsonl"))]


SYNTH_GENERATE = [
    Case("synth-generate/n-zero", lambda e: SG(e, "--n", "0"), [re.compile(r"\bn\b")]),
    Case("synth-generate/n-negative", lambda e: SG(e, "--n", "-5"), [re.compile(r"\bn\b")]),
    Case("synth-generate/n-float", lambda e: SG(e, "--n", "1e9"), [re.compile(r"\bn\b")]),
    Case("synth-generate/ops-out-of-range", lambda e: SG(e, "--ops", "0-3"), ["ops"]),
    Case("synth-generate/ops-garbage", lambda e: SG(e, "--ops", "two-three"), ["ops"]),
    Case("synth-generate/modulus-one", lambda e: SG(e, "--modulus", "1"), ["modulus"]),
    Case("synth-generate/reverse-share-nan", lambda e: SG(e, "--mode", "mixed", "--reverse-share", "nan"), ["reverse_share"]),
    Case("synth-generate/max-tries-zero", lambda e: SG(e, "--max-tries", "0"), ["max_tries"]),
    Case(
        "synth-generate/context-weight-negative",
        lambda e: SG(e, "--config", e.write("gen.yaml", "contexts: [zoo, teachers]\ncontext_weights: {zoo: -1.0, teachers: 2.0}\n")),
        [re.compile(r"context(_weight)?s")],
    ),
    Case("synth-generate/context-file-missing", lambda e: SG(e, "--contexts", str(e.path("ctx.yaml"))), ["ctx.yaml"]),
    Case("synth-generate/context-file-garbage", lambda e: SG(e, "--contexts", e.write("ctx.yaml", "name: [unclosed\n")), ["ctx.yaml"]),
    Case("synth-generate/out-is-a-directory", lambda e: SG(e, out=e.dir("outdir")), ["outdir"]),
    Case("synth-generate/out-under-a-file", lambda e: SG(e, out=str(e.file_parent() / "p.jsonl")), ["afile"]),
    Case("synth-generate/out-unwritable", lambda e: SG(e, out=str(e.unwritable() / "p.jsonl")), [lambda e: str(e.unwritable().parent)]),
    Case(
        "synth-generate/yaml-duplicate-key",
        lambda e: SG_yaml(e, dup_key_yaml("n", 4, 8, extra="ops: 2-3\n")),
        [re.compile(r"\bn\b"), "gen.yaml"],
    ),
]


# -- synth verify -----------------------------------------------------------------------------------------------
def first_id(e: Env) -> str:
    return json.loads(e.a.problems.read_text().splitlines()[0])["id"]


def problem(e: Env, **change) -> dict:
    """The first good problem record with fields changed (None: removed)."""
    rec = json.loads(e.a.problems.read_text().splitlines()[0])
    for k, v in change.items():
        if v is None:
            rec.pop(k)
        else:
            rec[k] = v
    return rec


def SV(e: Env, completions: str | None = None, problems: str | None = None, *extra: str) -> list[str]:
    argv = ["synth", "verify", "--problems", problems or str(e.a.problems)]
    if completions is not None:
        argv += ["--completions", completions]
    return [*argv, *extra]


SYNTH_VERIFY = [
    Case("synth-verify/problems-missing", lambda e: SV(e, problems=str(e.path("nope.jsonl"))), ["nope.jsonl"]),
    Case("synth-verify/problems-is-a-directory", lambda e: SV(e, problems=e.dir("pdir")), ["pdir"]),
    Case("synth-verify/problems-empty", lambda e: SV(e, problems=e.write("empty.jsonl", "")), ["empty.jsonl"]),
    Case("synth-verify/problems-not-objects", lambda e: SV(e, problems=e.write("arr.jsonl", '"just a string"\n')), ["arr.jsonl:1"]),
    Case(
        "synth-verify/problem-without-graph", lambda e: SV(e, problems=e.jsonl("p.jsonl", [problem(e, graph=None)])), ["p.jsonl:1", "graph"]
    ),
    Case(
        "synth-verify/problem-garbage-graph",
        lambda e: SV(e, problems=e.jsonl("p.jsonl", [problem(e, graph={"nodes": 7})])),
        ["p.jsonl:1", "graph"],
    ),
    Case(
        "synth-verify/completions-bad-utf8",
        lambda e: SV(e, e.write("c.jsonl", bad_utf8({"id": first_id(e), "completion": "x"}))),
        ["c.jsonl:2"],
    ),
    Case(
        "synth-verify/completions-truncated",
        lambda e: SV(e, e.write("c.jsonl", truncated_jsonl([{"id": first_id(e), "completion": "x"}] * 3))),
        ["c.jsonl:3"],
    ),
    Case("synth-verify/completion-field-missing", lambda e: SV(e, e.jsonl("c.jsonl", [{"id": first_id(e)}])), ["c.jsonl:1", "completion"]),
    Case(
        "synth-verify/completion-not-a-string",
        lambda e: SV(e, e.jsonl("c.jsonl", [{"id": first_id(e), "completion": 5}])),
        ["c.jsonl:1", "completion"],
    ),
    Case(
        "synth-verify/completion-unknown-id",
        lambda e: SV(e, e.jsonl("c.jsonl", [{"id": "ghost", "completion": "x"}])),
        ["c.jsonl:1", "ghost"],
    ),
    Case("synth-verify/ks-zero", lambda e: SV(e, None, None, "--ks", "0"), ["ks"]),
    Case("synth-verify/ks-negative", lambda e: SV(e, None, None, "--ks", "-1"), ["ks"]),
]


# -- synth stats ------------------------------------------------------------------------------------------------
SYNTH_STATS = [
    Case("synth-stats/no-file", lambda e: ["synth", "stats"], ["file"]),
    Case("synth-stats/file-missing", lambda e: ["synth", "stats", str(e.path("nope.jsonl"))], ["nope.jsonl"]),
    Case("synth-stats/file-is-a-directory", lambda e: ["synth", "stats", e.dir("sdir")], ["sdir"]),
    Case("synth-stats/file-empty", lambda e: ["synth", "stats", e.write("empty.jsonl", "")], ["empty.jsonl"]),
    Case(
        "synth-stats/bad-utf8",
        lambda e: ["synth", "stats", e.write("bad.jsonl", bad_utf8(e.a.problems.read_text().splitlines()[0]))],
        ["bad.jsonl:2"],
    ),
    Case("synth-stats/not-gzip", lambda e: ["synth", "stats", e.write("p.jsonl.gz", '{"id": 1}\n')], ["p.jsonl.gz"]),
    Case("synth-stats/record-missing-fields", lambda e: ["synth", "stats", e.jsonl("few.jsonl", [{"id": "x"}])], ["few.jsonl:1"]),
    Case("synth-stats/tokenizer-missing", lambda e: ["synth", "stats", str(e.a.problems), "--tokenizer", str(e.path("notok"))], ["notok"]),
]


# -- synth diagnose ---------------------------------------------------------------------------------------------
def SD(e: Env, *extra: str, model: str | None = None, problems: str | None = None) -> list[str]:
    return [
        "synth",
        "diagnose",
        model or str(e.a.nano),
        "--problems",
        problems or str(e.a.problems),
        "--ops.scale",
        "tiny",
        "--n-per-range",
        "2",
        "--out",
        str(e.out),
        *extra,
    ]


SYNTH_DIAGNOSE = [
    Case("synth-diagnose/n-per-range-zero", lambda e: SD(e, "--n-per-range", "0"), ["n_per_range"]),
    Case("synth-diagnose/batch-size-zero", lambda e: SD(e, "--batch-size", "0"), ["batch_size"]),
    Case("synth-diagnose/threads-negative", lambda e: SD(e, "--threads", "-1"), ["threads"]),
    Case("synth-diagnose/op-range-reversed", lambda e: SD(e, "ops.ranges.id=[5,2]"), ["ops.ranges.id"]),
    Case("synth-diagnose/model-missing", lambda e: SD(e, model=str(e.path("nomodel"))), ["nomodel"]),
    Case("synth-diagnose/model-config-garbage", lambda e: SD(e, model=str(e.a.garbage_config_model)), ["garbage_config_model"]),
    Case("synth-diagnose/model-truncated-safetensors", lambda e: SD(e, model=str(e.a.trunc_model)), ["trunc_model"]),
    Case("synth-diagnose/model-malicious-pickle", lambda e: SD(e, model=str(e.a.pickle_model)), ["pickle_model"]),
    Case("synth-diagnose/problems-natural-render", lambda e: SD(e, problems=str(e.a.natural)), ["natural.jsonl"]),
    Case("synth-diagnose/problems-missing-fields", lambda e: SD(e, problems=e.jsonl("few.jsonl", [{"id": "x", "op": 2}])), ["few.jsonl:1"]),
    Case("synth-diagnose/out-under-a-file", lambda e: SD(e, "--out", str(e.file_parent() / "d")), ["afile"]),
]


CASES = TOKENIZER + MODEL_INIT + SYNTH_GENERATE + SYNTH_VERIFY + SYNTH_STATS + SYNTH_DIAGNOSE


@pytest.mark.parametrize("case", params(CASES))
def test_hostile(case: Case, env: Env, capsys) -> None:
    check_case(case, env, capsys)

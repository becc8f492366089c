"""Contexts, renderings, record format, raw documents and the programmatic annotator."""

from __future__ import annotations

import re

import pytest
import yaml

from midtrain.errors import ConfigError
from midtrain.synth.generate import SynthConfig, generate_problems
from midtrain.synth.render import BUILTIN_CONTEXTS, annotate, load_context, load_contexts, raw_document, split_steps
from midtrain.synth.verify import verify
from midtrain.thoughts import render_augmented

from .conftest import CONTEXTS, one, problems

RECORD_KEYS = {"id", "op", "context", "mode", "render", "problem", "question", "solution", "answer", "graph", "prompt", "completion"}


@pytest.mark.parametrize("name", BUILTIN_CONTEXTS)
def test_builtin_contexts_have_30_names_per_level(name):
    ctx = load_context(name)
    assert len(ctx.groups) >= 30 and len(ctx.items) >= 30
    assert len({ctx.quantity_name(g, i) for g in ctx.groups for i in ctx.items}) == len(ctx.groups) * len(ctx.items)


def test_user_context_from_yaml(tmp_path):
    spec = {
        "name": "garden",
        "groups": ["North Bed", "South Bed", "East Bed", "West Bed"],
        "items": ["roses", "tulips", "daisies", "lilies", "irises"],
        "quantity": "the number of {item} in the {group}",
        "total": "the total number of flowers in the {group}",
    }
    path = tmp_path / "garden.yaml"
    path.write_text(yaml.safe_dump(spec))
    recs = generate_problems(SynthConfig(ops="2-8", n=30, seed=1, contexts=[str(path)], mode="mixed"))
    assert {r["context"] for r in recs} == {"garden"}
    assert all(verify(r, r["completion"]).verified for r in recs)
    assert "flowers in the" in " ".join(r["solution"] for r in recs)


@pytest.mark.parametrize(
    "change, key",
    [
        ({"groups": ["Only"]}, "groups"),
        ({"items": ["a1", "b2"]}, "items"),
        ({"items": ["x", "X"]}, "items"),
        ({"quantity": "{item} things"}, "quantity"),
        ({"total": "all of it"}, "total"),
        ({"colour": "red"}, "colour"),
        ({"groups": ["Kansas as City", "Other"]}, "groups"),
        ({"alphabet": "ab1"}, "alphabet"),
        ({"quantity": "the number of {item} in {group}. Really"}, "quantity"),
        ({"quantity": "{item} in {place}"}, "quantity"),
    ],
)
def test_bad_user_context_names_the_key(tmp_path, change, key):
    spec = {"name": "bad", "groups": ["A Place", "B Place"], "items": ["cats", "dogs"], **change}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=f"key '{key}'"):
        load_context(str(path))


def test_context_mixture_weights():
    ctxs = load_contexts(["zoo:0.99", "teachers:0.01"])
    assert [(c.name, round(w, 4)) for c, w in ctxs] == [("zoo", 0.99), ("teachers", 0.01)]
    assert [w for _, w in load_contexts(["zoo", "movies"], {"zoo": 3, "movies": 1})] == [0.75, 0.25]
    recs = generate_problems(SynthConfig(ops="3-6", n=200, seed=2, contexts=["zoo:0.99", "teachers:0.01"]))
    assert sum(r["context"] == "teachers" for r in recs) == 2
    for bad in (["zoo:1", "movies"], ["zoo", "zoo"], []):
        with pytest.raises(ConfigError):
            load_contexts(bad)
    with pytest.raises(ConfigError, match="mars"):
        load_contexts(["zoo"], {"mars": 1.0})


@pytest.mark.parametrize("render", ["natural", "compact"])
@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_record_format(render, mode):
    for r in problems(ops="2-12", n=40, seed=5, render=render, mode=mode, contexts=tuple(CONTEXTS)):
        assert set(r) == RECORD_KEYS and isinstance(r["answer"], str)
        assert r["prompt"].endswith("<think>") and r["prompt"].startswith("<question>")
        assert r["completion"].endswith("</answer>")
        full = r["prompt"] + r["completion"]
        assert full.count("<question>") == full.count("</question>") == full.count("<think>") == 1
        assert r["solution"] in r["completion"] and f"<answer>{' ' if render == 'natural' else ''}{r['answer']}" in full
        g = r["graph"]
        assert g["render"] == render and g["op"] == r["op"] and (g["unknown"] is not None) == (mode == "reverse")
        assert all({"id", "name", "kind", "parents", "k", "value", "necessary"} <= set(d) for d in g["nodes"])


def test_natural_rendering_paper_style_and_implicit_totals():
    recs = problems(ops="8-14", n=60, seed=9, contexts=tuple(CONTEXTS), mode="mixed")
    saw_total = False
    for r in recs:
        nodes = r["graph"]["nodes"]
        assert r["question"].startswith("What is ") and r["solution"].startswith("Define ")
        assert r["solution"].endswith(f"Answer: {r['answer']}.")
        for d in nodes:
            if d["kind"] == "total":
                saw_total = True
                assert f"{d['name'][0].upper()}{d['name'][1:]} equals" not in r["problem"]  # implicit
                in_group = {x["id"] for x in nodes if x.get("group") == d["group"] and x["id"] != d["id"]}
                assert in_group == set(d["parents"])
    assert saw_total


def test_compact_rendering_is_short_and_consecutive():
    recs = problems(ops="5", n=50, seed=1, render="compact", modulus=10, order="dependency", distractors=False)
    alphabet = load_context("zoo").alphabet
    for r in recs:
        question = r["problem"] + r["question"]
        assert len(question) < 40 and len(r["prompt"] + r["completion"]) < 160
        facts = r["problem"].rstrip(".").split(".")
        steps = r["solution"].rstrip(".").split(".")
        assert [f.split("=")[0] for f in facts] == [s.split("=")[0] for s in steps]  # dependency order = trace order
        names = [f.split("=")[0] for f in facts]
        idx = [alphabet.index(n) for n in names]
        assert all((b - a) % len(alphabet) == 1 for a, b in zip(idx, idx[1:]))  # consecutive letters
        assert re.fullmatch(r"[0-9]", r["answer"]) and all(0 <= d["value"] <= 9 for d in r["graph"]["nodes"])
        assert all(re.fullmatch(r"[a-z]=(?:[0-9]|[a-z0-9*+\-]+=[0-9*+\-]+=[0-9])", s) for s in steps)
    with_d = problems(ops="5", n=50, seed=1, render="compact", modulus=10)
    assert max(len(r["problem"] + r["question"]) for r in with_d) < 100


def test_compact_contexts_use_their_alphabets():
    for ctx in CONTEXTS:
        r = one(4, 6, ctx, "forward", "compact", modulus=10)
        names = {d["name"] for d in r["graph"]["nodes"]}
        assert all(c in load_context(ctx).alphabet for n in names for c in n)
    big = generate_problems(SynthConfig(ops="30", n=1, contexts=["movies"], mode="reverse", render="compact", modulus=10, kinds=["mul"]))[
        0
    ]  # 30+ quantities, 24 Greek letters
    assert len({d["name"] for d in big["graph"]["nodes"]}) == len(big["graph"]["nodes"]) > 24
    assert verify(big, big["completion"]).verified


@pytest.mark.parametrize("render", ["natural", "compact"])
@pytest.mark.parametrize("per_step", [False, True])
def test_raw_document_and_annotator(render, per_step):
    for r in problems(ops="2-10", n=20, seed=6, render=render, mode="mixed"):
        raw = raw_document(r)
        assert r["solution"] not in raw and "<think>" not in raw and r["problem"] in raw
        assert raw.endswith("</answer>") and r["answer"] in raw.rsplit("<answer>", 1)[1]
        aug = annotate(r, per_step=per_step)
        assert set(aug) == {"id", "source_id", "chunk", "domain", "segments", "annotator", "status"}
        assert aug["chunk"] == raw == "".join(s["text"] for s in aug["segments"])
        assert aug["domain"] == "synthetic" and aug["annotator"] == "programmatic" and aug["status"] == "accepted"
        thoughts = [s["thought"] for s in aug["segments"] if s["thought"]]
        assert thoughts == (split_steps(r["solution"], render) if per_step else [r["solution"]])
        text = render_augmented(aug)
        assert text.count("<think>") == len(thoughts) and text.replace("<think>", "").replace("</think>", "") != raw
        stripped = re.sub(r"<think>.*?</think>", "", text, flags=re.S)
        assert stripped == raw


def test_tags_and_digits_tokenize_as_required(tmp_path, capsys, quiet):
    from midtrain.models.tokenizer import TAGS, TokenizerConfig, load_tokenizer, train_tokenizer

    recs = problems(ops="2-8", n=200, seed=3, render="compact", modulus=10) + problems(ops="2-6", n=50, seed=3)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(f'{{"text": {__import__("json").dumps(r["prompt"] + r["completion"])}}}\n' for r in recs))
    train_tokenizer(TokenizerConfig(corpus=[str(corpus)], out=str(tmp_path / "tok"), vocab_size=400))
    tok = load_tokenizer(tmp_path / "tok")
    for t in TAGS:
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1
    assert len(tok("12345", add_special_tokens=False)["input_ids"]) == 5
    short = problems(ops="5", n=50, seed=1, render="compact", modulus=10, order="dependency", distractors=False)
    lengths = [len(tok(r["prompt"] + r["completion"], add_special_tokens=False)["input_ids"]) for r in short]
    assert max(lengths) < 100
    from midtrain.cli import main
    from midtrain.data.jsonl import write_jsonl

    write_jsonl(tmp_path / "short.jsonl", short)
    assert main(["synth", "stats", str(tmp_path / "short.jsonl"), "--tokenizer", str(tmp_path / "tok"), "--json"]) == 0
    stats = __import__("json").loads(capsys.readouterr().out)
    assert stats["unit"] == "tokens" and stats["lengths"]["prompt+completion"]["max"] == max(lengths)

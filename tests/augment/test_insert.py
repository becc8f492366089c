"""Insert mode of ``midtrain augment``: points, units, thought checks, exact text, rejection reasons, resume."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from midtrain.augment.augment import read_augmented, run
from midtrain.augment.chunking import Chunk
from midtrain.augment.config import AugmentConfig, InsertConfig
from midtrain.augment.insert import cached_tokenizer, check_thought, choose_points, copies_text, plan_chunk, units_of
from midtrain.augment.rules import RuleAnnotator, prompt_text
from midtrain.errors import ConfigError, MidtrainError
from midtrain.llm.backends import ProgrammaticBackend
from midtrain.llm.prompts import load_prompt
from midtrain.shards import read_tolerant, shard_paths
from midtrain.thoughts import render_augmented, strip_thoughts

INSERT = load_prompt("insert")


def cfg_for(tmp_path: Path, corpus: Path, tokenizer_dir: Path, **kw) -> AugmentConfig:
    base = dict(
        input=[str(corpus)],
        out=str(tmp_path / "aug"),
        tokenizer=str(tokenizer_dir),
        max_chunk_tokens=256,
        batch_chunks=8,
        mode="insert",
        insert={"points": 3},
    )
    base.update(kw)
    return AugmentConfig.from_dict(base)


def test_choose_points_respects_count_spacing_and_range():
    for seed in range(50):
        rng = random.Random(seed)
        pts = choose_points(10, 3, 3, rng)
        assert len(pts) == 3 and pts == sorted(pts) and 1 <= pts[0] and pts[-1] <= 10
        assert all(b - a >= 3 for a, b in zip(pts, pts[1:]))
    assert choose_points(5, 9, 2, random.Random(0)) == [1, 3, 5]  # only one spaced set of the most points
    assert choose_points(1, 4, 1, random.Random(0)) == [1]
    assert choose_points(0, 4, 1, random.Random(0)) == []
    seen = Counter(tuple(choose_points(4, 2, 2, random.Random(s))) for s in range(600))
    assert set(seen) == {(1, 3), (1, 4), (2, 4)} and min(seen.values()) > 150  # uniform over the admissible sets


def test_units_are_lossless_and_cut_long_sentences_at_words():
    text = "Short one. " + " ".join(f"w{i}" for i in range(25)) + ". End here.\n"
    units = units_of(text, 10)  # no tokenizer: every 10 words
    assert "".join(units) == text
    assert units[0] == "Short one. " and len(units) == 5 and units[-1] == "End here.\n"
    assert all(u[-1].isspace() for u in units[:-1])  # a cut never splits a word


def test_plan_is_deterministic_per_seed_and_chunk():
    text = " ".join(f"Sentence number {i} ends here." for i in range(12))
    c = Chunk("d#0000", "d", text, "general", 100)
    a, b = plan_chunk(c, InsertConfig(points=4)), plan_chunk(c, InsertConfig(points=4))
    assert a.cuts == b.cuts and len(a.cuts) == 4
    assert all(text[:cut].endswith(". ") or cut == len(text) for cut in a.cuts)
    others = {tuple(plan_chunk(c, InsertConfig(points=4, seed=s)).cuts) for s in range(8)}
    assert len(others) > 1  # the seed moves the points
    other_chunk = {tuple(plan_chunk(Chunk(f"d#{i:04d}", "d", text, "general", 1), InsertConfig(points=4)).cuts) for i in range(8)}
    assert len(other_chunk) > 1  # and so does the chunk id


@pytest.mark.parametrize(
    "answer, reason",
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("<think></think>", "empty"),
        ("I think </think> the river turns north here.", "thought_has_tags"),
        ("<think>nested <think>tags</think> here and there</think>", "thought_has_tags"),
        ("Hmm.", "thought_too_short"),
        (" ".join(["word"] * 30), "thought_too_long"),
        ("the old market by the river was quiet", "thought_copies_text"),  # a stretch of the text read
        ("Next: The winter letter arrived late at night. Indeed.", "thought_copies_text"),  # the following sentence
        ("<think>The writer sets up a contrast with the city.</think>", None),  # enclosing tags are removed
        ("The writer sets up a contrast with the city.", None),
    ],
)
def test_check_thought_reasons(answer, reason):
    chunk = "Yesterday the old market by the river was quiet. The winter letter arrived late at night. It was short."
    cfg = InsertConfig(min_words=3, max_words=20)
    thought, got, _ = check_thought(answer, chunk, "The winter letter arrived late at night. ", cfg)
    assert got == reason
    if reason is None:
        assert thought == "The writer sets up a contrast with the city."


def test_copies_text_ignores_short_overlaps():
    assert not copies_text("the river", "by the river it was", "")
    assert copies_text("BY THE RIVER IT WAS", "Then by the river it was cold.", "")  # case and NFKC folded


def test_programmatic_insert_run_keeps_every_chunk_exactly(tmp_path, prose_corpus, tokenizer_dir):
    cfg = cfg_for(tmp_path, prose_corpus, tokenizer_dir)
    res = run(cfg)
    m = res.metrics
    recs = list(read_augmented(cfg.out, status=None))
    assert m["chunks"] == len(recs) > 10
    multi = [r for r in recs if r["chunk"].count(". ") + r["chunk"].count("? ") + r["chunk"].count("! ") >= 3]
    assert multi and all(r["status"] == "accepted" for r in multi)
    for r in recs:
        assert set(r) >= {"id", "source_id", "chunk", "domain", "segments", "annotator", "status", "reason", "attempts", "tokens"}
        if r["status"] != "accepted":
            assert r["reason"] == "too_few_thoughts"  # never a text change
            continue
        assert "".join(s["text"] for s in r["segments"]) == r["chunk"] == strip_thoughts(render_augmented(r))
        thoughts = [s["thought"] for s in r["segments"] if s["thought"]]
        assert 1 <= len(thoughts) <= 3 and all(t.startswith("Having read up to") for t in thoughts)
        for s in r["segments"]:  # a thought follows a unit (never inside a word), and names the words just before it
            if s["thought"] and s is not r["segments"][-1]:
                assert s["text"][-1].isspace() and s["text"].split()[-1] in s["thought"]
    assert m["acceptance_rate"] > 0.9 and m["thoughts_per_accepted_chunk"] > 1.5
    again = run(cfg)
    assert again.cached and again.metrics["accepted"] == m["accepted"]
    text = json.dumps(recs)
    cfg2 = cfg_for(tmp_path, prose_corpus, tokenizer_dir, out=str(tmp_path / "aug2"))
    run(cfg2)
    assert json.dumps(list(read_augmented(cfg2.out, status=None))) == text  # deterministic points and thoughts


def test_all_points_of_a_batch_go_to_the_backend_together(tmp_path, prose_corpus, tokenizer_dir):
    calls: list[int] = []
    inner = ProgrammaticBackend(RuleAnnotator(INSERT, "insert"))

    class Counting(ProgrammaticBackend):
        async def agenerate(self, prompts, **kw):
            calls.append(len(prompts))
            assert all(prompt_text(INSERT, p) is not None for p in prompts)
            return inner.generate(prompts, **kw)

    cfg = cfg_for(tmp_path, prose_corpus, tokenizer_dir, batch_chunks=1000, max_documents=6)
    res = run(cfg, backend=Counting(inner.respond))
    assert len(calls) == 1 and calls[0] > res.metrics["chunks"]  # one call, several points per chunk


def scripted(kind: str):
    """A thought annotator that answers badly in one way (``good`` answers well)."""

    def respond(prompt: str) -> str:
        so_far = prompt_text(INSERT, prompt)
        assert so_far is not None
        if kind == "garbage":  # echoes the text it was given
            return so_far[-200:]
        if kind == "tags":
            return "First I note the setting. </think> Then the story moves on to the city."
        if kind == "empty":
            return "  "
        if kind == "boom":
            raise RuntimeError("server exploded")
        return "The passage sets a scene; next it will probably describe a person or an event."

    return respond


@pytest.mark.parametrize(
    "kind, status, reason",
    [
        ("garbage", "rejected", "thought_copies_text"),
        ("tags", "rejected", "thought_has_tags"),
        ("empty", "rejected", "empty"),
        ("boom", "failed", "backend_error"),
        ("good", "accepted", None),
    ],
)
def test_bad_thoughts_get_their_reason(tmp_path, prose_corpus, tokenizer_dir, kind, status, reason):
    cfg = cfg_for(tmp_path, prose_corpus, tokenizer_dir, max_documents=5, retries=1, insert={"points": 2})
    backend = ProgrammaticBackend(scripted(kind))
    if status == "failed":  # an outage is not a finished run: exit non-zero, records kept for the retry
        with pytest.raises(MidtrainError, match=r"chunks failed \(RuntimeError"):
            run(cfg, backend=backend)
    else:
        res = run(cfg, backend=backend)
    recs = [r for r in read_augmented(cfg.out, status=None) if r["chunk"].count(". ") >= 2]
    assert recs and {r["status"] for r in recs} == {status} and {r["reason"] for r in recs} == {reason}
    if status == "rejected":
        assert res.metrics["rejected_by_reason"][reason] == res.metrics["rejected"]
        assert all(r["attempts"] == 2 and "answer" in r for r in recs)  # asked again once, answer kept
        assert backend.stats["requests"] == 2 * sum(
            min(2, len(units_of(r["chunk"], 64, cached_tokenizer(str(tokenizer_dir))))) for r in read_augmented(cfg.out, status=None)
        )


def test_a_dropped_thought_leaves_the_others(tmp_path, prose_corpus, tokenizer_dir):
    """One point out of three answers with a tag: the chunk keeps the two good thoughts (min_thoughts 1)."""

    def respond(prompt: str) -> str:
        so_far = prompt_text(INSERT, prompt) or ""
        good = "The market scene suggests a trade town; a merchant may appear soon."  # ("a fine thought" is filler)
        return "bad </think> thought here" if len(so_far) % 3 == 0 else good

    cfg = cfg_for(tmp_path, prose_corpus, tokenizer_dir, retries=0)
    run(cfg, backend=ProgrammaticBackend(respond))
    accepted = list(read_augmented(cfg.out))
    assert accepted and all("".join(s["text"] for s in r["segments"]) == r["chunk"] for r in accepted)
    assert all("</think>" not in (s["thought"] or "") for r in accepted for s in r["segments"])
    assert any(sum(1 for s in r["segments"] if s["thought"]) < 3 for r in accepted)


def test_resume_after_a_torn_tail(tmp_path, prose_corpus, tokenizer_dir):
    cfg = cfg_for(tmp_path, prose_corpus, tokenizer_dir)
    total = run(cfg).metrics["chunks"]
    paths = shard_paths(cfg.out, 0, 1)
    lines = paths.jsonl.read_bytes().splitlines(keepends=True)
    paths.jsonl.write_bytes(b"".join(lines[:5]) + lines[5][: len(lines[5]) // 2])  # as if killed mid-append
    for p in (paths.done, Path(cfg.out) / "COMPLETE", Path(cfg.out) / "manifest.json"):
        p.unlink()
    res = run(cfg)
    recs = read_tolerant(paths.jsonl)
    assert [json.dumps(r) for r in recs[:5]] == [line.decode().rstrip("\n") for line in lines[:5]]
    assert [json.dumps(r) for r in recs] == [line.decode().rstrip("\n") for line in lines]  # same points, same thoughts
    assert len({r["id"] for r in recs}) == total == res.metrics["chunks"]


def test_insert_config_errors(tmp_path, prose_corpus, tokenizer_dir):
    with pytest.raises(ConfigError, match="insert.points"):
        cfg_for(tmp_path, prose_corpus, tokenizer_dir, min_thoughts=3, insert={"points": 2})
    with pytest.raises(ConfigError, match="insert.min_words"):
        cfg_for(tmp_path, prose_corpus, tokenizer_dir, insert={"min_words": 9, "max_words": 3})
    with pytest.raises(ConfigError, match="insert.prompt"):
        run(cfg_for(tmp_path, prose_corpus, tokenizer_dir, insert={"prompt": str(tmp_path / "missing.txt")}))
    assert not (tmp_path / "aug").exists()


def test_cli_insert_mode_feeds_split_and_tasks(tmp_path, prose_corpus, tokenizer_dir, capsys):
    from midtrain.cli import main as cli_main

    aug, spl, tsk = tmp_path / "aug", tmp_path / "split", tmp_path / "tasks"
    argv = ["augment", str(prose_corpus), "--out", str(aug), "--tokenizer", str(tokenizer_dir), "--max-chunk-tokens", "256"]
    assert cli_main([*argv, "--mode", "insert", "--insert.points", "2", "--json"]) == 0
    n = json.loads(capsys.readouterr().out)["metrics"]["accepted"]
    assert cli_main(["augment", "split", str(aug), "--out", str(spl), "--rl-fraction", "0.5", "--json"]) == 0
    sm = json.loads(capsys.readouterr().out)["metrics"]
    assert sm["sft"] + sm["rl"] == n > 0
    sft = [json.loads(line) for line in (spl / "sft.jsonl").read_text().splitlines()]
    assert all(r["text"] == render_augmented(r) and "<think>Having read up to" in r["text"] for r in sft)
    assert (
        cli_main(["augment", "tasks", str(spl), "--out", str(tsk), "--tokenizer", str(tokenizer_dir), "--min-prefix-tokens", "4", "--json"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["metrics"]["tasks"] > 0


def test_a_looping_thought_is_rejected_as_repetitive():
    from midtrain.augment.insert import repetitive

    loop = "I am ready to continue. " * 6  # what SmolLM2-135M-Instruct wrote for some OpenStax chunks
    assert repetitive(loop) and not repetitive("I am ready to continue.")  # too short to judge
    fine = "The passage turns from the setting to the people in it; the next sentence should name who arrives and why."
    assert not repetitive(fine)
    _, reason, detail = check_thought(loop, "Some chunk text. More text.", "More text.", InsertConfig())
    assert reason == "thought_repetitive" and "loops" in detail


def test_thought_checks_are_counted_per_reason_in_records_manifest_and_summary(tmp_path, prose_corpus, tokenizer_dir):
    asked: Counter = Counter()

    def respond(prompt: str) -> str:
        so_far = prompt_text(INSERT, prompt) or ""
        kind = ("filler", "cut", "good")[len(so_far) % 3]
        asked[kind] += 1
        if kind == "filler":
            return "I am ready to continue reading the text and see what comes next in the text."
        if kind == "cut":
            return "The market by the river must matter to the town because the traders " * 6  # no sentence end
        return "The market scene suggests a trade town; a merchant may appear soon."

    cfg = cfg_for(tmp_path, prose_corpus, tokenizer_dir, retries=0, insert={"points": 3, "max_new_tokens": 64})
    res = run(cfg, backend=ProgrammaticBackend(respond))
    checks = res.metrics["thought_checks"]
    assert checks["answers"] == sum(asked.values()) and checks["kept"] == asked["good"]
    assert checks["rejected_by_reason"] == {"thought_cut_off": asked["cut"], "thought_filler": asked["filler"]}
    assert checks["rejected_share"]["thought_filler"] == round(asked["filler"] / checks["answers"], 4)
    recs = list(read_augmented(cfg.out, status=None))
    assert sum((Counter(r["thought_checks"]) for r in recs), Counter()) == Counter(
        {"kept": asked["good"], "thought_cut_off": asked["cut"], "thought_filler": asked["filler"]}
    )
    assert json.loads((Path(cfg.out) / "manifest.json").read_text())["thought_checks"] == checks
    summary = res.summary()
    assert f"thoughts checked {checks['answers']}  kept {asked['good']}" in summary and "thought_filler" in summary
    assert run(cfg).metrics["thought_checks"] == checks  # a cache hit reports the same counts

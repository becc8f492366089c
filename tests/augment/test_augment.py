"""``midtrain augment`` end to end: counts, rejections by reason, retries, failures, resume, shards, formats."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from midtrain.augment.augment import read_augmented, run
from midtrain.augment.chunking import shard_chunks
from midtrain.augment.config import AugmentConfig
from midtrain.augment.rules import prompt_text
from midtrain.cli import main as cli_main
from midtrain.errors import ConfigError, DataError, MidtrainError, RunDirError
from midtrain.llm.prompts import load_prompt
from midtrain.llm.serve import HTTPFault
from midtrain.models.tokenizer import load_tokenizer
from midtrain.shards import ShardLock, read_tolerant, shard_paths
from midtrain.synth import render
from midtrain.synth.generate import generate_problems
from midtrain.thoughts import render_augmented, strip_thoughts


def cfg_for(tmp_path: Path, corpus: Path, tokenizer_dir: Path, **kw) -> AugmentConfig:
    base = dict(input=[str(corpus)], out=str(tmp_path / "aug"), tokenizer=str(tokenizer_dir), max_chunk_tokens=64, batch_chunks=8)
    base.update(kw)
    return AugmentConfig.from_dict(base)


def all_records(out) -> list[dict]:
    return list(read_augmented(out, status=None))


def expected_ids(cfg: AugmentConfig, tokenizer_dir) -> set[str]:
    tok = load_tokenizer(tokenizer_dir)
    return {c.id for i in range(cfg.num_shards) for c in shard_chunks(cfg, tok, i)}


def test_programmatic_run_is_complete_exact_and_cached(tmp_path, prose_corpus, tokenizer_dir):
    cfg = cfg_for(tmp_path, prose_corpus, tokenizer_dir, num_shards=3)
    res = run(cfg)
    m = res.metrics
    recs = all_records(cfg.out)
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids)) == m["chunks"] and set(ids) == expected_ids(cfg, tokenizer_dir)
    assert m["accepted"] == m["chunks"] > 20 and m["shards_done"] == 3 and m["acceptance_rate"] == 1.0
    assert (Path(cfg.out) / "COMPLETE").is_file() and json.loads((Path(cfg.out) / "manifest.json").read_text())["chunks"] == m["chunks"]
    docs = {json.loads(line)["id"]: json.loads(line)["text"] for line in prose_corpus.read_text().splitlines()}
    by_doc: dict[str, list] = {}
    for r in recs:
        assert set(r) >= {"id", "source_id", "chunk", "domain", "segments", "annotator", "status"}
        assert "".join(s["text"] for s in r["segments"]) == r["chunk"] == strip_thoughts(render_augmented(r))
        assert r["tokens"] <= 64 and r["annotator"] == "programmatic"
        by_doc.setdefault(r["source_id"], []).append(r)
    for doc_id, rs in by_doc.items():  # chunks of a document concatenate back to it
        assert "".join(r["chunk"] for r in sorted(rs, key=lambda r: r["id"])) == docs[doc_id]
    again = run(cfg)
    assert again.cached and again.metrics["chunks"] == m["chunks"]
    assert "accepted" in again.summary()


def scripted_annotator(seen_temperatures: list, outage: list | None = None):
    """Behaviour by the first word of the chunk (see the test corpus below); FAIL fails while ``outage`` is true."""
    attempts: Counter = Counter()
    outage = [True] if outage is None else outage

    def respond(prompt: str, body: dict) -> str:
        text = prompt_text(load_prompt("augment"), prompt)
        assert text is not None
        word = text.split()[0]
        attempts[word] += 1
        seen_temperatures.append((word, body.get("temperature")))
        good = text.replace(". ", ". <think>a thought</think>", 1)
        if word == "ALTER":
            return good.replace("river", "rivers")
        if word == "UNBAL":
            return good.replace("</think>", "")
        if word == "NONE":
            return text
        if word == "MANY":
            return "".join(ch + "<think>t</think>" for ch in text)
        if word == "EMPTY":
            return "   "
        if word == "TRUNC":
            return "<think>t</think>" + text[: len(text) // 2]
        if word == "FAIL" and outage[0]:
            raise HTTPFault(500)
        if word == "FLAKY" and attempts[word] == 1:
            return good.replace("river", "lake")
        return good

    return respond


def test_scripted_http_annotator_counts_every_reason(tmp_path, tokenizer_dir, serve):
    kinds = ["GOOD", "ALTER", "UNBAL", "NONE", "MANY", "EMPTY", "TRUNC", "FAIL", "FLAKY"]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": k, "text": f"{k} the river ran. It was cold. Then it froze."}) + "\n" for k in kinds))
    temps: list = []
    outage = [True]
    srv = serve(scripted_annotator(temps, outage))
    cfg = cfg_for(
        tmp_path,
        corpus,
        tokenizer_dir,
        retries=1,
        max_thoughts=8,
        annotator={"backend": "openai", "base_url": srv.url, "model": "scripted", "max_retries": 1, "backoff_s": 0.01, "timeout_s": 5},
    )
    with pytest.raises(MidtrainError, match=r"augment: 1 of 9 chunks failed \(HTTP 500 ×1\); re-run"):
        run(cfg)  # a failed chunk is an outage: no COMPLETE, the counts in midtrain.json
    out = Path(cfg.out)
    meta = json.loads((out / "midtrain.json").read_text())
    assert not (out / "COMPLETE").exists() and meta["status"] == "failed" and meta["metrics"]["failed_by_kind"] == {"HTTP 500": 1}
    recs = {r["source_id"]: r for r in all_records(cfg.out)}
    assert recs["FAIL"]["status"] == "failed" and "HTTP 500" in recs["FAIL"]["detail"] and recs["FAIL"]["error"] == "HTTP 500"
    assert recs["ALTER"]["status"] == "rejected"  # a rejection is an outcome, not a failure
    asked = srv.stats["requests"]
    outage[0] = False  # the server is back: the re-run asks for the failed chunk only
    m = run(cfg).metrics
    assert srv.stats["requests"] - asked == 1 and (out / "COMPLETE").is_file()
    assert m["chunks"] == 9 and m["accepted"] == 3 and m["failed"] == 0 and m["rejected"] == 6
    assert m["rejected_by_reason"] == {
        "text_altered": 1,
        "truncated": 1,
        "tags_unbalanced": 1,
        "too_few_thoughts": 1,
        "too_many_thoughts": 1,
        "empty": 1,
    }
    assert m["failed_by_reason"] == {}
    records = all_records(cfg.out)
    assert sorted(r["source_id"] for r in records) == sorted(kinds)  # every chunk once: nothing duplicated
    recs = {r["source_id"]: r for r in records}
    assert recs["FLAKY"]["status"] == "accepted" and recs["FLAKY"]["attempts"] == 2  # the retry re-asked
    assert recs["ALTER"]["attempts"] == 2 and "rivers" in recs["ALTER"]["answer"] and "rivers" in recs["ALTER"]["detail"]
    assert recs["FAIL"]["status"] == "accepted"
    assert ("FLAKY", 0.0) in temps and ("FLAKY", 0.7) in temps  # retries sample at retry_temperature
    assert m["examples"]["text_altered"][0]["id"] == "ALTER#0000"
    assert all(r["segments"] == [] for r in recs.values() if r["status"] != "accepted")


def test_resume_after_a_torn_tail_writes_every_chunk_once(tmp_path, prose_corpus, tokenizer_dir):
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
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids)) == total == res.metrics["chunks"]


def test_manual_shards_and_the_shard_lock(tmp_path, prose_corpus, tokenizer_dir):
    first = run(cfg_for(tmp_path, prose_corpus, tokenizer_dir, num_shards=2, shard_index=0))
    assert first.metrics["shards_done"] == 1 and not (tmp_path / "aug" / "COMPLETE").exists()
    cfg1 = cfg_for(tmp_path, prose_corpus, tokenizer_dir, num_shards=2, shard_index=1)
    with ShardLock(shard_paths(cfg1.out, 1, 2).lock):  # another writer holds shard 1
        with pytest.raises(RunDirError, match="another process"):
            run(cfg1)
    second = run(cfg1)
    assert second.metrics["shards_done"] == 2 and (tmp_path / "aug" / "COMPLETE").exists()
    assert second.metrics["chunks"] == len({r["id"] for r in all_records(cfg1.out)})
    assert run(cfg_for(tmp_path, prose_corpus, tokenizer_dir, num_shards=2)).cached


def test_parquet_shards(tmp_path, prose_corpus, tokenizer_dir):
    cfg = cfg_for(tmp_path, prose_corpus, tokenizer_dir, num_shards=2, format="parquet")
    m = run(cfg).metrics
    files = sorted(p.name for p in (Path(cfg.out) / "shards").iterdir() if p.suffix in (".jsonl", ".parquet"))
    assert files == ["shard-00000-of-00002.parquet", "shard-00001-of-00002.parquet"] and m["files"] == files
    recs = all_records(cfg.out)
    assert len(recs) == m["chunks"] and all("".join(s["text"] for s in r["segments"]) == r["chunk"] for r in recs)
    jsonl = cfg_for(tmp_path, prose_corpus, tokenizer_dir, num_shards=2, out=str(tmp_path / "j"))
    run(jsonl)
    assert sorted((r["id"], render_augmented(r)) for r in all_records(jsonl.out)) == sorted((r["id"], render_augmented(r)) for r in recs)


def test_synthetic_problems_are_annotated_by_synth(tmp_path, tokenizer_dir, monkeypatch):
    def annotate(problem: dict) -> dict:
        if problem["id"] == "p-crash":
            raise ValueError("bad graph")
        text = problem["problem"]
        segs = [{"text": text[:5], "thought": "a step"}, {"text": text[5:], "thought": None}]
        if problem["id"] == "p-bad":
            segs[1]["text"] += "!"
        return {
            "id": problem["id"],
            "source_id": problem["id"],
            "chunk": text,
            "domain": "synthetic",
            "segments": segs,
            "annotator": "synth",
            "status": "accepted",
        }

    monkeypatch.setattr(render, "annotate", annotate)  # the rule annotator hands synthetic problems to the world
    corpus = tmp_path / "synth.jsonl"
    rows = [{"id": f"p{i}", "problem": f"a={i}.b=a+1.?b", "graph": {"nodes": 2}} for i in range(3)]
    rows += [
        {"id": "p-bad", "problem": "x=1.?x", "graph": {}},
        {"id": "p-crash", "problem": "y", "graph": {}},
        {"id": "plain", "problem": "Just text. More text."},
    ]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(MidtrainError, match=r"1 of 6 chunks failed \(ValueError ×1\)"):  # a crash is a failure
        run(cfg_for(tmp_path, corpus, tokenizer_dir, text_field="problem"))
    recs = {r["source_id"]: r for r in all_records(tmp_path / "aug")}
    assert recs["p-crash"]["status"] == "failed" and recs["p-bad"]["status"] == "rejected"
    crashed = annotate
    monkeypatch.setattr(render, "annotate", lambda p: crashed({**p, "id": p["id"].replace("crash", "fixed")}))
    m = run(cfg_for(tmp_path, corpus, tokenizer_dir, text_field="problem")).metrics  # the re-run retries the crashed one
    assert m["chunks"] == 6 and m["accepted"] == 5 and m["rejected_by_reason"] == {"text_altered": 1} and m["failed"] == 0
    recs = {r["source_id"]: r for r in all_records(tmp_path / "aug")}
    assert recs["p1"]["annotator"] == "synth" and recs["p1"]["domain"] == "synthetic" and recs["p1"]["id"] == "p1#0000"
    assert recs["plain"]["annotator"] == "programmatic"


def test_input_and_config_errors_leave_no_directory(tmp_path, prose_corpus, tokenizer_dir):
    out = tmp_path / "aug"
    with pytest.raises(DataError):
        run(cfg_for(tmp_path, tmp_path / "missing.jsonl", tokenizer_dir))
    bad_prompt = tmp_path / "p.txt"
    bad_prompt.write_text("no placeholder here")
    with pytest.raises(ConfigError, match=r"\{text\}"):
        run(cfg_for(tmp_path, prose_corpus, tokenizer_dir, prompt=str(bad_prompt)))
    assert not out.exists()
    with pytest.raises(ConfigError, match="shard_index"):
        cfg_for(tmp_path, prose_corpus, tokenizer_dir, num_shards=2, shard_index=2)
    with pytest.raises(ConfigError, match="tokenizer"):
        AugmentConfig.from_dict({"input": ["x"], "out": "y"})
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "text": "x."}\n{"id": "a", "text": "y."}\n')
    with pytest.raises(DataError, match="duplicate document id"):
        run(cfg_for(tmp_path, dup, tokenizer_dir, out=str(tmp_path / "dup")))


def test_datatrove_local_executor_runs_the_same_shards(tmp_path, prose_corpus, tokenizer_dir):
    pytest.importorskip("datatrove")
    cfg = cfg_for(tmp_path, prose_corpus, tokenizer_dir, num_shards=2, executor="datatrove_local", num_workers=1)
    m = run(cfg).metrics
    assert m["shards_done"] == 2 and (tmp_path / "aug" / "COMPLETE").exists()
    assert sorted(p.name for p in (tmp_path / "aug" / "datatrove" / "completions").iterdir()) == ["00000", "00001"]
    inline = run(cfg_for(tmp_path, prose_corpus, tokenizer_dir, num_shards=2, out=str(tmp_path / "inline")))
    assert sorted(r["id"] for r in all_records(cfg.out)) == sorted(r["id"] for r in all_records(inline.out))


def test_cli_augment_split_tasks(tmp_path, prose_corpus, tokenizer_dir, capsys):
    aug, spl, tsk = tmp_path / "aug", tmp_path / "split", tmp_path / "tasks"
    assert (
        cli_main(
            [
                "augment",
                str(prose_corpus),
                "--out",
                str(aug),
                "--tokenizer",
                str(tokenizer_dir),
                "--max-chunk-tokens",
                "64",
                "--num-shards",
                "2",
                "--json",
            ]
        )
        == 0
    )
    n = json.loads(capsys.readouterr().out)["metrics"]["accepted"]
    assert cli_main(["augment", "split", str(aug), "--out", str(spl), "--rl-fraction", "0.5", "--json"]) == 0
    sm = json.loads(capsys.readouterr().out)["metrics"]
    assert sm["sft"] + sm["rl"] == n and sm["sft"] > 0 and sm["rl"] > 0
    assert (
        cli_main(["augment", "tasks", str(spl), "--out", str(tsk), "--tokenizer", str(tokenizer_dir), "--min-prefix-tokens", "4", "--json"])
        == 0
    )
    tm = json.loads(capsys.readouterr().out)["metrics"]
    assert 0 < tm["tasks"] <= sm["rl"]
    assert cli_main(["augment", "--out", str(tmp_path / "x"), "--tokenizer", str(tokenizer_dir)]) == 2  # no input


@pytest.mark.slow
def test_datatrove_local_executor_with_parallel_spawned_workers(tmp_path, prose_corpus, tokenizer_dir):
    pytest.importorskip("datatrove")
    cfg = cfg_for(tmp_path, prose_corpus, tokenizer_dir, num_shards=3, executor="datatrove_local", num_workers=2)
    m = run(cfg).metrics  # the shard step is pickled into two spawned processes
    assert m["shards_done"] == 3 and m["chunks"] == len({r["id"] for r in all_records(cfg.out)}) == len(expected_ids(cfg, tokenizer_dir))


def test_real_synth_problems_through_the_programmatic_annotator(tmp_path, tokenizer_dir):
    problems = generate_problems(6, seed=3, ops="2-4")
    corpus = tmp_path / "problems.jsonl"
    corpus.write_text("".join(json.dumps(p) + "\n" for p in problems))
    m = run(cfg_for(tmp_path, corpus, tokenizer_dir, text_field="problem")).metrics
    assert m["chunks"] == 6 and m["accepted"] == 6
    for r in all_records(tmp_path / "aug"):
        assert "".join(s["text"] for s in r["segments"]) == r["chunk"] and r["domain"] == "synthetic"
        assert strip_thoughts(render_augmented(r)) == r["chunk"] and r["id"].endswith("#0000")

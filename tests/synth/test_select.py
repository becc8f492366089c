"""``midtrain synth select``: problems kept by their measured pass rate, from a real ``eval score`` run."""

from __future__ import annotations

import json

import pytest

from midtrain.cli import main
from midtrain.data.jsonl import iter_jsonl, write_jsonl
from midtrain.errors import ConfigError, DataError
from midtrain.eval.score import ScoreConfig, score
from midtrain.synth.select import SelectConfig, keep, select

from .conftest import problems, rebuild, steps_of, wrong_answer

# verified samples (of 4) per pool problem: 0 and 4 are outside the edge, 3 of 4 is above max_rate 0.5
VERIFIED = [0, 1, 2, 3, 4, 1]


@pytest.fixture
def scored(tmp_path, quiet):
    """A pool of 6 problems and a finished `eval score` run with 4 samples each, VERIFIED[i] of them gold."""
    pool = [dict(p) for p in problems(ops="2-3", n=len(VERIFIED), seed=5, render="compact", modulus=10, distractors=False)]
    pool_path = tmp_path / "pool.jsonl"
    write_jsonl(pool_path, pool)
    comps = [
        {"id": p["id"], "sample": s, "completion": rebuild(p, steps_of(p)) if s < v else wrong_answer(p)}
        for p, v in zip(pool, VERIFIED, strict=True)
        for s in range(4)
    ]
    write_jsonl(tmp_path / "comps.jsonl", comps)
    run = tmp_path / "scored"
    score(ScoreConfig.from_dict(dict(synthetic=str(pool_path), completions=str(tmp_path / "comps.jsonl"), out=str(run))))
    return pool, pool_path, run


def test_keep_rule():
    assert keep(1, 8, 1, 0.5) and keep(4, 8, 1, 0.5)
    assert not keep(0, 8, 1, 0.5) and not keep(5, 8, 1, 0.5) and not keep(0, 0, 0, 1.0)
    assert keep(0, 8, 0, 0.5)  # min_verified 0: every problem the checkpoint does not mostly solve


def test_select_keeps_the_edge_in_pool_order(scored, tmp_path):
    pool, pool_path, run = scored
    res = select(SelectConfig(samples=str(run), out=str(tmp_path / "sel")))
    kept = list(iter_jsonl(tmp_path / "sel" / "problems.jsonl"))
    assert [r["id"] for r in kept] == [pool[i]["id"] for i in (1, 2, 5)]
    assert [r["measured"] for r in kept] == [{"verified": v, "samples": 4} for v in (1, 2, 1)]
    # the records are the pool's, unchanged but for `measured` (the reader adds its own `_line`, `_file`)
    assert [{k: v for k, v in r.items() if k != "measured" and not k.startswith("_")} for r in kept] == [pool[i] for i in (1, 2, 5)]
    assert all("_line" not in json.loads(line) for line in (tmp_path / "sel" / "problems.jsonl").read_text().splitlines())
    m = res.metrics
    assert m["pool"] == 6 and m["selected"] == 3 and m["samples_per_problem"] == 4
    assert m["verified_hist"] == {"0": 1, "1": 2, "2": 1, "3": 1, "4": 1}
    assert m["pool_verified_rate"] == round(sum(VERIFIED) / 24, 4) and m["selected_verified_rate"] == round(4 / 12, 4)
    # the problems file defaults to the one the run evaluated; giving it changes nothing
    again = select(SelectConfig(samples=str(run), problems=str(pool_path), out=str(tmp_path / "sel")))
    assert again.cached
    wider = select(SelectConfig(samples=str(run), max_rate=0.75, out=str(tmp_path / "wide")))
    assert wider.metrics["selected"] == 4


def test_bad_inputs_name_what_is_wrong(scored, tmp_path):
    pool, pool_path, run = scored
    with pytest.raises(DataError, match="no problem .* lower min_verified"):
        select(SelectConfig(samples=str(run), min_verified=4, max_rate=0.5, out=str(tmp_path / "none")))
    fewer = tmp_path / "fewer.jsonl"  # the run sampled problems this file does not hold
    write_jsonl(fewer, pool[:3])
    with pytest.raises(DataError, match=r"samples of 3 problems that are not in .*fewer.jsonl"):
        select(SelectConfig(samples=str(run), problems=str(fewer), out=str(tmp_path / "x")))
    more = tmp_path / "more.jsonl"  # ... or this file holds problems the run never sampled
    extra = problems(ops="4", n=1, seed=9, render="compact", modulus=10, distractors=False)[0]
    write_jsonl(more, [*pool, extra])
    with pytest.raises(DataError, match=f"1 of the 7 problems of .*more.jsonl have no samples \\(first: {extra['id']}\\)"):
        select(SelectConfig(samples=str(run), problems=str(more), out=str(tmp_path / "y")))
    samples = run / "samples.jsonl"
    rows = samples.read_text().splitlines()
    samples.write_text("\n".join([*rows, rows[0]]) + "\n")  # one sample twice: its problem's rate would be wrong
    with pytest.raises(DataError, match=f"{samples}:{len(rows) + 1}: sample 0 of '.*' occurs twice"):
        select(SelectConfig(samples=str(run), out=str(tmp_path / "w")))
    samples.write_text("\n".join(rows) + "\n")
    (run / "COMPLETE").unlink()
    with pytest.raises(DataError, match="not a finished `midtrain eval` run"):
        select(SelectConfig(samples=str(run), out=str(tmp_path / "z")))
    assert not any((tmp_path / d / "problems.jsonl").exists() for d in ("none", "x", "y", "w", "z"))


def test_the_pool_must_be_the_file_the_run_scored(scored, tmp_path):
    pool, pool_path, run = scored
    changed = tmp_path / "changed.jsonl"  # same ids, another answer: the counts belong to other problems
    write_jsonl(changed, [{**pool[0], "answer": str((int(pool[0]["answer"]) + 1) % 10)}, *pool[1:]])
    with pytest.raises(DataError, match=r"changed.jsonl: not the file .*scored evaluated \(its content hash differs"):
        select(SelectConfig(samples=str(run), problems=str(changed), out=str(tmp_path / "a")))
    pool_path.write_text(changed.read_text())  # the evaluated file itself edited after the run
    with pytest.raises(DataError, match=r"pool.jsonl: not the file .*scored evaluated"):
        select(SelectConfig(samples=str(run), out=str(tmp_path / "b")))
    with pytest.raises(DataError, match=r"key 'problems': file not found: .*absent.jsonl"):
        select(SelectConfig(samples=str(run), problems=str(tmp_path / "absent.jsonl"), out=str(tmp_path / "c")))
    assert not any((tmp_path / d).exists() for d in ("a", "b", "c"))


def test_a_relative_pool_path_outside_its_directory_says_so(tmp_path, monkeypatch, quiet):
    monkeypatch.chdir(tmp_path)  # the eval runs here with a relative path ...
    pool = [dict(p) for p in problems(ops="2-3", n=2, seed=5, render="compact", modulus=10, distractors=False)]
    write_jsonl(tmp_path / "pool.jsonl", pool)
    write_jsonl(tmp_path / "comps.jsonl", [{"id": p["id"], "sample": 0, "completion": rebuild(p, steps_of(p))} for p in pool])
    score(ScoreConfig.from_dict(dict(synthetic="pool.jsonl", completions="comps.jsonl", out="scored")))
    assert select(SelectConfig(samples="scored", max_rate=1.0, out="sel")).metrics["selected"] == 2
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # ... and select runs from another directory
    with pytest.raises(ConfigError, match=r"evaluated pool.jsonl, which does not exist from here .*relative to where the eval ran"):
        select(SelectConfig(samples=str(tmp_path / "scored"), out="sel"))
    again = select(SelectConfig(samples=str(tmp_path / "scored"), problems=str(tmp_path / "pool.jsonl"), max_rate=1.0, out="sel"))
    assert again.metrics["selected"] == 2


def test_cli(scored, tmp_path, capsys):
    _, _, run = scored
    assert main(["synth", "select", str(run), "--max-rate", "0.25", "--out", str(tmp_path / "c"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metrics"]["selected"] == 2  # max_rate 0.25 of 4 samples: only the problems with 1 verified
    assert main(["synth", "select", str(tmp_path / "nowhere"), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "not a finished" in err

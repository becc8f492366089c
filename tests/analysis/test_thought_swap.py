"""``midtrain analyze thought-swap`` (midtrain.analysis.thought_swap): the derangement, the pure scores and table on
hand values, the probe with fake scorers (one that reads the thought: a positive drop; one that ignores it: zero),
and the verb end to end on the nano model."""

from __future__ import annotations

import json
import math

import pytest
import torch

from midtrain.analysis import thought_swap as ts
from midtrain.cli import main


# -- pure functions ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 3, 5, 17, 64])
def test_the_derangement_is_a_permutation_without_a_fixed_point(n):
    for seed in range(6):
        perm = ts.derangement(n, seed)
        assert sorted(perm) == list(range(n))
        assert all(perm[i] != i for i in range(n)), (seed, perm)
        assert ts.derangement(n, seed) == perm  # fixed by the seed
    if n >= 5:
        assert len({tuple(ts.derangement(n, s)) for s in range(6)}) > 1  # and the seed matters
    with pytest.raises(ValueError):
        ts.derangement(1, 0)


def test_greedy_match_and_suffix_scores_by_hand():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.25, 0.25, 0.5]], [[0.1, 0.1, 0.8], [0.75, 0.125, 0.125]]]))  # [2, 2, 3]
    targets = torch.tensor([[0, 2], [0, 0]])
    mask = torch.tensor([[1, 1], [0, 1]])
    assert ts.greedy_match(logits, targets, mask).tolist() == [1.0, 1.0]  # row 1's unmasked miss does not count
    assert ts.greedy_match(logits, torch.tensor([[0, 1], [0, 0]]), mask).tolist() == [0.0, 1.0]  # 1 is not row 0's argmax
    table = ts.suffix_scores(logits, targets, mask)  # [2, 3]: logp, prob, exact
    want = [[(math.log(0.5) + math.log(0.5)) / 2, 0.5, 1.0], [math.log(0.75), 0.75, 1.0]]
    assert torch.allclose(table, torch.tensor(want), atol=1e-6)


def test_mean_se_and_the_swap_table_by_hand():
    assert ts.mean_se([1.0, 2.0, 3.0]) == {"mean": 2.0, "se": pytest.approx(1.0 / math.sqrt(3))}
    assert ts.mean_se([4.0]) == {"mean": 4.0, "se": None}
    table = ts.swap_table({"logp": [-1.0, -2.0, -3.0]}, {"logp": [-2.0, -2.0, -5.0]})
    assert table["logp"]["own"]["mean"] == -2.0 and table["logp"]["swapped"]["mean"] == -3.0
    assert table["logp"]["drop"] == {"mean": 1.0, "se": pytest.approx(math.sqrt(1.0 / 3))}  # drops 1, 0, 2: paired


# -- the probe with fake scorers ---------------------------------------------------------------------------------
CLOSE = 99
N = 6
PROMPTS = [[100 + i, 7] for i in range(N)]  # task i: prompt, its thought [i, </think>], its suffix [i, 50]
THOUGHTS = [[i, CLOSE] for i in range(N)]
REFS = [[i, 50] for i in range(N)]


def reads_the_thought(contexts, refs):
    """1 when the thought in the context (the token before </think>) names the suffix's first token, else 0."""
    hit = [float(c[c.index(CLOSE) - 1] == r[0]) for c, r in zip(contexts, refs)]
    return {m: list(hit) for m in ts.METRICS}


def ignores_the_thought(contexts, refs):
    """A score of the prompt and the suffix alone: the thought changes nothing."""
    values = [-((c[0] * 7 + r[0]) % 5) / 3 for c, r in zip(contexts, refs)]
    return {m: list(values) for m in ts.METRICS}


def test_a_scorer_that_reads_the_thought_drops_when_it_is_swapped():
    own, swapped = ts.probe(PROMPTS, THOUGHTS, REFS, reads_the_thought, ts.derangement(N, 3))
    assert own["logp"] == [1.0] * N and swapped["logp"] == [0.0] * N  # no task keeps its own thought
    drop = ts.swap_table(own, swapped)["logp"]["drop"]
    assert drop["mean"] == 1.0 and drop["se"] == 0.0


def test_a_scorer_that_ignores_the_thought_does_not_drop():
    own, swapped = ts.probe(PROMPTS, THOUGHTS, REFS, ignores_the_thought, ts.derangement(N, 3))
    assert own == swapped and len(set(own["logp"])) > 1  # (the scores vary over tasks; the drop does not)
    for row in ts.swap_table(own, swapped).values():
        assert row["drop"] == {"mean": 0.0, "se": 0.0}


def test_the_probe_swaps_whole_thoughts_after_each_own_prompt():
    seen: list[list[list[int]]] = []

    def record(contexts, refs):
        seen.append(contexts)
        return {m: [0.0] * len(contexts) for m in ts.METRICS}

    perm = ts.derangement(N, 0)
    ts.probe(PROMPTS, THOUGHTS, REFS, record, perm)
    assert seen[0] == [p + t for p, t in zip(PROMPTS, THOUGHTS)]
    assert seen[1] == [PROMPTS[i] + THOUGHTS[perm[i]] for i in range(N)]


# -- the verb on the nano model ----------------------------------------------------------------------------------
def _tasks(path, n: int = 6):
    recs = [{"prompt": f"<question>a={i}.?a</question><think>", "reference": f"<answer>{i}</answer>"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_thought_swap_end_to_end_on_the_nano_model(nano_model, tmp_path, capsys):
    data, out = _tasks(tmp_path / "tasks.jsonl"), tmp_path / "swap"
    args = ["analyze", "thought-swap", str(nano_model), str(data), "--max-thought-tokens", "4", "--batch-size", "4"]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "drop (own − swapped)" in printed and "logp" in printed
    res = json.loads((out / ts.THOUGHT_SWAP_JSON).read_text())
    assert res["n"] == 6 and 1 <= res["thought_tokens_mean"] <= 5 and 0.0 <= res["thoughts_closed"] <= 1.0
    for m, row in res["metrics"].items():
        assert row["drop"]["mean"] == pytest.approx(row["own"]["mean"] - row["swapped"]["mean"], abs=1e-6), m
    assert res["metrics"]["logp"]["own"]["mean"] < 0 and 0 < res["metrics"]["prob"]["own"]["mean"] < 1
    assert 0.0 <= res["metrics"]["exact"]["own"]["mean"] <= 1.0
    assert main([*args, "--out", str(out)]) == 0  # the same config: the cached run
    assert json.loads((out / ts.THOUGHT_SWAP_JSON).read_text()) == res


def test_greedy_thoughts_are_reproducible_and_one_task_is_refused(nano_model, tmp_path, capsys):
    from midtrain.models.init import load_model
    from midtrain.models.tokenizer import load_tokenizer

    cfg = ts.ThoughtSwapConfig(model=str(nano_model), data=str(_tasks(tmp_path / "t.jsonl")), temperature=0.0, max_thought_tokens=3)
    tok = load_tokenizer(nano_model)
    prompts, _ = ts.load_suffix_tasks(cfg, tok)
    model = load_model(nano_model).eval()
    with torch.inference_mode():
        first, second = ts.sample_thoughts(model, tok, prompts, cfg), ts.sample_thoughts(model, tok, prompts, cfg)
    assert first == second and all(t[-1] == tok.convert_tokens_to_ids("</think>") for t in first[0])
    assert main(["analyze", "thought-swap", str(nano_model), str(_tasks(tmp_path / "one.jsonl", 1))]) == 2
    assert "at least 2" in capsys.readouterr().err

"""The online curriculum's pure state: estimates, draws, retirement, deferral, generation, resume."""

from __future__ import annotations

import json
import random

import pytest

from midtrain.train.curriculum import (
    Curriculum,
    CurriculumSettings,
    beta_mean,
    gumbel_top_k,
    informative_probability,
)


def pool(n: int) -> dict[str, dict]:
    return {str(i): {"prompt": f"p{i}", "op": 6 + i % 3} for i in range(n)}


def test_informative_probability_by_hand():
    assert informative_probability(0.0, 8) == 0.0
    assert informative_probability(1.0, 8) == 0.0
    assert informative_probability(0.5, 2) == pytest.approx(0.5)  # HT, TH of HH HT TH TT
    assert informative_probability(0.25, 3) == pytest.approx(1 - 0.25**3 - 0.75**3)


def test_beta_mean_is_the_posterior_mean():
    assert beta_mean(0, 0) == 0.5
    assert beta_mean(3, 8) == pytest.approx(0.4)
    assert beta_mean(0, 8, prior_mean=0.1) == pytest.approx(0.2 / 10)  # the prior is worth two trials at its mean


def test_gumbel_top_k_never_draws_zero_weights_and_follows_weights():
    rng = random.Random(0)
    counts = [0, 0, 0]
    for _ in range(3000):
        (i,) = gumbel_top_k([1.0, 3.0, 0.0], 1, rng)
        counts[i] += 1
    assert counts[2] == 0
    assert 0.70 < counts[1] / 3000 < 0.80  # 3 / (1 + 3)
    assert sorted(gumbel_top_k([1, 1, 1, 0], 5, rng)) == [0, 1, 2]


def test_first_draw_is_fresh_and_unique_then_revisits_the_informative():
    cur = Curriculum(CurriculumSettings(group_size=8, revisit_share=0.5, seed=1), pool(40))
    first = cur.draw(8, step=0, round_=0, exclude=set())
    assert len(first) == len(set(first)) == 8
    # half solved by half the rollouts (informative), half by none
    cur.update([(k, 4 if i < 4 else 0, 8) for i, k in enumerate(first)], step=0)
    state = json.loads(json.dumps(cur.state_dict()))
    second = cur.draw(8, step=1, round_=0, exclude=set())
    assert len([k for k in second if k in first]) == 4  # revisit_share 0.5
    # the empirical-Bayes prior is the pool's rate so far, m = (16 + 1) / (64 + 2); a never-solved prompt is then
    # p̂ = 2m / 10 ≈ 0.05 (P_inf 0.35), a half-solved one ≈ 0.45 (P_inf 0.99): the informative ones dominate
    assert cur.prior_mean() == pytest.approx(17 / 66)
    assert cur.rate_of(cur.prompts[first[5]]) == pytest.approx(2 * 17 / 66 / 10)
    hits = 0
    for step in range(2, 400):
        c2 = Curriculum(CurriculumSettings(group_size=8, revisit_share=0.5, seed=step), pool(40))
        c2.load_state_dict(state)
        hits += sum(k in first[:4] for k in c2.draw(4, step, 0, set()) if k in first)
    assert 0.65 < hits / (398 * 2) < 0.9


def test_retire_after_consecutive_solved_groups_and_never_serve_again():
    cur = Curriculum(CurriculumSettings(retire_after=2, revisit_share=1.0, seed=0), pool(3))
    keys = cur.draw(3, 0, 0, set())
    cur.update([(keys[0], 8, 8), (keys[1], 3, 8), (keys[2], 3, 8)], 0)
    assert not cur.prompts[keys[0]].retired
    cur.update([(keys[0], 8, 8)], 1)
    assert cur.prompts[keys[0]].retired
    for step in range(2, 6):
        assert keys[0] not in cur.draw(3, step, 0, set())


def test_defer_waits_then_returns_with_lower_priority():
    s = CurriculumSettings(defer_after=1, defer_steps=5, revisit_share=1.0, max_reuse=100, seed=0)
    cur = Curriculum(s, pool(10))
    a, b = cur.draw(2, 0, 0, set())
    cur.update([(a, 0, 8), (b, 4, 8)], 0)
    st = cur.prompts[a]
    assert st.deferred == 1 and st.wait_until == 5
    for step in range(1, 5):
        drawn = cur.draw(2, step, 0, set())
        assert a not in drawn and b in drawn  # a waits; a fresh prompt fills its place
        cur.update([(k, 4, 8) for k in drawn if k != b], step)
    assert cur.weight(cur.prompts[a], 5, any_wait=False) == pytest.approx(0.25 * informative_probability(cur.rate_of(cur.prompts[a]), 8))
    cur.update([(a, 0, 8)], 5)
    assert cur.prompts[a].wait_until == 5 + 10  # the wait doubles


def test_a_dry_pool_serves_a_waiting_prompt_rather_than_nothing():
    cur = Curriculum(CurriculumSettings(defer_after=1, defer_steps=5, revisit_share=1.0, seed=0), pool(2))
    a, b = cur.draw(2, 0, 0, set())
    cur.update([(a, 0, 8), (b, 4, 8)], 0)
    assert sorted(cur.draw(2, 1, 0, set())) == sorted([a, b])


def test_max_reuse_and_exclude_bound_serving():
    cur = Curriculum(CurriculumSettings(max_reuse=2, revisit_share=1.0, seed=0), pool(1))
    (k,) = cur.draw(1, 0, 0, set())
    cur.update([(k, 4, 8)], 0)
    assert cur.draw(1, 1, 0, {k}) == []  # already served this step
    assert cur.draw(1, 1, 1, set()) == [k]
    cur.update([(k, 4, 8)], 1)
    assert cur.draw(1, 2, 0, set()) == []  # served twice: used up


def test_same_state_same_draws_after_a_json_round_trip():
    a = Curriculum(CurriculumSettings(seed=3), pool(50))
    for step in range(3):
        keys = a.draw(6, step, 0, set())
        a.update([(k, (i * 3) % 9, 8) for i, k in enumerate(keys)], step)
    b = Curriculum(CurriculumSettings(seed=3), pool(50))
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert a.draw(6, 3, 0, set()) == b.draw(6, 3, 0, set())


def fake_generator(calls: list):
    def make(op: int, n: int, seed: int) -> list[tuple[str, dict]]:
        calls.append((op, n, seed))
        return [(f"op{op}-s{seed}-{i}", {"prompt": f"q{op}-{seed}-{i}"}) for i in range(n)]

    return make


def test_generate_mode_moves_to_the_ops_inside_the_band():
    calls: list = []
    s = CurriculumSettings(revisit_share=0.0, band_min=0.05, band_max=0.7, seed=0)
    cur = Curriculum(s, {}, ops=[6, 7, 8], make_problems=fake_generator(calls))
    keys = cur.draw(30, 0, 0, set())
    assert len(keys) == 30 and len(cur.rows) == 30
    # op 6 always solved, op 8 never, op 7 half the time
    results = [(k, {6: 8, 7: 4, 8: 0}[cur.op_of[k]], 8) for k in keys]
    for step in range(4):
        cur.update(results, step)
    w = cur.op_weights()
    assert w[7] > 10 * w[6] and w[7] > 10 * w[8]
    drawn = [cur.op_of[k] for k in cur.draw(60, 5, 0, set())]
    assert drawn.count(7) > 50
    seeds = [seed for _, _, seed in calls]
    assert len(seeds) == len(set(seeds))  # every generator call draws new problems


def test_generate_mode_state_keeps_the_problems_in_play():
    calls: list = []
    cur = Curriculum(CurriculumSettings(seed=0, revisit_share=0.5), {}, ops=[6, 7], make_problems=fake_generator(calls))
    keys = cur.draw(4, 0, 0, set())
    cur.update([(k, 4, 8) for k in keys], 0)
    state = json.loads(json.dumps(cur.state_dict()))
    fresh = Curriculum(CurriculumSettings(seed=0, revisit_share=0.5), {}, ops=[6, 7], make_problems=fake_generator([]))
    fresh.load_state_dict(state)
    assert fresh.rows == cur.rows
    assert fresh.draw(4, 1, 0, set()) == cur.draw(4, 1, 0, set())


def test_a_prompt_not_served_keeps_its_estimate():
    """Regression: decaying every prompt every step pulled unrevisited never-solved prompts back to p̂ = 1/2, the
    most informative-looking value, so they crowded out the edge."""
    cur = Curriculum(CurriculumSettings(decay=0.5, seed=0), pool(4))
    a, b = cur.draw(2, 0, 0, set())
    cur.update([(a, 0, 8), (b, 4, 8)], 0)
    before = (cur.prompts[a].s, cur.prompts[a].n)
    for step in range(1, 6):
        cur.update([(b, 4, 8)], step)
    assert (cur.prompts[a].s, cur.prompts[a].n) == before == (0, 8)
    assert cur.weight(cur.prompts[a], 6, any_wait=False) < cur.weight(cur.prompts[b], 6, any_wait=False)
    cur.update([(a, 8, 8)], 6)  # new evidence: the old counts decay, the new ones count fully
    assert cur.prompts[a].n == pytest.approx(8 * 0.5 + 8) and cur.prompts[a].s == pytest.approx(8)

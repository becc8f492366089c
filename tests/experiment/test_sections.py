"""The report's sections (``midtrain.experiment.sections``): no repeated or constant columns in the synthetic tables,
per-context tables only for several contexts, the RL curves (probe accuracy and hacking when logged) apart from
the LM loss, runs grouped by stage across seeds."""

from __future__ import annotations

from pathlib import Path

from report_support import rl_log, synthetic_summary

from midtrain.experiment.document import Figure, Table
from midtrain.experiment.sections import group_of, grouped, synthetic_sections, synthetic_tables, training_sections
from midtrain.synth.summary import scale_ranges, summarize


def test_runs_group_by_stage_across_seeds():
    assert group_of("seed-1/eval_c") == ("eval_c", "seed-1") and group_of("eval_c") == ("eval_c", "")
    assert grouped([("seed-0/a", 1), ("seed-1/a", 2), ("seed-0/b", 3)]) == {"a": {"seed-0": 1, "seed-1": 2}, "b": {"seed-0": 3}}


def test_greedy_tables_have_one_pass_at_1_and_no_single_context_table(tmp_path):
    tables = synthetic_tables("eval_c", synthetic_summary((0.9, 0.2, 0.0))["synthetic"], tmp_path)
    assert [t.title for t in tables if isinstance(t, Table)] == ["eval_c: per op range"]  # one context, one mode
    t = tables[0].pruned()
    assert [h for h in t.header if "pass@" in h] == ["verified pass@1"]
    assert t.title == "eval_c: per op range (k: 1)" and "k" not in t.header
    assert not any(isinstance(f, Figure) for f in tables)  # one sample per problem: no pass@k curve


def test_sampled_evaluations_with_several_contexts_keep_them(tmp_path):
    probs = [{"id": f"p{i}", "op": 2 + i % 8, "context": ("zoo", "teachers")[i % 2], "mode": "forward"} for i in range(16)]
    rows = [{"id": p["id"], "sample": j, "verified": j < 2, "outcome_correct": j < 3, "process_acc": 0.5} for p in probs for j in range(4)]
    tables = synthetic_tables("eval", summarize(rows, probs, ranges=scale_ranges("tiny")), tmp_path)
    titles = [b.title if isinstance(b, Table) else b.caption for b in tables]
    assert titles == ["eval: per op range", "eval: per context", "eval: verified pass@k per op range"]
    assert tables[0].header[3:5] == ["verified pass@1", "verified pass@4"]
    assert isinstance(tables[-1], Figure) and not tables[-1].main  # the curves go under the details


def test_synthetic_section_draws_one_panel_figure_for_every_evaluation(tmp_path):
    synth = [
        (f"seed-{s}/{e}", synthetic_summary(acc, seed=s)["synthetic"])
        for e, acc in (("eval_a", (1, 0.1, 0)), ("eval_c", (1, 0.3, 0)))
        for s in (0, 1)
    ]
    (sec,) = synthetic_sections(synth, tmp_path)
    figures = [b for b in sec.blocks if isinstance(b, Figure) and b.main]
    assert [Path(f.path).name for f in figures] == ["synth_acc_vs_op.png"] and "id 2-5, edge 6-8, hard 9-12" in figures[0].caption
    assert sum(isinstance(b, Table) for b in sec.blocks) == 4  # one per run, in the details


def test_training_curves_split_rl_from_lm_and_read_the_probe(tmp_path):
    import json

    lm = [{"step": s, "loss": 1.0 / s} for s in range(1, 5)]
    rl = [json.loads(line) for line in rl_log(20, 0.1, probe=True).splitlines()]
    (sec,) = training_sections([("sft", lm), ("seed-0/rl_c", rl), ("seed-1/rl_c", rl)], tmp_path)
    names = [Path(b.path).name for b in sec.blocks if isinstance(b, Figure)]
    assert names == ["train_rl_curves.png", "train_loss.png"]
    (table,) = [b for b in sec.blocks if isinstance(b, Table)]
    pruned = table.pruned()
    rows = {r[0]: dict(zip(pruned.header, r)) for r in pruned.rows}
    assert rows["seed-0/rl_c"]["probe_verified last"] == 0.3 and rows["seed-0/rl_c"]["probe_hacking first"] == 0.075
    assert rows["sft"]["loss last"] == 0.25 and rows["sft"]["reward_mean first"] is None

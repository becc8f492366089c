"""`midtrain experiment run`: references, validation errors, caching/skipping, compute accounting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from midtrain.cli import main
from midtrain.errors import ConfigError
from midtrain.experiment.compute import compute_of
from midtrain.experiment.experiment import run
from midtrain.experiment.graph import ExperimentConfig, plan
from midtrain.experiment.refs import references, substitute
from midtrain.experiment.spec import ArmSpec, Step


def _exp(tmp_path: Path, stages: dict, arms: dict | None = None, **kw) -> ExperimentConfig:
    data = {"name": "t", "out": str(tmp_path / "out"), "seeds": [0], "stages": stages, "arms": arms or {}, **kw}
    return ExperimentConfig.from_dict(data)


GEN = {
    "verb": "synth generate",
    "per_seed": False,
    "args": {"ops": "2-3", "n": 6, "seed": 3, "render": "compact", "modulus": 10, "order": "dependency"},
}


def test_substitute_keeps_types_and_interpolates():
    look = {"seed": 3, "vars.n": 40, "a": "/x/a"}.__getitem__
    assert substitute("${seed}", look) == 3
    assert substitute({"k": ["${a}/f.jsonl", "${vars.n}"]}, look) == {"k": ["/x/a/f.jsonl", 40]}
    assert substitute("s${seed}-${vars.n}", look) == "s3-40"
    assert references({"x": ["${a}", {"y": "${b}/z"}], "n": 3}) == ["a", "b"]


def test_plan_resolves_outputs_and_dependency_order(tmp_path, nano_model):
    cfg = _exp(
        tmp_path,
        {
            "ev": {"verb": "eval", "args": {"model": "${base}", "synthetic": "${gen}", "ops": {"scale": "tiny"}, "seed": "${seed}"}},
            "gen": GEN,
            "base": {"path": str(nano_model)},
        },
        seeds=[0, 1],
    )
    steps = plan(cfg)
    names = [(s.name, s.seed) for s in steps]
    assert names.index(("gen", None)) < names.index(("ev", 0))  # dependencies first
    ev1 = next(s for s in steps if s.name == "ev" and s.seed == 1)
    assert ev1.out == tmp_path / "out" / "seed-1" / "ev"
    assert ev1.config.synthetic == str(tmp_path / "out" / "shared" / "gen.jsonl")
    assert ev1.config.seed == 1 and ev1.config.model == str(nano_model)


@pytest.mark.parametrize(
    "stages, arms, needle",
    [
        ({"x": {"verb": "pretrian", "args": {}}}, {}, "stages.x.verb"),
        ({"x": {"verb": "synth generate", "args": {"nn": 3}}}, {}, "stages.x.args.nn"),
        ({"x": {"verb": "synth generate", "args": {"n": "${nope}"}}}, {}, "unknown reference"),
        ({"x": {"verb": "synth generate", "args": {"n": "${vars.q}"}}}, {}, "unknown variable 'q'"),
        ({"x": {"verb": "synth generate", "args": {"out": "f.jsonl"}}}, {}, "stages.x.args.out"),
        ({"x": {"verb": "synth generate", "per_seed": False, "args": {"seed": "${seed}"}}}, {}, "per_seed: false"),
        (
            {
                "x": {"verb": "analyze weights", "args": {"checkpoints": ["${y}", "${y}"]}},
                "y": {"verb": "analyze weights", "args": {"checkpoints": ["${x}", "${x}"]}},
            },
            {},
            "dependency cycle",
        ),
        ({"x": GEN}, {"a": {"chain": ["missing"]}}, "arms.a.chain[0]"),
        ({"x": {"path": "p", "verb": "sft"}}, {}, "exactly one of 'verb' or 'path'"),
        ({"../../X": GEN}, {}, "key 'stages.../../X': a name must be"),  # names escaping out are refused
        ({"/abs/X": GEN}, {}, "key 'stages./abs/X'"),
        ({"a..b": GEN}, {}, "key 'stages.a..b'"),
        ({".hidden": GEN}, {}, "key 'stages..hidden'"),
        ({"x" * 65: GEN}, {}, "a name must be 1-64"),
        ({"x": GEN}, {"../arm": {"chain": ["x"]}}, "key 'arms.../arm'"),
    ],
)
def test_bad_experiments_fail_before_running_and_name_the_key(tmp_path, stages, arms, needle):
    with pytest.raises(ConfigError, match=None) as e:
        _exp(tmp_path, stages, arms)
    assert needle in str(e.value)
    assert not (tmp_path / "out").exists()


def test_cli_dry_run_and_error_exit(tmp_path, capsys):
    good = tmp_path / "e.yaml"
    good.write_text("# midtrain: experiment run\n" + yaml.safe_dump({"name": "t", "stages": {"gen": GEN}}))
    assert main(["experiment", "run", str(good), "--dry-run"]) == 0
    assert "gen:" in capsys.readouterr().out
    bad = tmp_path / "b.yaml"
    bad.write_text(yaml.safe_dump({"name": "t", "stages": {"gen": {**GEN, "args": {"bogus": 1}}}}))
    assert main(["experiment", "run", str(bad)]) == 2
    assert "stages.gen.args.bogus" in capsys.readouterr().err


def test_run_twice_skips_finished_stages(tmp_path, nano_model, capsys):
    stages = {
        "base": {"path": str(nano_model)},
        "gen": GEN,
        "diag": {"verb": "synth diagnose", "args": {"model": "${base}", "problems": ["${gen}"], "n_per_range": 2}},
    }
    cfg = _exp(tmp_path, stages, report=False)
    first = run(cfg)
    out = tmp_path / "out"
    journal = out / ".journal" / "diag@seed-0.json"
    assert journal.is_file() and (out / "seed-0" / "diag" / "diagnose.json").is_file()
    gen_file = out / "shared" / "gen.jsonl"
    assert len(gen_file.read_text().splitlines()) == 6
    stamp = (gen_file.stat().st_mtime_ns, journal.stat().st_mtime_ns)
    second = run(cfg)
    assert (gen_file.stat().st_mtime_ns, journal.stat().st_mtime_ns) == stamp  # nothing re-ran
    assert second.data["stages"]["0"]["diag"]["metrics"] == first.data["stages"]["0"]["diag"]["metrics"]
    exp = json.loads((out / "experiment.json").read_text())
    assert set(exp["stages"]["0"]) == {"base", "gen", "diag"}


def test_compute_is_split_into_mid_training_and_rl(tmp_path):
    recs = {
        "sft": {"stage": "sft", "verb": "sft", "metrics": {"tokens": 1000, "flops": 6e6}},
        "rlmt": {"stage": "rlmt", "verb": "rl", "metrics": {"tokens_generated": 300, "tokens_trained": 400, "flops": 2e6}},
        "rl": {"stage": "rl", "verb": "rl", "metrics": {"tokens_generated": 100, "tokens_trained": 200, "flops": 2e6}},
    }

    class Suffix:
        task = "suffix"

    class Answer:
        task = "answer"

    steps = {"rlmt": Step("rlmt", 0, "rl", tmp_path, Suffix(), []), "rl": Step("rl", 0, "rl", tmp_path, Answer(), [])}
    c = compute_of(ArmSpec(chain=["sft", "rlmt", "rl"]), recs, steps)
    assert c["mid_flops"] == 8e6 and c["rl_flops"] == 2e6 and c["beta"] == 0.8
    assert c["mid_tokens"] == 1700 and c["rl_tokens"] == 300 and c["tokens"] == 2000


def test_one_variable_can_be_overridden_from_the_command_line(tmp_path, capsys):
    path = tmp_path / "e.yaml"
    path.write_text(
        yaml.safe_dump({"name": "t", "vars": {"n": 6, "keep": 1}, "stages": {"gen": {**GEN, "args": {**GEN["args"], "n": "${vars.n}"}}}})
    )
    assert main(["experiment", "run", str(path), "vars.n=9", "--dry-run"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["vars"] == {"n": 9, "keep": 1}


def test_parallel_jobs_run_every_stage_once_in_dependency_order(tmp_path, nano_model):
    stages = {
        "base": {"path": str(nano_model)},
        "gen": GEN,
        "gen2": {**GEN, "args": {**GEN["args"], "seed": 4}},
        "d1": {"verb": "synth diagnose", "args": {"model": "${base}", "problems": ["${gen}"], "n_per_range": 2}},
        "d2": {"verb": "synth diagnose", "args": {"model": "${base}", "problems": ["${gen2}"], "n_per_range": 2}},
    }
    res = run(_exp(tmp_path, stages, report=False, jobs=2, seeds=[0, 1]))
    for seed in ("0", "1"):
        for d in ("d1", "d2"):
            rec = res.data["stages"][seed][d]
            assert Path(rec["out"], "diagnose.json").is_file() and rec["metrics"]["id/n"] == 2
    assert len(list((tmp_path / "out" / ".journal").glob("*.json"))) == 6  # 2 shared + 2 × 2 per seed


def test_report_opens_with_the_arms_table(tmp_path, nano_model, capsys):
    stages = {
        "base": {"path": str(nano_model)},
        "gen": GEN,
        "ev": {
            "verb": "eval",
            "args": {"model": "${base}", "synthetic": "${gen}", "ops": {"scale": "tiny"}, "max_new_tokens": 8, "seed": "${seed}"},
        },
    }
    res = run(_exp(tmp_path, stages, {"a": {"label": "base only", "eval": "ev"}}, base="base"))
    md = Path(res.report, "report.md").read_text()
    sections = [line for line in md.splitlines() if line.startswith("## ")]
    assert sections[0] == "## arms" and len(sections) > 1  # the arms first, then the runs' own sections
    assert "base only" in md and "id verified" in md
    assert "base only" in capsys.readouterr().out  # the console table
    assert res.data["arms"]["0"]["a"]["verified_acc"].keys() == {"id"}


def test_a_missing_path_stage_fails_before_anything_is_created(tmp_path):
    cfg = _exp(tmp_path, {"base": {"path": str(tmp_path / "missing")}, "gen": GEN})
    with pytest.raises(ConfigError, match="stages.base.path"):
        run(cfg)
    assert not (tmp_path / "out").exists()


def test_safe_stage_names_are_accepted(tmp_path):
    steps = plan(_exp(tmp_path, {"gen-1.v2_a": GEN, "9": GEN}, {"arm.1": {"chain": ["9"]}}))
    assert {s.out.name for s in steps} == {"gen-1.v2_a.jsonl", "9.jsonl"}


def test_arm_table_shows_benchmark_means_and_synthetic_ranges_over_seeds():
    from midtrain.experiment.experiment import arm_table

    def arm(label, bench, edge):
        ev = {"gsm8k.mean_at_k": bench, "macro_avg": bench}
        return {
            "label": label,
            "verified_acc": {"edge": edge} if edge is not None else {},
            "eval": ev,
            "compute": {"flops": 1e12, "beta": 0.5},
        }

    summary = {
        "arms": {"0": {"a": arm("A", 0.25, 0.5), "b": arm("B", 0.0, None)}, "1": {"a": arm("A", 0.75, 0.7), "b": arm("B", 0.0, None)}}
    }
    head, rows = arm_table(summary)
    assert head == ["arm", "edge verified", "gsm8k mean@k", "train FLOPs", "β (mid share)"]
    assert rows[0] == ["A", "0.600 ± 0.100", "0.500 ± 0.250", "1e+12", "0.50"]
    assert rows[1] == ["B", "–", "0.000 ± 0.000", "1e+12", "0.50"]

"""Every shipped experiment (configs/experiments/*.yaml, configs/demo.yaml, configs/demo-base.yaml) passes `experiment run --dry-run`.

The dry run resolves every `${...}` reference and parses every stage's args into its verb's typed config, so a
wrong key, an unknown stage or variable, or a bad arm fails here instead of hours into a run. Nothing is run.
"""

from pathlib import Path

import pytest
import yaml

from midtrain.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
EXPERIMENTS = sorted((CONFIGS / "experiments").glob("*.yaml")) + [CONFIGS / "demo.yaml", CONFIGS / "demo-base.yaml"]


def _id(path: Path) -> str:
    return str(path.relative_to(CONFIGS))


def test_the_experiment_configs_are_found():
    names = {p.name for p in EXPERIMENTS}
    for expected in (
        "demo.yaml",
        "interplay-edge-of-competence.yaml",
        "interplay-context-exposure.yaml",
        "interplay-compute-split.yaml",
        "interplay-process-reward.yaml",
        "prism-mixture.yaml",
        "rl-measured-edge.yaml",
        "thinking-midtraining-llama3-8b.yaml",
    ):
        assert expected in names


@pytest.mark.parametrize("path", EXPERIMENTS, ids=_id)
def test_experiment_dry_run_resolves_every_stage(path, capsys):
    source = yaml.safe_load(path.read_text())
    assert path.read_text().splitlines()[0] == "# midtrain: experiment run"

    rc = main(["experiment", "run", str(path), "--dry-run"])
    out, err = capsys.readouterr()
    assert rc == 0, err

    printed = yaml.safe_load(out)
    assert set(printed["stages"]) == set(source["stages"])
    for name in source["stages"]:
        assert f"  {name}:" in out, f"stage {name!r} missing from the dry-run output"
    assert set(printed["arms"]) == set(source.get("arms") or {})


@pytest.mark.parametrize("path", EXPERIMENTS, ids=_id)
def test_broken_arm_reference_fails_the_dry_run(path, tmp_path, capsys):
    data = yaml.safe_load(path.read_text())  # anchors and merge keys expanded
    arms = data.get("arms") or {}
    if arms:
        arm = next(iter(arms))
        arms[arm]["chain"] = [*arms[arm].get("chain", []), "no_such_stage"]
    else:
        arm = "broken"
        arms[arm] = {"chain": ["no_such_stage"]}
    data["arms"] = arms
    copy = tmp_path / path.name
    copy.write_text("# midtrain: experiment run\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))

    rc = main(["experiment", "run", str(copy), "--dry-run"])
    out, err = capsys.readouterr()
    assert rc == 2
    assert f"arms.{arm}.chain" in err and "no_such_stage" in err, err
    assert out == ""


def test_thinking_recipe_validates_the_thought_count_its_prompt_asks_for():
    """DESIGN §1.1 (default): 3-6 thoughts per chunk; the shipped `augment` prompt asks for that range, so the
    recipe's augment stage rejects answers outside it (the global defaults stay lenient for the programmatic annotator)."""
    import re

    from midtrain.llm.prompts import load_prompt

    aug = yaml.safe_load((CONFIGS / "experiments" / "thinking-midtraining-llama3-8b.yaml").read_text())["stages"]["aug"]["args"]
    asked = re.search(r"Insert (\d+) to (\d+) thoughts", load_prompt(aug["prompt"], "prompt"))
    assert asked is not None and (aug["min_thoughts"], aug["max_thoughts"]) == (3, 6) == tuple(map(int, asked.groups()))

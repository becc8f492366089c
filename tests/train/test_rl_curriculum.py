"""The online curriculum through ``midtrain rl``: refilled informative steps, its log, its state in checkpoints,
the same prompts after a kill, and generated problems that never include a held-out one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from midtrain.errors import ConfigError
from midtrain.train.rl import CURRICULUM_FILE, run
from midtrain.train.rl_config import RL_OPTIM, CurriculumConfig, GenerateConfig, LossConfig, RLConfig, RolloutConfig

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

WORLD = {"render": "compact", "modulus": 10, "order": "dependency", "distractors": False, "const_max": 9, "max_multiplier": 3}


def cfg_for(base: dict[str, Path], out: Path, **kw) -> RLConfig:
    fields = dict(
        model=str(base["base"]),
        data=[str(base["problems"])],
        reward="synthetic_strict",
        out=str(out),
        max_steps=3,
        per_device_batch_size=16,  # 4 groups of G = 4 per step
        rollout=RolloutConfig(num_generations=4, max_completion_length=24),
        loss=LossConfig(credit="first_error"),
        optim=RL_OPTIM.replace(lr=1e-4),
        curriculum=CurriculumConfig(mode="pool", max_generation_factor=2.0, max_reuse=8),
        save_every_steps=1,
        precision="fp32",
        seed=0,
    )
    fields.update(kw)
    return RLConfig(**fields)


def log_of(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]


def test_pool_curriculum_refills_logs_and_checkpoints_its_state(synthetic_base, tmp_path):
    out = tmp_path / "pool"
    run(cfg_for(synthetic_base, out))
    log = log_of(out)
    assert [r["step"] for r in log] == [1, 2, 3]
    for r in log:
        assert 1.0 <= r["overgen"] <= 2.0  # never more than the cap
        assert r["prompts_seen"] >= 1 and 0.0 < r["seen_pass_rate"] < 1.0
    state = json.loads((out / "checkpoints" / "checkpoint-3" / CURRICULUM_FILE).read_text())
    served = sum(v[2] for v in state["prompts"].values())
    counters = json.loads((out / "checkpoints" / "checkpoint-3" / "midtrain_counters.json").read_text())
    # every generated group was drawn from the curriculum, and each step asked for 4
    assert served == counters["groups_generated"] and counters["groups_requested"] == 12
    assert counters["groups_generated"] >= 12 and counters["refill_rounds"] >= 3


def test_a_killed_curriculum_run_resumes_to_the_same_prompts(synthetic_base, tmp_path, kill_rl_at):
    whole = tmp_path / "whole"
    run(cfg_for(synthetic_base, whole))
    cut = tmp_path / "cut"
    kill_rl_at(2)
    with pytest.raises(KeyboardInterrupt):
        run(cfg_for(synthetic_base, cut))
    kill_rl_at(None)
    run(cfg_for(synthetic_base, cut))
    a = json.loads((whole / "checkpoints" / "checkpoint-3" / CURRICULUM_FILE).read_text())
    b = json.loads((cut / "checkpoints" / "checkpoint-3" / CURRICULUM_FILE).read_text())
    assert a == b
    assert [r["step"] for r in log_of(cut)] == [1, 2, 3]


def test_generated_problems_avoid_the_held_out_set(synthetic_base, tmp_path):
    from midtrain.data.jsonl import write_jsonl
    from midtrain.synth.generate import SynthConfig, generate_problems

    held = generate_problems(SynthConfig(ops="2", n=40, seed=777, **WORLD))
    write_jsonl(tmp_path / "held.jsonl", held)
    out = tmp_path / "gen"
    gen = GenerateConfig(ops="2", world=WORLD, exclude=[str(tmp_path / "held.jsonl")])
    run(cfg_for(synthetic_base, out, data=[], curriculum=CurriculumConfig(mode="generate", max_reuse=2, generate=gen)))
    state = json.loads((out / "checkpoints" / "checkpoint-3" / CURRICULUM_FILE).read_text())
    assert state["stats"]["generated"] >= 12
    assert not set(state["prompts"]) & {p["id"] for p in held}
    assert set(state["op_of"].values()) <= {2}


def test_curriculum_keys_are_checked(synthetic_base, tmp_path):
    with pytest.raises(ConfigError, match="curriculum.generate.world.rendr"):
        RLConfig.from_dict(
            {
                "model": "m",
                "out": "o",
                "reward": "synthetic_strict",
                "curriculum": {"mode": "generate", "generate": {"world": {"rendr": "x"}}},
            }
        )
    with pytest.raises(ConfigError, match="key 'curriculum.mode': generate draws synthetic problems"):
        RLConfig.from_dict({"model": "m", "out": "o", "reward": "math", "curriculum": {"mode": "generate"}})
    with pytest.raises(ConfigError, match="key 'data'"):
        RLConfig.from_dict({"model": "m", "out": "o"})
    with pytest.raises(ConfigError, match="loss.baseline"):
        RLConfig.from_dict({"model": "m", "data": ["d"], "out": "o", "loss": {"baseline": "leave_one_out", "scale_rewards": "group"}})

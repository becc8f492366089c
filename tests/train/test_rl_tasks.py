"""midtrain.train.rl_tasks: task records → prompt rows (template, BOS, option lists, length limit, reward columns)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from midtrain.errors import DataError
from midtrain.train import rl_tasks
from midtrain.train.rl_config import PromptsConfig, RLConfig, RolloutConfig


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _cfg(data: Path, **kw) -> RLConfig:
    base = dict(model="m", data=[str(data)], out="o", per_device_batch_size=8, rollout=RolloutConfig(num_generations=4))
    return RLConfig(**{**base, **kw})


def test_prompt_template_and_bos(nano_model, tmp_path):
    from midtrain.models.tokenizer import load_tokenizer

    tok = load_tokenizer(nano_model)
    data = _write(
        tmp_path / "g.jsonl", [{"problem": "What is 2+2?", "answer": 4, "level": 1}, {"problem": "1+1?", "answer": "2", "level": 2}]
    )
    cfg = _cfg(data, prompts=PromptsConfig(field="problem", template="thinking"))
    rows, stats = rl_tasks.load_tasks(cfg, tok, 1024)
    assert rows[0]["prompt"].startswith("Solve the problem.") and rows[0]["prompt"].endswith("What is 2+2?\n\n<think>")
    ids = tok(rows[0]["prompt"])["input_ids"]  # as TRL tokenizes prompts: the tokenizer's post-processor adds the BOS
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert rows[0]["answer"] == "4" and stats["prompts"] == 2
    cfg2 = cfg.replace(**{"prompts.template": "[L{level}] {prompt} {missing} \\frac{1}{2}", "prompts.add_bos": False})
    rows2, _ = rl_tasks.load_tasks(cfg2, tok, 1024)
    assert rows2[1]["prompt"] == "[L2] 1+1? {missing} \\frac{1}{2}"  # LaTeX braces and unknown names are left alone
    mc = _write(tmp_path / "mc.jsonl", [{"prompt": "Q?", "choices": ["yes", "no"], "answer": "A"}] * 2)
    rows4, _ = rl_tasks.load_tasks(_cfg(mc, reward="choice", prompts=PromptsConfig(template="{prompt}\n{choices}")), tok, 1024)
    assert rows4[0]["prompt"].endswith("Q?\nA. yes\nB. no") and rows4[0]["choices"] == ["yes", "no"]
    short = len(tok(rows[1]["prompt"])["input_ids"])
    rows3, stats3 = rl_tasks.load_tasks(cfg.replace(**{"prompts.max_tokens": short, "per_device_batch_size": 4}), tok, 1024)
    assert stats3["prompts_dropped_too_long"] == 1 and rows3 == [rows[1]]


def test_max_examples_and_the_suffix_columns(nano_model, tmp_path):
    from midtrain.models.tokenizer import load_tokenizer

    tok = load_tokenizer(nano_model)
    recs = [{"prompt": f"p{i}<think>", "reference": f"r{i}", "meta": {"prefix": f"p{i}"}} for i in range(6)]
    data = _write(tmp_path / "s.jsonl", recs)
    rows, stats = rl_tasks.load_tasks(
        _cfg(data, task="suffix", reward="info_gain", prompts=PromptsConfig(max_examples=3, add_bos=False)), tok, 1024
    )
    assert [r["answer"] for r in rows] == ["r0", "r1", "r2"] and stats["prompts"] == 3
    assert rows[0]["prompt"] == "p0<think>" and rows[0]["nothink"] == "p0"  # the baseline sees the prefix, no thought


def test_a_prompt_that_leaves_no_room_is_an_error_naming_the_budget(nano_model, tmp_path):
    from midtrain.errors import ConfigError
    from midtrain.models.tokenizer import load_tokenizer

    tok = load_tokenizer(nano_model)
    data = _write(tmp_path / "a.jsonl", [{"prompt": "x", "answer": "1"}] * 2)
    with pytest.raises(ConfigError, match=r"key 'rollout\.max_completion_length': 64 leaves no room"):
        rl_tasks.load_tasks(
            _cfg(data, per_device_batch_size=4, rollout=RolloutConfig(num_generations=4, max_completion_length=64)), tok, 64
        )
    bad = _write(tmp_path / "b.jsonl", [{"prompt": "x", "answer": True}])
    with pytest.raises(DataError, match=r"b\.jsonl:1: 'answer' must be a non-empty string or number"):
        rl_tasks.load_tasks(_cfg(bad), tok, 1024)


def test_step_tasks_get_their_columns_and_refuse_the_rewards_scored_after_a_thought():
    from midtrain.errors import ConfigError
    from midtrain.synth.generate import SynthConfig, generate_problems
    from midtrain.synth.render import split_steps
    from midtrain.synth.tasks import step_task

    (p,) = generate_problems(SynthConfig(ops="5", n=1, render="compact", modulus=10, order="dependency", distractors=False, seed=2))
    task = step_task(p, split_steps(p["solution"], "compact"), 1, 2)
    ordinary = {"prompt": "p<think>", "reference": "r"}
    row = rl_tasks.task_row(_cfg(Path("t.jsonl"), task="suffix", reward="exact_match"), task, "t.jsonl", "")
    assert row["steps_k"] == 2 and row["answer"] == task["reference"] and row["prompt"] == task["prompt"]
    assert rl_tasks.task_row(_cfg(Path("t.jsonl"), task="suffix"), ordinary, "t.jsonl", "")["steps_k"] == 0  # judge
    row = rl_tasks.task_row(_cfg(Path("t.jsonl"), task="suffix", reward="synthetic_steps"), task, "t.jsonl", "")
    assert json.loads(row["record"])["meta"]["j"] == 1 and "steps_k" not in row
    with pytest.raises(DataError, match="t.jsonl:\\?: reward synthetic_steps needs step task records"):
        rl_tasks.task_row(_cfg(Path("t.jsonl"), task="suffix", reward="synthetic_steps"), dict(p), "t.jsonl", "")
    for dense in ("info_gain", "ref_prob"):
        with pytest.raises(ConfigError, match=f"key 'reward': {dense} scores the suffix after the thought"):
            rl_tasks.task_row(_cfg(Path("t.jsonl"), task="suffix", reward=dense), task, "t.jsonl", "")

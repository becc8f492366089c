"""midtrain.train.rl_config: the sections of ``midtrain rl``'s config, its cross-key rules, the old flat keys (a
one-line error naming the new key in every form) and the shipped RL configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from midtrain.cli import main
from midtrain.config import load_config
from midtrain.errors import ConfigError
from midtrain.train.rl_config import RLConfig

OK = dict(model="m", data=["d.jsonl"], out="o")


def test_config_rules():
    with pytest.raises(ConfigError, match=r"key 'per_device_batch_size': .* multiple of rollout\.num_generations \(4\)"):
        RLConfig.from_dict({**OK, "per_device_batch_size": 6, "rollout": {"num_generations": 4}})
    with pytest.raises(ConfigError, match="task 'suffix' cannot use reward 'math'"):
        RLConfig.from_dict({**OK, "task": "suffix", "reward": "math"})
    with pytest.raises(ConfigError, match=r"^key 'prompts\.template': must contain the \{prompt\} placeholder$"):
        RLConfig.from_dict({**OK, "prompts": {"template": "no placeholder"}})
    with pytest.raises(ConfigError, match=r"key 'vllm\.mode'.*one of 'off', 'colocate', 'server'"):
        RLConfig.from_dict({**OK, "vllm": {"mode": "yes"}})
    with pytest.raises(ConfigError, match=r"key 'vllm\.server_url': expected an http"):
        RLConfig.from_dict({**OK, "vllm": {"server_url": "10.0.0.2:8000"}})
    with pytest.raises(ConfigError, match=r"key 'loss\.credit': first_error needs .* got 'math'"):
        RLConfig.from_dict({**OK, "loss": {"credit": "first_error"}})
    assert RLConfig.from_dict({**OK, "loss": {"credit": "first_error"}, "reward": "synthetic_strict"}).loss.credit == "first_error"
    with pytest.raises(ConfigError, match=r"key 'vllm\.mode': reward info_gain"):
        RLConfig.from_dict({**OK, "task": "suffix", "reward": "info_gain", "vllm": {"mode": "colocate"}})
    with pytest.raises(ConfigError, match=r"key 'judge\.prompt'"):
        RLConfig.from_dict({**OK, "task": "suffix", "judge": {"kind": "llm", "prompt": "missing.txt"}})
    cfg = RLConfig.from_dict({**OK, "task": "suffix"})
    assert cfg.resolved_reward() == "judge" and cfg.resolved_answer_field() == "reference"
    assert cfg.judge.kind == "token_f1" and cfg.judge.max_error_frac == 1.0  # RL's default judge, not `midtrain judge`'s llm


def test_a_python_built_config_checks_its_sections_with_their_keys():
    from midtrain.train.rl_config import PromptsConfig

    with pytest.raises(ConfigError, match=r"^key 'prompts\.template'"):
        RLConfig(**OK, prompts=PromptsConfig(template="x")).check()


def test_partial_sections_keep_the_defaults_and_the_help_lists_them():
    cfg = RLConfig.from_dict({**OK, "judge": {"threshold": 0.3}, "loss": {"beta": 0.1}})
    assert (cfg.judge.kind, cfg.judge.threshold, cfg.loss.type, cfg.loss.beta) == ("token_f1", 0.3, "dr_grpo", 0.1)
    docs = RLConfig.field_docs()
    assert docs["judge.kind"][2] == "token_f1" and docs["rollout.num_generations"][2] == 8 and docs["loss.credit"][2] == "sequence"
    top = [k for k in RLConfig.__dataclass_fields__ if k != "RENAMED"]
    assert len(top) <= 26 and {"prompts", "judge", "rollout", "vllm", "loss", "curriculum", "probe", "early_stop", "optim"} <= set(top)


@pytest.mark.parametrize("old, new", sorted(RLConfig.RENAMED.items()))
def test_every_old_flat_key_names_its_new_place(old, new, tmp_path):
    value = {"vllm": "colocate", "judge": "llm", "judge_backend": {"backend": "openai"}}.get(old, 1)
    with pytest.raises(ConfigError, match=rf"^key '{old}' is now '{new}'$"):
        RLConfig.from_dict({**OK, old: value})
    path = tmp_path / "rl.yaml"
    path.write_text(f"model: m\ndata: [d]\nout: o\n{old}: {value if not isinstance(value, dict) else '{backend: openai}'}\n")
    with pytest.raises(ConfigError, match=rf"^key '{old}' in .*rl\.yaml is now '{new}'$"):
        load_config(RLConfig, path)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--num-generations", "4"], "key 'num_generations' is now 'rollout.num_generations'"),
        (["--vllm", "colocate"], "key 'vllm' is now 'vllm.mode'"),
        (["--judge", "llm"], "key 'judge' is now 'judge.kind'"),
        (["judge_backend.timeout_s=5"], "key 'judge_backend.timeout_s' is now 'judge.backend.timeout_s'"),
        (["loss_type=grpo"], "key 'loss_type' is now 'loss.type'"),
    ],
)
def test_old_keys_on_the_command_line_are_one_line_and_exit_2(args, message, capsys):
    assert main(["rl", "--model", "m", "--data", "d", "--out", "o", *args, "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().count("\n") == 0 and message in captured.err and captured.out == ""


def test_new_keys_work_through_the_cli(capsys):
    argv = ["rl", "--model", "m", "--data", "d", "--out", "o", "--rollout.num-generations", "4", "loss.credit=first_error"]
    assert main([*argv, "--reward", "synthetic_strict", "--judge.kind", "exact", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "num_generations: 4" in out and "credit: first_error" in out and "kind: exact" in out


def test_shipped_rl_configs_validate():
    root = Path(__file__).resolve().parents[2] / "configs" / "rl"
    paths = sorted(root.glob("*.yaml"))
    assert paths, "configs/rl/*.yaml missing"
    for path in paths:
        assert path.read_text().splitlines()[0] == "# midtrain: rl", path
        assert load_config(RLConfig, path).to_dict()

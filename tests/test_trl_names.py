"""TRL's names of midtrain's keys in unknown-key errors: YAML, dotted overrides and flags, for every stage."""

from __future__ import annotations

import pytest

from midtrain.cli import main
from midtrain.config import load_config
from midtrain.errors import ConfigError
from midtrain.eval.evaluate import EvalConfig
from midtrain.stages import STAGES
from midtrain.train.engine import OptimConfig
from midtrain.train.pretrain import PretrainConfig
from midtrain.trl_names import LM_EVAL_NAMES, TRL_NAMES, dotted_keys, trl_hint


@pytest.mark.parametrize(
    "key, cls, hint",
    [
        ("learning_rate", PretrainConfig, "'learning_rate' is TRL's name: midtrain calls it 'optim.lr'"),
        ("optim.learning_rate", PretrainConfig, "'learning_rate' is TRL's name: midtrain calls it 'optim.lr'"),
        ("optim.learning_rate", OptimConfig, "'learning_rate' is TRL's name: midtrain calls it 'optim.lr'"),  # built in the section
        ("stages.a.args.learning_rate", PretrainConfig, "midtrain calls it 'stages.a.args.optim.lr'"),  # in an experiment
        ("per_device_train_batch_size", PretrainConfig, "midtrain calls it 'batch_size'"),
        ("gradient_accumulation_steps", PretrainConfig, "midtrain calls it 'optim.grad_accum_steps'"),
        ("warmup_ratio", PretrainConfig, "midtrain calls it 'optim.warmup_steps' (a number of steps, not a ratio)"),
        ("weight_decay", PretrainConfig, "midtrain has it as 'optim.weight_decay'"),  # the same name, in a section
        ("num_train_epochs", PretrainConfig, "midtrain calls it 'max_steps' (optimizer steps, not epochs)"),
        ("max_seq_length", PretrainConfig, "midtrain calls it 'seq_len'"),
        ("dataset_text_field", PretrainConfig, "midtrain calls it 'corpus.text_field'"),
        ("output_dir", PretrainConfig, "midtrain calls it 'out'"),
        ("logging_steps", PretrainConfig, "midtrain calls it 'log_every_steps'"),
        ("save_total_limit", PretrainConfig, "midtrain calls it 'keep_checkpoints'"),
        ("resume_from_checkpoint", PretrainConfig, "midtrain resumes by itself"),
        ("num_fewshot", EvalConfig, "'num_fewshot' is lm-eval's name: midtrain calls it 'n_shots'"),
        ("per_device_eval_batch_size", EvalConfig, "midtrain calls it 'batch_size'"),
    ],
)
def test_hints_name_the_stages_key(key, cls, hint):
    assert hint in (trl_hint(key, cls) or "")


def test_no_hint_for_names_trl_does_not_have_or_the_stage_lacks():
    assert trl_hint("learning_rat", PretrainConfig) is None  # a typo: the closest spelling is the better hint
    assert trl_hint("num_generations", PretrainConfig) is None  # an RL knob: pretraining has no counterpart


def test_every_entry_names_a_key_some_stage_has():
    """The table cannot go stale: each candidate list reaches a key of at least one verb's config."""
    keys = [k for s in STAGES for k in dotted_keys(s.resolve()[1])]
    for name, (candidates, note) in {**TRL_NAMES, **LM_EVAL_NAMES}.items():
        if not candidates:
            assert note, name  # a name without a counterpart says why
            continue
        assert any(k == c or k.endswith("." + c) for c in candidates for k in keys), f"{name}: none of {candidates} is a key"


def test_yaml_and_override_errors_carry_the_hint(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("learning_rate: 3.0e-4\n")
    with pytest.raises(
        ConfigError, match=r"unknown key 'learning_rate' in .*c\.yaml \('learning_rate' is TRL's name: midtrain calls it 'optim\.lr'\)"
    ):
        load_config(PretrainConfig, cfg)
    cfg.write_text("optim:\n  learning_rate: 3.0e-4\n")
    with pytest.raises(ConfigError, match=r"unknown key 'optim\.learning_rate' .*midtrain calls it 'optim\.lr'"):
        load_config(PretrainConfig, cfg)
    with pytest.raises(ConfigError, match=r"unknown key 'num_train_epochs' \(.*'max_steps'"):
        load_config(PretrainConfig, None, ["num_train_epochs=3"])


@pytest.mark.parametrize(
    "argv, needle",
    [
        (
            ["pretrain", "--learning_rate", "3e-4"],
            "unknown flag '--learning_rate' ('learning_rate' is TRL's name: midtrain calls it 'optim.lr')",
        ),
        (["sft", "--per-device-train-batch-size=4"], "unknown flag '--per-device-train-batch-size' ("),
        (["pretrain", "learning_rate=3e-4"], "unknown key 'learning_rate' ('learning_rate' is TRL's name"),
        (["eval", "m", "--num_fewshot", "5"], "midtrain calls it 'n_shots'"),
        (["pretrain", "--max-step", "3"], "unrecognized arguments: --max-step 3"),  # not a TRL name: argparse's error
    ],
)
def test_cli_errors_name_midtrains_key(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1

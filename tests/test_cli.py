import json

import pytest

from midtrain.cli import main
from midtrain.stages import STAGES


def test_help_lists_verbs(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in ("pretrain", "sft", "rl", "augment", "eval", "synth generate", "tokenizer train", "demo"):
        assert verb in out


def test_every_verb_resolves_to_a_typed_run():
    from midtrain.config import Config

    for s in STAGES:
        fn, cls = s.resolve()
        assert issubclass(cls, Config) and callable(fn)


def test_verb_help_shows_field_docs(capsys):
    with pytest.raises(SystemExit) as e:
        main(["model", "init", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--preset" in out and "Size preset" in out and "--max-position-embeddings" in out


def test_dry_run_prints_resolved_config(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("preset: tiny\n")
    assert main(["model", "init", "--config", str(cfg), "--tokenizer", "t", "--out", "o", "seed=7", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "preset: tiny" in out and "seed: 7" in out and "tokenizer: t" in out


def test_unknown_override_is_one_line_exit_2(capsys):
    assert main(["model", "init", "--tokenizer", "t", "--out", "o", "sed=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown key 'sed'" in err and "did you mean 'seed'" in err


def test_unknown_verb(capsys):
    assert main(["pretrian"]) == 2
    assert "did you mean 'pretrain'" in capsys.readouterr().err


def test_group_without_subverb(capsys):
    assert main(["tokenizer"]) == 2
    assert "tokenizer train" in capsys.readouterr().err


def test_json_output(capsys, tmp_path, corpus):
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--corpus", str(corpus), "--vocab-size", "280", "--out", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["stage"] == "tokenizer" and res["metrics"]["vocab_size"] >= 280

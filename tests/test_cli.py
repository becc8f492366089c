import errno
import json
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest

from midtrain.cli import main
from midtrain.stages import STAGES
from midtrain.train.pretrain import PretrainConfig


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


# -- the CLI boundary: hostile input and a hostile machine are one line and exit 2 ----------------------------------
def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: "), err
    return err


@pytest.fixture
def unwritable(tmp_path):
    """A directory this process cannot create files in: mode 0555; for root, who ignores modes, an immutable one
    (chattr +i) or else /sys, where root cannot create files either."""
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
    elif shutil.which("chattr") and subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode == 0:
        yield d
        subprocess.run(["chattr", "-i", str(d)], check=True)
    else:
        yield Path("/sys")


def test_unwritable_output_is_one_line_naming_it(unwritable, tokenizer_dir, capsys):
    before = sorted(unwritable.iterdir())
    for out, argv in [
        (unwritable / "midtrain-x.jsonl", ["synth", "generate", "--n", "3"]),
        (unwritable / "midtrain-m", ["model", "init", "--preset", "nano", "--tokenizer", str(tokenizer_dir)]),
    ]:
        assert main([*argv, "--out", str(out)]) == 2
        err = _one_line(capsys)
        assert err.startswith(f"error: {out}: ") and any(w in err for w in ("Permission denied", "not permitted", "Read-only"))
    assert sorted(unwritable.iterdir()) == before


def test_a_full_disk_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "p.jsonl"
    assert main(["synth", "generate", "--n", "3", "--out", str(out)]) == 2
    assert _one_line(capsys) == f"error: {out}: No space left on device"
    assert list(tmp_path.iterdir()) == []  # no file, no temporary, no lock


def _damaged_model(nano_model, tmp_path, damage: str) -> Path:
    model = tmp_path / damage
    shutil.copytree(nano_model, model)
    weights = model / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:100_000])
    else:  # a pickle that would run a command if anything unpickled it with the full pickle machinery

        class Payload:
            def __reduce__(self):
                return (os.system, (f"touch {tmp_path / 'pwned'}",))

        weights.unlink()
        (model / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    return model


@pytest.mark.parametrize("damage, needle", [("truncated", "incomplete metadata"), ("malicious", "refused to load the pickled weights")])
def test_a_damaged_checkpoint_is_one_line_and_leaves_nothing(damage, needle, nano_model, corpus, tmp_path, capsys):
    model = _damaged_model(nano_model, tmp_path, damage)
    out = tmp_path / "run"
    argv = ["pretrain", "--model", str(model), "--corpus.files", str(corpus), "--seq-len", "32", "--max-steps", "1", "--out", str(out)]
    assert main(argv) == 2
    err = _one_line(capsys)
    assert str(model) in err and needle in err
    assert not out.exists() and not (tmp_path / "pwned").exists()


def test_analyze_a_truncated_checkpoint_is_one_line(nano_model, tmp_path, capsys):
    model = _damaged_model(nano_model, tmp_path, "truncated")
    assert main(["analyze", "weights", str(nano_model), str(model), "--out", str(tmp_path / "aw")]) == 2
    assert f"{model / 'model.safetensors'}: not a readable safetensors file" in _one_line(capsys)
    assert not (tmp_path / "aw").exists()


def test_negative_numbers_after_a_flag_are_values(nano_model, corpus, capsys):
    from midtrain.cli import join_negative_values

    base = ["pretrain", "--model", str(nano_model), "--corpus.files", str(corpus), "--out", "o", "--dry-run"]
    assert main([*base, "--optim.min-lr-ratio", "-0.0"]) == 0
    assert "min_lr_ratio: -0.0" in capsys.readouterr().out
    evaluate = ["eval", str(nano_model), "--benchmarks", "gsm8k", "--out", "o", "--dry-run"]
    assert main([*evaluate, "--score-workers", "-1"]) == 0  # a field whose range admits a negative value
    assert "score_workers: -1" in capsys.readouterr().out
    for value in ("-1e-3", "-inf", "-.5"):
        assert main([*base, "--optim.lr", value]) == 2
        assert "key 'optim.lr'" in _one_line(capsys)
    assert join_negative_values(["--a", "-1e-3", "--b", "-x", "--c", "-2"], {"--a", "--b"}) == ["--a=-1e-3", "--b", "-x", "--c", "-2"]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["model", "init", "--bogus", "1"], "unrecognized arguments: --bogus 1"),
        (["model", "init", "--preset"], "argument --preset: expected one argument"),
        (["model", "init", "--arch", "gpt"], "key 'arch': expected one of 'llama', 'qwen2'"),
        (["synth", "generate", "--n", "1", "extra"], "unrecognized arguments: extra"),
        # a typo is an error, never a different run: argparse would take --max-step for --max-steps
        (["pretrain", "--max-step", "3"], "unrecognized arguments: --max-step 3"),
        (["pretrain", "--max-step=3"], "unrecognized arguments: --max-step=3"),
        (["model", "init", "--pre", "tiny"], "unrecognized arguments: --pre tiny"),
    ],
)
def test_usage_errors_are_one_line(argv, needle, capsys):
    assert main(argv) == 2
    assert needle in _one_line(capsys)


def test_no_parser_accepts_abbreviations():
    from midtrain.cli import build_parser

    for s in STAGES:
        assert build_parser(s, s.resolve()[1]).allow_abbrev is False, s.verb


def test_the_help_example_of_every_verb_is_a_key_it_has():
    """The dotted-override example at the foot of each --help (once the key-less `train.lr=3e-4`) parses into
    that verb's config and sets the value it shows."""
    import re

    from midtrain.cli import build_parser
    from midtrain.config import parse_override_value, set_dotted

    for s in STAGES:
        cls = s.resolve()[1]
        epilog = build_parser(s, cls).epilog or ""
        example = re.search(r"\(e\.g\. (.+)\)\.$", epilog)
        assert example, (s.verb, epilog)
        key, raw = example.group(1).split("=", 1)
        docs = cls.field_docs()
        assert key in docs and key not in cls.RENAMED, (s.verb, key)
        data: dict = {}
        set_dotted(data, key, parse_override_value(raw, docs[key][0]), cls)
        cfg = cls.from_dict(data, check=False)  # the verb's other required keys are not the example's business
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        assert value == docs[key][2], (s.verb, key, value)
    pretrain = build_parser(next(s for s in STAGES if s.verb == "pretrain"), PretrainConfig).epilog
    assert "(e.g. optim.lr=0.001)" in pretrain  # a section key shows the dotted form


def test_input_errors_are_recognised_and_bugs_are_not():
    from safetensors import SafetensorError

    from midtrain.cli import input_error

    assert input_error(PermissionError(13, "Permission denied", "/x/y")) == "/x/y: Permission denied"
    assert input_error(OSError(28, "No space left on device")) == "No space left on device"
    assert input_error(pickle.UnpicklingError("Weights only load failed\nmore")) == "refused to unpickle a file: Weights only load failed"
    assert input_error(json.JSONDecodeError("Expecting value", "{x", 1)).startswith("malformed JSON: Expecting value")
    assert input_error(SafetensorError("incomplete metadata")) == "not a readable safetensors file: incomplete metadata"
    assert input_error(TypeError("bug")) is None and input_error(KeyError("bug")) is None


def test_bugs_keep_their_traceback_and_debug_shows_input_errors_too(tmp_path, monkeypatch, capsys):
    import midtrain.synth.generate as gen

    argv = ["synth", "generate", "--n", "3", "--out", str(tmp_path / "p.jsonl")]

    def bug(*a, **k):
        raise TypeError("a bug in our code")

    monkeypatch.setattr(gen, "generate_problems", bug)
    with pytest.raises(TypeError):
        main(argv)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(gen, "generate_problems", interrupted)
    assert main(argv) == 130 and capsys.readouterr().err.strip() == "interrupted"

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied", "/somewhere")

    monkeypatch.setattr(gen, "generate_problems", denied)
    assert main(argv) == 2 and _one_line(capsys) == "error: /somewhere: Permission denied"
    monkeypatch.setenv("MIDTRAIN_DEBUG", "1")
    with pytest.raises(PermissionError):
        main(argv)

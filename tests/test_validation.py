"""Parse-time validation (issue 14): every numeric and path field has a rule, and a bad value is one line naming the key.

The table runs the CLI with ``--dry-run`` (nothing is loaded, nothing written): exit code 2 and a message fragment
that names the key. The stage-time cases below need a model or data (the shipped ``demo-base`` checkpoint, tiny
files) and also check that nothing is left behind. YAML loading (duplicate keys, alias bombs) closes the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

import midtrain
from midtrain.cli import main
from midtrain.config import Bounds, Config, load_config, load_yaml, param, read_yaml
from midtrain.errors import ConfigError

DEMO = Path(midtrain.__file__).parent / "assets" / "demo-base"


@dataclass
class Inner(Config):
    scale: float = param(1.0, "A float.", gt=0)
    steps: int = param(1, "Steps.", ge=1)
    flag: bool = param(False, "A flag.")

    def check(self) -> None:
        if self.flag:
            raise ConfigError("key 'scale': must be set when flag is on")


@dataclass
class Outer(Config):
    steps: int = param(1, "Steps.", ge=1)
    scale: float = param(1.0, "Any finite float.")
    ratios: list[float] = param([], "Ratios.", ge=0, le=1)
    shares: dict[str, float] = param({}, "Shares.", ge=0)
    inner: Inner = param(Inner(), "A section.")


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """Paths the table refers to as {name}: a directory, a file, prompt templates with wrong placeholders."""
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "a_file.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "tpl_foo.txt").write_text("Candidate: {candidate}\nReference: {reference}\nAlso {foo}. \\boxed{x} {'a': 1}\n")
    (tmp_path / "tpl_noref.txt").write_text("Candidate: {candidate}\n")
    (tmp_path / "tpl_prefix_typo.txt").write_text("{prefix} then {prefx}\n")
    return {"dir": str(tmp_path / "a_dir"), "file": str(tmp_path / "a_file.jsonl"), "tmp": str(tmp_path)} | {
        name: str(tmp_path / f"{name}.txt") for name in ("tpl_foo", "tpl_noref", "tpl_prefix_typo")
    }


PRETRAIN = ["pretrain", "--model", "m", "--corpus.files", "d.jsonl", "--out", "{tmp}/o"]
RL = ["rl", "--model", "m", "--data", "d.jsonl", "--out", "{tmp}/o"]
JUDGE = ["judge", "pairs.jsonl", "--out", "{tmp}/o"]
NEW: list[tuple[list[str], str]] = [  # accepted (or a traceback) before issue 14
    (
        ["model", "init", "--tokenizer", "t", "--out", "o", "--max-position-embeddings", "0"],
        "key 'max_position_embeddings': must be in [1, ",
    ),
    (["model", "init", "--tokenizer", "t", "--out", "o", "--rope-theta", "-1"], "key 'rope_theta': must be > 0, got -1.0"),
    (["model", "init", "--tokenizer", "t", "--out", "o", "--rope-theta", "nan"], "key 'rope_theta': must be finite"),
    (["model", "init", "--tokenizer", "t", "--out", "o", "seed=-1"], "key 'seed': must be in [0, 4294967295]"),
    (["model", "init", "--tokenizer", "{file}", "--out", "o"], "key 'tokenizer': {file} is a file, expected a directory"),
    (["tokenizer", "train", "--corpus", "c", "--out", "o", "--model-max-length", "0"], "key 'model_max_length': must be >= 1"),
    ([*PRETRAIN, "keep_checkpoints=-1"], "key 'keep_checkpoints': must be >= 0, got -1"),
    ([*PRETRAIN, "save_every_steps=-5"], "key 'save_every_steps': must be >= 0"),
    ([*PRETRAIN, "--log-every-steps", "0"], "key 'log_every_steps': must be >= 1"),
    ([*PRETRAIN, "max_steps=-1"], "key 'max_steps': must be >= 0"),
    ([*PRETRAIN, "max_tokens=-100"], "key 'max_tokens': must be in [0, 9007199254740992]"),
    ([*PRETRAIN, "--batch-size", "0"], "key 'batch_size': must be >= 1"),
    ([*PRETRAIN, "--seq-len", "4"], "key 'seq_len': must be >= 8"),
    ([*PRETRAIN, "weights.math=-1"], "key 'weights.math': must be >= 0"),
    ([*PRETRAIN, "weights.math=0"], "key 'weights': at least one domain needs a weight > 0"),
    ([*PRETRAIN, "--completion-only", "--corpus.format", "text"], "key 'completion_only': format 'text' has no prompt"),
    ([*PRETRAIN, "--diagnose.every-steps", "10"], "key 'diagnose.data': every_steps > 0 needs"),
    ([*PRETRAIN, "--diagnose.data", "{dir}", "--diagnose.every-steps", "10"], "key 'diagnose.data': {dir} is a directory, expected a file"),
    ([*PRETRAIN, "--save-every-minutes", "-1"], "key 'save_every_minutes': must be >= 0"),
    ([*PRETRAIN, "--out", "{file}"], "key 'out': {file} is a file, expected a directory"),
    (["sft", "--model", "m", "--corpus.files", "d", "--out", "o", "--diagnose.n", "0"], "key 'diagnose.n': must be >= 1"),
    ([*RL, "--rollout.num-generations", "1"], "key 'rollout.num_generations': must be >= 2"),
    ([*RL, "--judge.threshold", "2"], "key 'judge.threshold': must be in [0, 1]"),
    ([*RL, "--loss.epsilon-low", "inf"], "key 'loss.epsilon_low': must be finite"),
    ([*RL, "--vllm.gpu-memory-utilization", "1.5"], "key 'vllm.gpu_memory_utilization': must be in (0, 1]"),
    ([*RL, "--vllm.server-url", "10.0.0.2:8000"], "key 'vllm.server_url': expected an http:// or https:// URL"),
    ([*RL, "--judge.backend.timeout-s", "0"], "key 'judge.backend.timeout_s': must be > 0"),
    (
        [*RL, "--task", "suffix", "--judge.kind", "llm", "--judge.prompt", "{tpl_foo}"],
        "key 'judge.prompt': the prompt template has the unknown",
    ),
    ([*JUDGE, "--threshold", "2"], "key 'threshold': must be in [0, 1], got 2.0"),
    ([*JUDGE, "--batch-size", "0"], "key 'batch_size': must be >= 1"),
    ([*JUDGE, "--max-new-tokens", "0"], "key 'max_new_tokens': must be >= 1"),
    ([*JUDGE, "--cache", "{dir}"], "key 'cache': {dir} is a directory, expected a file"),
    ([*JUDGE, "--prompt", "{tpl_foo}"], "key 'prompt': the prompt template has the unknown placeholder(s) {foo}"),
    ([*JUDGE, "--prompt", "{tpl_noref}"], "key 'prompt': the prompt template lacks the placeholder(s) {reference}"),
    ([*JUDGE, "--prompt", "{dir}/"], "is a directory, expected a .txt file"),
    ([*JUDGE, "--backend.backend", "openai", "--backend.base-url", "localhost:8000/v1"], "key 'backend.base_url': expected an http"),
    ([*JUDGE, "--backend.backend", "transformers"], "key 'backend.model': backend 'transformers' needs a model"),
    ([*JUDGE, "--backend.max-concurrency", "0"], "key 'backend.max_concurrency': must be >= 1"),
    ([*JUDGE, "--backend.max-retries", "-1"], "key 'backend.max_retries': must be >= 0"),
    (["eval", "score", "--completions", "{dir}", "--benchmark", "gsm8k"], "key 'completions': {dir} is a directory"),
    (["eval", "score", "--completions", "c", "--benchmark", "gsm8k", "ops.ranges.a=[5,2]"], "key 'ops.ranges.a': expected [lo, hi]"),
    (["analyze", "weights", "a", "b", "--tau", "-1"], "key 'tau': must be >= 0"),
    (["analyze", "cka", "a", "b", "--probe", "synthetic:²"], "key 'probe': 'synthetic:²' must be synthetic:N"),
    (["analyze", "cka", "a", "b", "--probe", "p", "--minibatch-size", "2"], "key 'minibatch_size': must be >= 4"),
    (["synth", "verify", "--problems", "p", "--ks", "1", "0"], "key 'ks[1]': must be >= 1, got 0"),
    (["synth", "verify", "--problems", "{dir}"], "key 'problems': {dir} is a directory"),
    (["synth", "diagnose", "m", "--problems", "p", "--out", "o", "--n-per-range", "0"], "key 'n_per_range': must be >= 1"),
    (["synth", "diagnose", "m", "--problems", "p", "--out", "o", "ops.ranges.id=[-1,3]"], "key 'ops.ranges.id[0]': must be >= 0"),
    (["augment", "tasks", "in", "--out", "o", "--tokenizer", "t", "--prompt", "{tpl_prefix_typo}"], "unknown placeholder(s) {prefx}"),
]
KEPT: list[tuple[list[str], str]] = [  # hand-written checks before, declared rules now: the move lost none
    ([*PRETRAIN, "--replay-share", "1"], "key 'replay_share': must be in [0, 1)"),
    ([*PRETRAIN, "optim.lr=nan"], "key 'optim.lr': must be finite"),
    ([*RL, "--rollout.temperature", "0"], "key 'rollout.temperature': must be > 0"),
    ([*RL, "--rollout.top-p", "0"], "key 'rollout.top_p': must be in (0, 1]"),
    ([*RL, "keep_checkpoints=-1"], "key 'keep_checkpoints': must be >= 0"),
    ([*RL, "--max-steps", "0"], "key 'max_steps': must be >= 1"),
    (["analyze", "cka", "a", "b", "--probe", "synthetic:0"], "key 'probe': 'synthetic:0' must be synthetic:N"),
    (["augment", "split", "in", "--out", "o", "--rl-fraction", "1.5"], "key 'rl_fraction': must be in [0, 1]"),
    (["augment", "tasks", "in", "--out", "o", "--tokenizer", "t", "--max-reference-tokens", "0"], "key 'max_reference_tokens'"),
    (["report", "r", "--max-depth", "-1"], "key 'max_depth': must be >= 0"),
]
MOVED: list[tuple[list[str], str]] = [  # flat keys that moved into a section: one line naming the new key
    (["tokenize", "--model", "m", "--out", "o", "--data", "d"], "key 'data' is now 'corpus.files'"),
    ([*PRETRAIN, "--replay", "r.jsonl"], "key 'replay' is now 'corpus.replay'"),
    (["sft", "--model", "m", "--corpus.files", "d", "--out", "o", "mixture.a=[x]"], "key 'mixture.a' is now 'corpus.mixture.a'"),
    ([*PRETRAIN, "--diagnose-every-steps", "10"], "key 'diagnose_every_steps' is now 'diagnose.every_steps'"),
    (["eval", "m", "--out", "o", "--synthetic", "p", "--op-scale", "tiny"], "key 'op_scale' is now 'ops.scale'"),
    (["eval", "score", "--completions", "c", "--synthetic", "p", "op_ranges.id=[1,2]"], "key 'op_ranges.id' is now 'ops.ranges.id'"),
    (["synth", "diagnose", "m", "--problems", "p", "--out", "o", "--op-scale", "paper"], "key 'op_scale' is now 'ops.scale'"),
]
CASES = NEW + KEPT + MOVED


@pytest.mark.parametrize("argv, fragment", CASES, ids=[" ".join(a[:2]) + f" [{f.split(':')[0]}]" for a, f in CASES])
def test_bad_value_is_one_line_naming_the_key(argv, fragment, files, capsys):
    def fill(s: str) -> str:
        for name, path in files.items():
            s = s.replace("{" + name + "}", path)
        return s

    assert main([*map(fill, argv), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert fill(fragment) in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_a_key_pasted_into_api_key_env_is_refused_without_echoing_it(capsys):
    secret = "sk-live-0123456789abcdef"
    assert main(["judge", "p.jsonl", "--out", "o", "--backend.api-key-env", secret, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "key 'backend.api_key_env'" in err and secret not in err


# -- the mechanism ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bounds, text, inside, outside",
    [
        (Bounds(ge=0), ">= 0", [0, 3.5], [-1e-9]),
        (Bounds(gt=0), "> 0", [1e-9], [0, -1]),
        (Bounds(ge=0, le=1), "in [0, 1]", [0, 1], [1.01, -0.1]),
        (Bounds(gt=0, lt=1), "in (0, 1)", [0.5], [0, 1]),
        (Bounds(le=2**32 - 1), "<= 4294967295", [0], [2**32]),
    ],
)
def test_bounds(bounds, text, inside, outside):
    assert bounds.text() == text
    assert all(bounds.holds(x) for x in inside) and not any(bounds.holds(x) for x in outside)


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"steps": 0}, "key 'steps': must be >= 1, got 0"),
        ({"ratios": [0.5, 2.0]}, "key 'ratios[1]': must be in [0, 1], got 2.0"),
        ({"shares": {"a": -1.0}}, "key 'shares.a': must be >= 0"),
        ({"scale": float("inf")}, "key 'scale': must be finite"),
        ({"ratios": [float("nan")]}, "key 'ratios[0]': must be finite"),
        ({"inner": {"scale": float("-inf")}}, "key 'inner.scale': must be finite"),
        ({"inner": {"steps": 0}}, "key 'inner.steps': must be >= 1"),
        ({"inner": {"flag": True}}, "key 'inner.scale': must be set when flag is on"),  # check() of a section: prefixed
    ],
)
def test_declared_rules_cover_elements_sections_and_floats(data, fragment):
    with pytest.raises(ConfigError) as e:
        Outer.from_dict(data)
    assert fragment in str(e.value)


def test_rules_are_shown_in_help_and_skipped_without_check():
    assert Outer.field_docs()["steps"][1] == "Steps. Must be >= 1."
    assert Outer.from_dict({"steps": 0}, check=False).steps == 0
    with pytest.raises(ConfigError, match="key 'steps' in my.yaml: must be >= 1"):
        Outer.from_dict({"steps": 0}, source="my.yaml")


@pytest.fixture
def yaml_file(tmp_path):
    def write(text: str) -> Path:
        p = tmp_path / "c.yaml"
        p.write_text(text)
        return p

    return write


def test_yaml_duplicate_key_names_file_line_and_key(yaml_file):
    p = yaml_file("steps: 2\ninner:\n  scale: 1.0\n  steps: 3\n  scale: 2.0\n")
    with pytest.raises(ConfigError) as e:
        load_config(Outer, p)
    assert f"{p}, line 5" in str(e.value) and "duplicate key 'scale' (first on line 3)" in str(e.value)
    with pytest.raises(ConfigError, match="duplicate key 'steps'"):
        read_yaml(yaml_file("{steps: 1, steps: 2}\n"))


def test_yaml_merge_keys_may_still_be_overridden(yaml_file):
    data = read_yaml(yaml_file("base: &b {steps: 1, scale: 2.0}\ninner: {<<: *b, steps: 5}\n"))
    assert data["inner"] == {"steps": 5, "scale": 2.0}


@pytest.mark.timeout(5)
def test_yaml_alias_bomb_is_refused_at_once(yaml_file, capsys):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):  # 9 levels of 9 references: 9^10 ≈ 3.5 billion strings once expanded
        prev, name = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    p = yaml_file("\n".join(lines) + "\nsteps: 1\n")
    assert main(["pretrain", "--config", str(p), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert str(p) in err and "aliases expand it to" in err
    with pytest.raises(ConfigError, match="recursive alias"):
        read_yaml(yaml_file("a: &a [1, *a]\n"))
    with pytest.raises(ConfigError, match="nested too deeply"):
        read_yaml(yaml_file("a: " + "[" * 5000 + "]" * 5000 + "\n"))
    assert load_yaml("&a [1, 2]") == [1, 2]


# -- stage-time checks: nothing left behind ---------------------------------------------------------------------
def _jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_seq_len_above_the_models_positions(tmp_path, capsys):
    data = _jsonl(tmp_path / "t.jsonl", [{"text": "one two three"}] * 4)
    out = tmp_path / "o"
    assert main(["pretrain", "--model", str(DEMO), "--corpus.files", data, "--out", str(out), "--seq-len", "2048"]) == 2
    assert "key 'seq_len': 2048 exceeds the 1024 positions of model" in capsys.readouterr().err and not out.exists()


def test_completion_only_on_records_without_a_prompt(tmp_path, capsys):
    data = _jsonl(tmp_path / "t.jsonl", [{"text": "one two three"}] * 4)
    out = tmp_path / "o"
    assert main(["sft", "--model", str(DEMO), "--corpus.files", data, "--out", str(out), "--completion-only", "--max-steps", "1"]) == 2
    assert "completion_only: no record in" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize(
    "record, fragment",
    [
        ({"prompt": "2+2?", "answer": "4"}, ":1: a synthetic reward needs the problem's 'graph'"),
        ({"prompt": "2+2?"}, ":1: a synthetic reward needs the problem's 'answer' and 'graph'"),
        ({"prompt": "2+2?", "answer": "4", "graph": {"nodes": "x"}}, ":1: not a synthetic problem record (bad graph"),
    ],
)
def test_rl_synthetic_reward_on_data_without_problems(record, fragment, tmp_path, capsys):
    data = _jsonl(tmp_path / "tasks.jsonl", [record] * 8)
    out = tmp_path / "o"
    assert main(["rl", "--model", str(DEMO), "--data", data, "--out", str(out), "--reward", "synthetic_process", "--max-steps", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{data}{fragment}" in err and not out.exists()


@pytest.mark.parametrize(
    "lines, fragment",
    [
        ([{"id": "1", "completion": "2", "sample": "zero"}], ":1: 'sample' must be an integer >= 0, got 'zero'"),
        ([{"id": "1", "completion": "2", "sample": -1}], ":1: 'sample' must be an integer >= 0, got -1"),
        (
            [{"id": "1", "completion": "2", "sample": 0}, {"id": "1", "completion": "3", "sample": 0}],
            ":2: id '1' sample 0 was already given on line 1",
        ),
        ([{"id": "1", "completion": "2"}, {"id": "1", "completion": "3", "sample": 0}], ":2: id '1' sample 0 was already given on line 1"),
    ],
)
def test_eval_score_bad_or_repeated_samples(lines, fragment, tmp_path, capsys):
    bench = _jsonl(tmp_path / "bench.jsonl", [{"id": "1", "problem": "1+1?", "answer": "2"}])
    comps = _jsonl(tmp_path / "comps.jsonl", lines)
    assert main(["eval", "score", "--data", bench, "--completions", comps, "--out", str(tmp_path / "o")]) == 2
    assert f"{comps}{fragment}" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_eval_score_accepts_distinct_and_float_samples(tmp_path, capsys):
    bench = _jsonl(tmp_path / "bench.jsonl", [{"id": "1", "problem": "1+1?", "answer": "2"}])
    comps = _jsonl(tmp_path / "comps.jsonl", [{"id": "1", "completion": "\\boxed{2}"}, {"id": "1", "completion": "2", "sample": 1.0}])
    assert main(["eval", "score", "--data", bench, "--completions", comps, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["k"] == 2


def test_multiple_choice_answer_must_be_one_letter(tmp_path, capsys):
    bench = _jsonl(tmp_path / "bench.jsonl", [{"id": "1", "problem": "Which?", "choices": ["a", "b"], "answer": "AB"}])
    comps = _jsonl(tmp_path / "comps.jsonl", [{"id": "1", "completion": "A"}])
    assert main(["eval", "score", "--data", bench, "--completions", comps]) == 2
    assert "multiple-choice answer must be an option letter, got 'AB'" in capsys.readouterr().err


def test_report_with_dollar_signs_in_a_run_name(tmp_path):
    run = tmp_path / "runs" / "a$\\frac{$b"  # mathtext would fail to parse this label
    run.mkdir(parents=True)
    _jsonl(run / "log.jsonl", [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}])
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.html").is_file() and list((tmp_path / "rep" / "plots").glob("*.png"))


def test_yaml_numbers_follow_yaml_1_2_no_base_60():
    # YAML 1.1 reads 12:00:00 as 43200 (a Slurm time of 30 days); YAML 1.2 and midtrain keep it a string.
    got = load_yaml("t: 12:00:00\nm: 1:30\nn: 1_000\nx: 0x1f\nf: 1.5\ng: -.inf\ns: 1e-6")
    assert got == {"t": "12:00:00", "m": "1:30", "n": 1000, "x": 31, "f": 1.5, "g": float("-inf"), "s": "1e-6"}

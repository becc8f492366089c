"""Benchmark registry, loading (local files, data root, hub path offline) and prompt formats."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from midtrain.errors import ConfigError, DataError
from midtrain.eval import benchmarks as B
from midtrain.thoughts import opens_thought
from shared_support import benchmark_root, needs_benchmarks

SIZES = {
    "gsm8k": 1319,
    "math500": 500,
    "amc23": 40,
    "aime2024": 30,
    "aime2025": 30,
    "olympiadbench": 675,
    "gpqa_diamond": 198,
    "mmlu_stem": 3018,
}


@pytest.fixture
def no_hub(monkeypatch):
    """Make any hub access fail loudly: local loading must never call datasets.load_dataset."""
    import datasets

    def boom(*a, **k):
        raise AssertionError("datasets.load_dataset was called")

    monkeypatch.setattr(datasets, "load_dataset", boom)


@needs_benchmarks
@pytest.mark.parametrize("name", list(SIZES))
def test_registry_loads_every_local_file(name: str, no_hub) -> None:
    bench, recs, src = B.load_benchmark(name)
    assert len(recs) == SIZES[name]
    assert Path(src).is_file() and not src.startswith("hub:")
    assert len({r["id"] for r in recs}) == len(recs)
    if bench.kind == "choice":
        assert all(r["answer"] in "ABCD" and len(r["choices"]) == 4 for r in recs)


@needs_benchmarks
def test_gpqa_is_read_compressed_and_never_unpacked(no_hub) -> None:
    bench, recs, src = B.load_benchmark("gpqa_diamond", limit=3)
    assert src.endswith(".jsonl.gz") and len(recs) == 3
    assert not (Path(src).parent / "test.jsonl").exists() and Path(src).parent.parent == benchmark_root()


@needs_benchmarks
def test_aliases_and_limit(no_hub) -> None:
    assert B.load_benchmark("AIME24", limit=5)[0].name == "aime2024"
    assert len(B.load_benchmark("math-500", limit=7)[1]) == 7
    with pytest.raises(ConfigError, match="did you mean 'gsm8k'"):
        B.resolve_name("gsm8kk")


def test_data_root_from_config_and_env(tmp_path, monkeypatch, no_hub) -> None:
    root = tmp_path / "bench"
    (root / "amc23").mkdir(parents=True)
    (root / "amc23" / "test.jsonl").write_text(json.dumps({"id": "a", "problem": "1+1?", "answer": "2"}) + "\n")
    assert B.load_benchmark("amc23", root=root)[1][0]["answer"] == "2"
    monkeypatch.setenv(B.ENV_DATA_ROOT, str(root))
    assert B.data_root() == root
    assert B.load_benchmark("amc23")[1][0]["id"] == "a"
    with pytest.raises(DataError, match="benchmark file not found.*gsm8k"):
        B.load_benchmark("gsm8k")  # not in this root, and source=local never goes online
    with pytest.raises(ConfigError, match="data_root"):
        B.data_root(tmp_path / "missing")


def test_env_root_may_name_the_shared_directory(tmp_path, monkeypatch, no_hub) -> None:
    shared = tmp_path / "shared"  # as ../shared: benchmarks/ beside datasets/
    (shared / "benchmarks" / "amc23").mkdir(parents=True)
    (shared / "datasets").mkdir()
    (shared / "benchmarks" / "amc23" / "test.jsonl").write_text(json.dumps({"id": "s", "problem": "1+1?", "answer": "2"}) + "\n")
    monkeypatch.setenv(B.ENV_DATA_ROOT, str(shared))
    assert B.data_root() == shared / "benchmarks"
    assert B.load_benchmark("amc23")[1][0]["id"] == "s"


def test_default_root_is_next_to_the_checkout(monkeypatch) -> None:
    monkeypatch.delenv(B.ENV_DATA_ROOT, raising=False)
    assert B.default_data_roots()[0] == Path(B.__file__).resolve().parents[4] / "shared" / "benchmarks"


def test_malformed_line_names_file_and_line(tmp_path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text('{"id": "1", "problem": "p", "answer": "1"}\n{"id": "2", "problem": "p", "answer": \n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: malformed JSON"):
        B.load_file(f)


def test_malformed_gzip_line_names_file_and_line(tmp_path) -> None:
    f = tmp_path / "bad.jsonl.gz"
    with gzip.open(f, "wt") as g:
        g.write('{"id": "1", "problem": "p", "answer": "A", "choices": ["a","b","c","d"]}\n')
        g.write('{"id": "2", "problem": "p", "answer": "A", "choices": ["a","b"\n')
    with pytest.raises(DataError, match=r"bad\.jsonl\.gz:2: malformed JSON"):
        B.load_file(f)


@pytest.mark.parametrize(
    "line,match",
    [
        ('{"id": "1", "answer": "1"}', r"x\.jsonl:2: record has no 'problem'"),
        ('{"id": "0", "problem": "p", "answer": "2"}', r"x\.jsonl:2: duplicate id '0'"),
        ('{"id": "1", "problem": "p", "answer": ""}', r"x\.jsonl:2: empty 'answer'"),
        ('{"id": "1", "problem": "", "answer": "3"}', r"x\.jsonl:2: 'problem' must be"),
        ('{"id": "1", "problem": "p", "answer": "7", "choices": ["a", "b"]}', r"x\.jsonl:2: multiple-choice answer"),
    ],
)
def test_bad_records(tmp_path, line: str, match: str) -> None:
    f = tmp_path / "x.jsonl"
    f.write_text('{"id": "0", "problem": "p", "answer": "1"}\n' + line + "\n")
    with pytest.raises(DataError, match=match):
        B.load_file(f)


def test_hub_path_maps_records(monkeypatch) -> None:
    """The online path, with datasets.load_dataset replaced by a fake (no network in tests)."""
    import datasets

    calls = []
    fake = {
        "openai/gsm8k": [{"question": "Q?", "answer": "3 + 4 = 7\n#### 1,007"}],
        "Idavidrein/gpqa": [
            {
                "Question": "Which?",
                "Correct Answer": "right",
                "Incorrect Answer 1": "w1",
                "Incorrect Answer 2": "w2",
                "Incorrect Answer 3": "w3",
                "Record ID": "rec1",
                "Explanation": "e",
            }
        ],
        "HuggingFaceH4/aime_2024": [{"id": 60, "problem": "P", "answer": "025", "solution": "s"}],
    }

    def load_dataset(repo, config=None, split=None):
        calls.append((repo, config, split))
        return fake[repo]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    _, recs, src = B.load_benchmark("gsm8k", source="hub")
    assert src == "hub:openai/gsm8k" and recs[0]["answer"] == "1007" and recs[0]["problem"] == "Q?"
    _, recs, _ = B.load_benchmark("gpqa_diamond", source="hub")
    assert recs[0]["choices"][" ABCD".index(recs[0]["answer"]) - 1] == "right"
    _, recs, _ = B.load_benchmark("aime2024", source="hub")
    assert recs[0]["answer"] == "25" and recs[0]["id"] == "aime2024-60"
    assert calls[0] == ("openai/gsm8k", "main", "test")


def test_hub_failure_is_one_clear_error(monkeypatch, tmp_path) -> None:
    import datasets

    def offline(*a, **k):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="cannot load 'HuggingFaceH4/MATH-500' from the Hugging Face hub"):
        B.load_benchmark("math500", source="hub")
    with pytest.raises(DataError, match="Hugging Face hub"):  # auto: the local file is missing → hub → error
        B.load_benchmark("math500", root=tmp_path, source="auto")


# -- prompts ----------------------------------------------------------------------------------------------------
class Tok:
    def __init__(self, template: str | None = None):
        self.chat_template = template
        self.calls = []

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True, **kw):
        self.calls.append(kw)
        return f"<|user|>{messages[0]['content']}<|assistant|>"


REC = {"id": "1", "problem": "What is 2+3?", "answer": "5"}
MC = {"id": "2", "problem": "Pick one.", "answer": "B", "choices": ["x", "y", "z", "w"]}


def test_fewshot_prompt() -> None:
    p = B.build_prompt(REC, "math", "fewshot", n_shots=2)
    assert p.count("Question:") == 3 and p.endswith("Question: What is 2+3?\nAnswer:")
    assert "\\boxed{" in p and B.stop_strings("fewshot") == ["\nQuestion:"]
    mc = B.build_prompt(MC, "choice", "fewshot", n_shots=1)
    assert "A) x\nB) y\nC) z\nD) w" in mc and mc.count("Question:") == 2


def test_think_prompt_opens_a_thought() -> None:
    p = B.build_prompt(REC, "math", "think")
    assert p.endswith("<think>\n") and opens_thought(p) and "\\boxed{}" in p
    assert B.stop_strings("think") == []


def test_chat_prompt_uses_the_template_and_opens_think() -> None:
    tok = Tok("{{ messages }}")
    p = B.build_prompt(REC, "math", "chat", tokenizer=tok, think=True)
    assert p.startswith("<|user|>What is 2+3?") and p.endswith("<|assistant|><think>\n")
    assert tok.calls[-1] == {"enable_thinking": True}
    assert not opens_thought(B.build_prompt(REC, "math", "chat", tokenizer=tok, think=False))


def test_chat_without_template_is_a_clear_error_and_auto_falls_back() -> None:
    with pytest.raises(ConfigError, match="'chat' needs a chat template.*prompt_format=think"):
        B.resolve_format("chat", Tok(None))
    assert B.resolve_format("auto", Tok(None)) == "think"
    assert B.resolve_format("auto", Tok("x")) == "chat"
    assert B.resolve_format("fewshot", Tok(None)) == "fewshot"

"""Hostile inputs for the data verbs: augment, augment split, augment tasks, judge.

The annotator and the judge are the programmatic backend (no model, no server) unless a case needs HTTP; the
credential cases with a live test server are in ``test_hostile_security.py``.
"""

from __future__ import annotations

import json

import pytest
from hostile_support import Case, Env, bad_utf8, check_case, params, truncated_jsonl

pytestmark = pytest.mark.timeout(60)


# -- augment ----------------------------------------------------------------------------------------------------
def AUG(e: Env, *extra: str, input: str | None = None) -> list[str]:
    return ["augment", input or str(e.a.prose), "--out", str(e.out), "--tokenizer", str(e.a.tok), "--max-chunk-tokens", "64", *extra]


def doc(i: int = 0) -> dict:
    return {"id": f"d{i}", "text": f"The river {i} ran north. It was cold. Then it froze."}


def AUG_yaml(e: Env, text: str) -> list[str]:
    return ["augment", "--config", e.write("aug.yaml", text), "--out", str(e.out), "--tokenizer", str(e.a.tok)]


AUGMENT = [
    Case("augment/no-input", lambda e: ["augment", "--out", str(e.out), "--tokenizer", str(e.a.tok)], ["input"]),
    Case("augment/input-empty-file", lambda e: AUG(e, input=e.write("empty.jsonl", "")), ["empty.jsonl"]),
    Case("augment/input-blank-lines-only", lambda e: AUG(e, input=e.write("blank.jsonl", "\n\n  \n")), ["blank.jsonl"]),
    Case(
        "augment/input-empty-texts",
        lambda e: AUG(e, input=e.jsonl("void.jsonl", [{"id": "a", "text": ""}, {"id": "b", "text": "  "}])),
        ["void.jsonl"],
    ),
    Case("augment/input-missing", lambda e: AUG(e, input=str(e.path("nope.jsonl"))), ["nope.jsonl"]),
    Case("augment/input-directory", lambda e: AUG(e, input=e.dir("indir")), ["indir"]),
    Case("augment/input-bad-utf8", lambda e: AUG(e, input=e.write("bad.jsonl", bad_utf8(doc()))), ["bad.jsonl:2"]),
    Case(
        "augment/input-truncated-line",
        lambda e: AUG(e, input=e.write("trunc.jsonl", truncated_jsonl([doc(0), doc(1), doc(2)]))),
        ["trunc.jsonl:3"],
    ),
    Case("augment/input-not-objects", lambda e: AUG(e, input=e.write("arr.jsonl", '["a", "b"]\n')), ["arr.jsonl:1"]),
    Case("augment/input-duplicate-id", lambda e: AUG(e, input=e.jsonl("dup.jsonl", [doc(0), doc(0)])), ["dup.jsonl:2", "d0"]),
    Case("augment/text-field-missing", lambda e: AUG(e, "--text-field", "body"), ["prose.jsonl:1", "body"]),
    Case("augment/text-not-a-string", lambda e: AUG(e, input=e.jsonl("num.jsonl", [{"id": "a", "text": 42}])), ["num.jsonl:1", "text"]),
    Case("augment/openai-without-base-url", lambda e: AUG(e, "--annotator.backend", "openai", "--annotator.model", "m"), ["base_url"]),
    Case("augment/tokenizer-missing", lambda e: AUG(e, "--tokenizer", str(e.path("notok"))), ["notok"]),
    Case("augment/max-chunk-tokens-zero", lambda e: AUG(e, "--max-chunk-tokens", "0"), ["max_chunk_tokens"]),
    Case("augment/num-shards-zero", lambda e: AUG(e, "--num-shards", "0"), ["num_shards"]),
    Case("augment/shard-index-negative", lambda e: AUG(e, "--num-shards", "2", "--shard-index", "-1"), ["shard_index"]),
    Case("augment/max-documents-zero", lambda e: AUG(e, "--max-documents", "0"), ["max_documents"]),
    Case("augment/max-new-tokens-negative", lambda e: AUG(e, "--max-new-tokens", "-1"), ["max_new_tokens"]),
    Case("augment/temperature-negative", lambda e: AUG(e, "--temperature", "-1"), ["temperature"]),
    Case("augment/retry-temperature-nan", lambda e: AUG(e, "--retry-temperature", "nan"), ["retry_temperature"]),
    Case("augment/max-concurrency-zero", lambda e: AUG(e, "--annotator.max-concurrency", "0"), ["max_concurrency"]),
    Case("augment/timeout-negative", lambda e: AUG(e, "--annotator.timeout-s", "-1"), ["timeout_s"]),
    Case("augment/backoff-nan", lambda e: AUG(e, "--annotator.backoff-s", "nan"), ["backoff_s"]),
    Case("augment/prompt-missing-text-placeholder", lambda e: AUG(e, "--prompt", e.write("p.txt", "Add thoughts please.")), ["{text}"]),
    Case(
        "augment/prompt-unknown-placeholder", lambda e: AUG(e, "--prompt", e.write("p.txt", "Annotate {text} in {language}.")), ["language"]
    ),
    Case("augment/prompt-file-missing", lambda e: AUG(e, "--prompt", str(e.path("nope.txt"))), ["nope.txt"]),
    Case("augment/out-under-a-file", lambda e: AUG(e, "--out", str(e.file_parent() / "aug")), ["afile"]),
    Case("augment/out-unwritable", lambda e: AUG(e, "--out", str(e.unwritable())), [lambda e: str(e.unwritable().parent)]),
    Case(
        "augment/yaml-duplicate-key",
        lambda e: AUG_yaml(e, f"input: [{e.a.prose}]\nmax_chunk_tokens: 64\nmax_chunk_tokens: 128\n"),
        ["max_chunk_tokens", "aug.yaml"],
    ),
]


# -- augment split ----------------------------------------------------------------------------------------------
def SPL(e: Env, *extra: str, input: str | None = None) -> list[str]:
    return ["augment", "split", input or str(e.a.aug), "--out", str(e.out), *extra]


def aug_record(i: int, chunk_id: str | None = None) -> dict:
    text = f"The river {i} ran. It was cold."
    return {
        "id": chunk_id or f"d{i}#0000",
        "source_id": f"d{i}",
        "chunk": text,
        "domain": "general",
        "segments": [{"text": "The river ran.", "thought": "a thought"}, {"text": text[14:], "thought": None}],
        "annotator": "programmatic",
        "status": "accepted",
    }


SPLIT = [
    Case("augment-split/rl-fraction-above-one", lambda e: SPL(e, "--rl-fraction", "1.5"), ["rl_fraction"]),
    Case("augment-split/rl-fraction-negative", lambda e: SPL(e, "--rl-fraction", "-0.1"), ["rl_fraction"]),
    Case("augment-split/rl-fraction-nan", lambda e: SPL(e, "--rl-fraction", "nan"), ["rl_fraction"]),
    Case("augment-split/no-input", lambda e: ["augment", "split", "--out", str(e.out)], ["input"]),
    Case("augment-split/input-missing", lambda e: SPL(e, input=str(e.path("noaug"))), ["noaug"]),
    Case("augment-split/input-empty-dir", lambda e: SPL(e, input=e.dir("emptyaug")), ["emptyaug"]),
    Case("augment-split/input-bad-utf8", lambda e: SPL(e, input=e.write("bad.jsonl", bad_utf8(aug_record(0)))), ["bad.jsonl:2"]),
    Case("augment-split/input-not-augmented", lambda e: SPL(e, input=e.jsonl("plain.jsonl", [{"id": "a", "text": "x"}])), ["plain.jsonl"]),
    Case(
        "augment-split/input-duplicate-id",
        lambda e: SPL(e, input=e.jsonl("dup.jsonl", [aug_record(0), aug_record(1, "d0#0000")])),
        ["dup.jsonl", "d0#0000"],
    ),
    Case("augment-split/out-under-a-file", lambda e: SPL(e, "--out", str(e.file_parent() / "split")), ["afile"]),
]


# -- augment tasks ----------------------------------------------------------------------------------------------
def TSK(e: Env, *extra: str, input: str | None = None) -> list[str]:
    return [
        "augment",
        "tasks",
        input or str(e.a.split),
        "--out",
        str(e.out),
        "--tokenizer",
        str(e.a.tok),
        "--min-prefix-tokens",
        "4",
        *extra,
    ]


TASKS = [
    Case("augment-tasks/max-reference-tokens-zero", lambda e: TSK(e, "--max-reference-tokens", "0"), ["max_reference_tokens"]),
    Case(
        "augment-tasks/max-reference-sentences-negative", lambda e: TSK(e, "--max-reference-sentences", "-2"), ["max_reference_sentences"]
    ),
    Case("augment-tasks/tasks-per-chunk-zero", lambda e: TSK(e, "--tasks-per-chunk", "0"), ["tasks_per_chunk"]),
    Case("augment-tasks/min-prefix-tokens-negative", lambda e: TSK(e, "--min-prefix-tokens", "-1"), ["min_prefix_tokens"]),
    Case("augment-tasks/tokenizer-missing", lambda e: TSK(e, "--tokenizer", str(e.path("notok"))), ["notok"]),
    Case("augment-tasks/input-missing", lambda e: TSK(e, input=str(e.path("nosplit"))), ["nosplit"]),
    Case("augment-tasks/input-not-augmented", lambda e: TSK(e, input=e.jsonl("plain.jsonl", [{"id": "a", "text": "x"}])), ["plain.jsonl"]),
    Case("augment-tasks/prompt-missing-prefix", lambda e: TSK(e, "--prompt", e.write("t.txt", "Continue the text.")), ["{prefix}"]),
    Case("augment-tasks/prompt-unknown-placeholder", lambda e: TSK(e, "--prompt", e.write("t.txt", "{prefix} in {style}")), ["style"]),
    Case("augment-tasks/out-under-a-file", lambda e: TSK(e, "--out", str(e.file_parent() / "tasks")), ["afile"]),
]


# -- judge ------------------------------------------------------------------------------------------------------
def JDG(e: Env, *extra: str, input: str | None = None) -> list[str]:
    return ["judge", input or str(e.a.pairs), "--out", str(e.out), "--judge", "llm", *extra]


def pair() -> dict:
    return {"completion": "<think>t</think> the cat", "reference": "the cat"}


JUDGE = [
    Case("judge/batch-size-zero", lambda e: JDG(e, "--batch-size", "0"), ["batch_size"]),
    Case("judge/batch-size-negative", lambda e: JDG(e, "--batch-size", "-4"), ["batch_size"]),
    Case("judge/threshold-two", lambda e: JDG(e, "--judge", "token_f1", "--threshold", "2"), ["threshold"]),
    Case("judge/threshold-nan", lambda e: JDG(e, "--judge", "token_f1", "--threshold", "nan"), ["threshold"]),
    Case("judge/max-new-tokens-zero", lambda e: JDG(e, "--max-new-tokens", "0"), ["max_new_tokens"]),
    Case("judge/cache-is-a-directory", lambda e: JDG(e, "--cache", e.dir("cachedir")), ["cachedir"]),
    Case("judge/cache-under-a-file", lambda e: JDG(e, "--cache", str(e.file_parent() / "cache.jsonl")), ["afile"]),
    Case(
        "judge/cache-bad-utf8",
        lambda e: JDG(e, "--cache", e.write("cache.jsonl", bad_utf8({"key": "k", "score": 1.0, "label": "YES", "reason": "r"}))),
        ["cache.jsonl"],
    ),
    Case(
        "judge/prompt-unknown-placeholder",
        lambda e: JDG(e, "--prompt", e.write("j.txt", "{candidate} vs {reference}; {rubric}")),
        ["rubric"],
    ),
    Case("judge/prompt-missing-reference", lambda e: JDG(e, "--prompt", e.write("j.txt", "Is {candidate} right?")), ["{reference}"]),
    Case("judge/prompt-file-missing", lambda e: JDG(e, "--prompt", str(e.path("nope.txt"))), ["nope.txt"]),
    Case("judge/input-missing-reference", lambda e: JDG(e, input=e.jsonl("p.jsonl", [{"completion": "x"}])), ["p.jsonl:1", "reference"]),
    Case(
        "judge/input-candidate-not-string",
        lambda e: JDG(e, input=e.jsonl("p.jsonl", [{"completion": ["x"], "reference": "y"}])),
        ["p.jsonl:1", "completion"],
    ),
    Case(
        "judge/input-plain-pairs-under-thoughts",  # would score every pair 0 with exit code 0
        lambda e: JDG(e, input=e.jsonl("p.jsonl", [{"completion": "the cat", "reference": "the cat"}])),
        ["p.jsonl", "--no-thoughts"],
    ),
    Case("judge/input-empty", lambda e: JDG(e, input=e.write("p.jsonl", "")), ["p.jsonl"]),
    Case("judge/input-bad-utf8", lambda e: JDG(e, input=e.write("p.jsonl", bad_utf8(pair()))), ["p.jsonl:2"]),
    Case("judge/input-truncated", lambda e: JDG(e, input=e.write("p.jsonl", truncated_jsonl([pair(), pair(), pair()]))), ["p.jsonl:3"]),
    Case("judge/max-concurrency-zero", lambda e: JDG(e, "--backend.max-concurrency", "0"), ["max_concurrency"]),
    Case("judge/timeout-zero", lambda e: JDG(e, "--backend.timeout-s", "0"), ["timeout_s"]),
    Case("judge/openai-without-base-url", lambda e: JDG(e, "--backend.backend", "openai", "--backend.model", "m"), ["base_url"]),
    Case("judge/out-under-a-file", lambda e: JDG(e, "--out", str(e.file_parent() / "j")), ["afile"]),
    Case("judge/out-unwritable", lambda e: JDG(e, "--out", str(e.unwritable())), [lambda e: str(e.unwritable().parent)]),
    Case("judge/unknown-backend-key", lambda e: JDG(e, "backend.url=http://x"), ["backend.url"]),
]


CASES = AUGMENT + SPLIT + TASKS + JUDGE


@pytest.mark.parametrize("case", params(CASES))
def test_hostile(case: Case, env: Env, capsys) -> None:
    check_case(case, env, capsys)


def test_failed_augment_leaves_nothing_that_blocks_the_corrected_rerun(env: Env, capsys) -> None:
    """A failed augment (bad UTF-8) must not leave a 'failed' run directory: the corrected re-run succeeds."""
    from hostile_support import run_cli

    good = env.jsonl("docs.jsonl", [doc(0), doc(1)])
    env.write("docs.jsonl", bad_utf8(doc(0)))
    first = run_cli(AUG(env, input=good), capsys)
    assert first.code == 2, first.err
    env.jsonl("docs.jsonl", [doc(0), doc(1)])  # the user fixes the file and runs the same command again
    second = run_cli(AUG(env, input=good), capsys)
    assert second.code == 0, f"the corrected re-run was refused: {second.err.strip()}"
    assert json.loads((env.out / "midtrain.json").read_text())["status"] == "complete"

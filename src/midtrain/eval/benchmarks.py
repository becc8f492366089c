"""Benchmark registry, loading (local files or the Hugging Face hub) and prompt formats.

Registry: GSM8K, MATH-500, AMC23, AIME 2024, AIME 2025, OlympiadBench (math, scored with math-verify),
GPQA-Diamond (science) and MMLU-STEM (general), multiple choice scored by option letter. Local files follow
``shared/benchmarks/README.md``: ``<data_root>/<name>/test.jsonl`` (GPQA-Diamond ``test.jsonl.gz``, read compressed
and never written out in plain text), one JSON object per line with ``id``, ``problem``, ``answer`` (+ ``choices``
for multiple choice). Any other JSONL with those fields is a custom benchmark (:func:`load_file`).

Data root, in order: the ``data_root`` argument, ``$MIDTRAIN_DATA_ROOT`` (the shared data directory holding
``benchmarks/``, or the benchmark directory itself), ``shared/benchmarks`` next to the repo checkout,
``../shared/benchmarks`` from the current directory. ``source="hub"`` (or ``"auto"`` when the local file
is missing) loads the same test split through ``datasets.load_dataset`` and maps it to the local record format;
this needs a network connection and is never used by default.

Prompt formats (:func:`build_prompt`):

- ``fewshot`` — base models: ``n_shots`` worked examples (written for this project, not taken from any test
  set) as ``Question: …\\nAnswer: … \\boxed{…}``, then ``Question: {problem}\\nAnswer:``; generation stops at the
  next ``Question:``.
- ``think`` — thinking models without a chat template: ``Question: {problem + instruction}\\nAnswer: <think>\\n``;
  the model thinks, closes ``</think>`` and answers (only the text after ``</think>`` is scored).
- ``chat`` — the tokenizer's chat template with one user turn (problem + instruction) and, with ``think=True``,
  the assistant turn opened with ``<think>\\n`` unless the template already did. A tokenizer without a chat
  template is a ``ConfigError`` (``auto`` picks ``chat`` when there is a template and ``think`` otherwise).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from midtrain.data.corpus import iter_records
from midtrain.data.records import require
from midtrain.errors import ConfigError, DataError
from midtrain.eval.scoring import Kind
from midtrain.thoughts import THINK_OPEN, opens_thought

Source = Literal["local", "hub", "auto"]
PromptFormat = Literal["auto", "fewshot", "think", "chat"]
ENV_DATA_ROOT = "MIDTRAIN_DATA_ROOT"


@dataclass(frozen=True)
class Benchmark:
    name: str
    file: str  # path under the data root
    kind: Kind  # "math" (math-verify) or "choice" (option letter)
    domain: str  # for the domain-weighted macro average: math | science | general
    hub: tuple[str, str | None, str] | None = None  # (dataset id, config, split) for online users
    title: str = ""


REGISTRY: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark("gsm8k", "gsm8k/test.jsonl", "math", "math", ("openai/gsm8k", "main", "test"), "GSM8K"),
        Benchmark("math500", "math500/test.jsonl", "math", "math", ("HuggingFaceH4/MATH-500", None, "test"), "MATH-500"),
        Benchmark("amc23", "amc23/test.jsonl", "math", "math", ("math-ai/amc23", None, "test"), "AMC23"),
        Benchmark("aime2024", "aime2024/test.jsonl", "math", "math", ("HuggingFaceH4/aime_2024", None, "train"), "AIME 2024"),
        Benchmark("aime2025", "aime2025/test.jsonl", "math", "math", ("MathArena/aime_2025", None, "train"), "AIME 2025"),
        Benchmark(
            "olympiadbench",
            "olympiadbench/test.jsonl",
            "math",
            "math",
            ("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train"),
            "OlympiadBench",
        ),
        Benchmark(
            "gpqa_diamond", "gpqa_diamond/test.jsonl.gz", "choice", "science", ("Idavidrein/gpqa", "gpqa_diamond", "train"), "GPQA-Diamond"
        ),
        Benchmark("mmlu_stem", "mmlu_stem/test.jsonl", "choice", "general", ("TIGER-Lab/MMLU-STEM", None, "test"), "MMLU-STEM"),
    ]
}
ALIASES = {
    "math-500": "math500",
    "math_500": "math500",
    "aime24": "aime2024",
    "aime25": "aime2025",
    "aime_2024": "aime2024",
    "aime_2025": "aime2025",
    "olympiad": "olympiadbench",
    "gpqa": "gpqa_diamond",
    "gpqa-diamond": "gpqa_diamond",
    "gpqa-d": "gpqa_diamond",
    "mmlu-stem": "mmlu_stem",
    "amc": "amc23",
}


def resolve_name(name: str) -> Benchmark:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in REGISTRY:
        import difflib

        close = difflib.get_close_matches(key, list(REGISTRY) + list(ALIASES), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown benchmark '{name}'{hint}; registered: {', '.join(REGISTRY)}")
    return REGISTRY[key]


def default_data_roots() -> list[Path]:
    """Candidate data roots, best first (see the module docstring)."""
    out = []
    if os.environ.get(ENV_DATA_ROOT):
        # The variable names the shared data directory (``benchmarks/`` and ``datasets/`` beside each other, as
        # ``../shared``), or the benchmark directory itself: the first that exists is used.
        env = Path(os.environ[ENV_DATA_ROOT]).expanduser()
        out += [env / "benchmarks", env]
    repo = Path(__file__).resolve().parents[3]  # src/midtrain/eval/benchmarks.py → the checkout
    out += [repo.parent / "shared" / "benchmarks", Path.cwd().parent / "shared" / "benchmarks"]
    return list(dict.fromkeys(out))  # run from the checkout, the last two are one directory


def data_root(explicit: str | Path | None = None) -> Path:
    """The benchmark data root; an explicit root must exist."""
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_dir():
            raise ConfigError(f"key 'data_root': {p} is not a directory")
        return p
    cands = default_data_roots()
    for p in cands:
        if p.is_dir():
            return p
    raise DataError(f"no benchmark data root found (tried {', '.join(map(str, cands))}); set data_root or ${ENV_DATA_ROOT}")


def benchmark_path(bench: Benchmark, root: str | Path | None = None) -> Path:
    return data_root(root) / bench.file


# -- loading ----------------------------------------------------------------------------------------------------
OPTION_LETTERS = tuple("ABCDEFGHIJ")


def load_file(path: str | Path, *, kind: Kind | None = None, limit: int = 0) -> list[dict[str, Any]]:
    """Records of a benchmark JSONL (``id``, ``problem``, ``answer``); errors name file and line.

    ``kind=None`` infers multiple choice from a ``choices`` list on the first record.
    """
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for rec in iter_records(path):
        require(rec, ["id", "problem", "answer"], path)
        line = rec.get("_line", "?")
        rec["id"] = str(rec["id"])
        if rec["id"] in seen:
            raise DataError(f"{path}:{line}: duplicate id '{rec['id']}' (first on line {seen[rec['id']]})")
        seen[rec["id"]] = line
        if not isinstance(rec["problem"], str) or not rec["problem"].strip():
            raise DataError(f"{path}:{line}: 'problem' must be a non-empty string")
        if rec["answer"] is None or str(rec["answer"]).strip() == "":
            raise DataError(f"{path}:{line}: empty 'answer'")
        rec["answer"] = str(rec["answer"])
        choice = kind == "choice" or (kind is None and isinstance(rec.get("choices"), list))
        if choice and rec["answer"].strip().upper() not in OPTION_LETTERS:  # one letter: "AB" is no option
            raise DataError(f"{path}:{line}: multiple-choice answer must be an option letter, got {rec['answer']!r}")
        out.append(rec)
        if limit and len(out) >= limit:
            break
    if not out:
        raise DataError(f"empty benchmark: {path} has no records")
    return out


def infer_kind(records: list[dict[str, Any]]) -> Kind:
    return "choice" if isinstance(records[0].get("choices"), list) else "math"


def load_benchmark(
    name: str, *, root: str | Path | None = None, source: Source = "local", limit: int = 0
) -> tuple[Benchmark, list[dict[str, Any]], str]:
    """(registry entry, records, where they came from). ``limit`` keeps the first records (0 = all)."""
    bench = resolve_name(name)
    if source == "hub":
        return bench, load_hub(bench, limit=limit), f"hub:{bench.hub[0] if bench.hub else '?'}"
    try:
        path = benchmark_path(bench, root)
    except DataError:
        if source == "auto":
            return bench, load_hub(bench, limit=limit), f"hub:{bench.hub[0] if bench.hub else '?'}"
        raise
    if not path.is_file():
        if source == "auto":
            return bench, load_hub(bench, limit=limit), f"hub:{bench.hub[0] if bench.hub else '?'}"
        raise DataError(f"benchmark file not found: {path} (set data_root, ${ENV_DATA_ROOT}, or source=hub when online)")
    return bench, load_file(path, kind=bench.kind, limit=limit), str(path)


def _strip_float(x: Any) -> str:
    s = str(x).strip()
    return s[:-2] if s.endswith(".0") else s


def _gsm8k(rec: dict[str, Any], i: int) -> dict[str, Any]:
    return {
        "id": f"gsm8k-test-{i}",
        "problem": rec["question"],
        "solution": rec["answer"],
        "answer": rec["answer"].split("####")[-1].strip().replace(",", ""),
    }


def _gpqa(rec: dict[str, Any], i: int) -> dict[str, Any]:
    rid = rec.get("Record ID", str(i))
    correct = rec["Correct Answer"].strip()
    choices = [correct] + [rec[f"Incorrect Answer {j}"].strip() for j in (1, 2, 3)]
    random.Random("gpqa_diamond-" + rid).shuffle(choices)
    idx = choices.index(correct)
    return {
        "id": f"gpqa_diamond-{rid}",
        "problem": rec["Question"].strip(),
        "choices": choices,
        "answer": "ABCD"[idx],
        "answer_index": idx,
        "solution": rec.get("Explanation", ""),
        "domain": rec.get("High-level domain"),
    }


def _mmlu(rec: dict[str, Any], i: int) -> dict[str, Any]:
    idx = int(rec["answer"])
    return {
        "id": f"mmlu_stem-{rec.get('subject', 'x')}-{i}",
        "problem": rec["question"],
        "choices": list(rec["choices"]),
        "answer": "ABCD"[idx],
        "answer_index": idx,
        "subject": rec.get("subject"),
    }


def _olympiad(rec: dict[str, Any], i: int) -> dict[str, Any]:
    final = rec.get("final_answer") or [""]
    sols = rec.get("solution") or []
    return {
        "id": f"olympiadbench-{rec.get('id', i)}",
        "problem": rec["question"],
        "answer": str(final[0]).strip().strip("$"),
        "solution": sols[0] if isinstance(sols, list) and sols else sols,
        "error": rec.get("error"),
        "unit": rec.get("unit"),
        "answer_type": rec.get("answer_type"),
    }


def _generic(prefix: str) -> Callable[[dict[str, Any], int], dict[str, Any]]:
    def f(rec: dict[str, Any], i: int) -> dict[str, Any]:
        rid = rec.get("unique_id") or rec.get("id") or rec.get("problem_idx") or i
        rid = str(rid)
        answer = _strip_float(rec["answer"])
        if answer.isdigit():
            answer = answer.lstrip("0") or "0"  # AIME "025" -> "25"
        return {
            **rec,
            "id": rid if prefix == "" else f"{prefix}-{rid}",
            "problem": rec.get("problem") or rec.get("question"),
            "answer": answer,
        }

    return f


HUB_MAPPERS: dict[str, Callable[[dict[str, Any], int], dict[str, Any]]] = {
    "gsm8k": _gsm8k,
    "math500": _generic(""),
    "amc23": _generic("amc23"),
    "aime2024": _generic("aime2024"),
    "aime2025": _generic("aime2025"),
    "olympiadbench": _olympiad,
    "gpqa_diamond": _gpqa,
    "mmlu_stem": _mmlu,
}


def load_hub(bench: Benchmark, *, limit: int = 0) -> list[dict[str, Any]]:
    """The benchmark's test split from the Hugging Face hub, mapped to local records (needs a network)."""
    if bench.hub is None:
        raise DataError(f"benchmark '{bench.name}' has no hub source")
    try:
        import datasets
    except ImportError:
        raise DataError("source=hub needs the 'datasets' package") from None
    repo, config, split = bench.hub
    try:
        ds = datasets.load_dataset(repo, config, split=split)
    except Exception as e:  # noqa: BLE001 - offline, gated, renamed: one clear line
        raise DataError(
            f"cannot load '{repo}' from the Hugging Face hub ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    mapper = HUB_MAPPERS[bench.name]
    out = []
    for i, rec in enumerate(ds):
        out.append(mapper(dict(rec), i))
        if limit and len(out) >= limit:
            break
    return out


# -- prompts ----------------------------------------------------------------------------------------------------
MATH_INSTRUCTION = "Reason step by step, and put your final answer within \\boxed{}."
CHOICE_INSTRUCTION = "Reason step by step, then give the letter of the correct option within \\boxed{} (for example \\boxed{A})."

# Worked examples written for this project (no benchmark test item is used as an exemplar).
MATH_SHOTS = [
    (
        "A baker makes 4 trays of 12 rolls and sells all but 5 of them. How many rolls does he sell?",
        "He makes 4 * 12 = 48 rolls. He sells 48 - 5 = 43 of them. The final answer is $\\boxed{43}$.",
    ),
    (
        "What is the value of $\\frac{3}{4} + \\frac{1}{6}$?",
        "With the common denominator 12, $\\frac{9}{12} + \\frac{2}{12} = \\frac{11}{12}$. The final answer is $\\boxed{\\frac{11}{12}}$.",
    ),
    (
        "Solve for $x$: $5x - 7 = 2x + 8$.",
        "Subtracting $2x$ from both sides gives $3x - 7 = 8$, so $3x = 15$ and $x = 5$. The final answer is $\\boxed{5}$.",
    ),
    (
        "A train covers 180 km in 2.5 hours. What is its average speed in km per hour?",
        "The average speed is 180 / 2.5 = 72 km per hour. The final answer is $\\boxed{72}$.",
    ),
    (
        "How many positive divisors does 36 have?",
        "$36 = 2^2 \\cdot 3^2$, so it has $(2+1)(2+1) = 9$ positive divisors. The final answer is $\\boxed{9}$.",
    ),
]
CHOICE_SHOTS = [
    (
        "Which gas makes up most of the Earth's atmosphere?",
        ["Oxygen", "Carbon dioxide", "Nitrogen", "Argon"],
        "About 78% of dry air is nitrogen. The final answer is $\\boxed{C}$.",
    ),
    (
        "What is the derivative of $x^3$?",
        ["$3x^2$", "$x^2$", "$3x$", "$x^4/4$"],
        "By the power rule the derivative of $x^3$ is $3x^2$. The final answer is $\\boxed{A}$.",
    ),
    (
        "Which particle carries a negative electric charge?",
        ["Proton", "Neutron", "Photon", "Electron"],
        "The electron has charge $-e$. The final answer is $\\boxed{D}$.",
    ),
]


def format_choices(choices: list[str]) -> str:
    return "\n".join(f"{'ABCDEFGHIJ'[i]}) {c}" for i, c in enumerate(choices))


def question_text(rec: dict[str, Any], kind: Kind, *, instruction: bool = True) -> str:
    body = rec["problem"].strip()
    if kind == "choice":
        body += "\n\n" + format_choices(list(rec.get("choices") or []))
    if instruction:
        body += "\n\n" + (CHOICE_INSTRUCTION if kind == "choice" else MATH_INSTRUCTION)
    return body


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def resolve_format(fmt: PromptFormat, tokenizer: Any, where: str = "tokenizer") -> Literal["fewshot", "think", "chat"]:
    """``auto`` → ``chat`` when the tokenizer has a chat template, else ``think``; ``chat`` without one is an error.

    midtrain's own plain-text template counts as none: such a model was trained on raw text, its "chat" would be
    the bare question without roles (the plain '<think>' prompt is what it knows)."""
    from midtrain.models.tokenizer import is_plain_chat_template

    chat = has_chat_template(tokenizer) and not is_plain_chat_template(tokenizer)
    if fmt == "auto":
        return "chat" if chat else "think"
    if fmt == "chat" and not chat:
        raise ConfigError(
            f"key 'prompt_format': 'chat' needs a chat template, but the {where} has none (or midtrain's plain-text one); "
            "use prompt_format=think (plain '<think>' prompt), fewshot (base models) or auto"
        )
    return fmt


def stop_strings(fmt: str) -> list[str]:
    return ["\nQuestion:"] if fmt == "fewshot" else []


def build_prompt(
    rec: dict[str, Any],
    kind: Kind,
    fmt: Literal["fewshot", "think", "chat"],
    *,
    tokenizer: Any = None,
    n_shots: int = 4,
    think: bool = True,
) -> str:
    """The prompt text for one record (see the module docstring)."""
    if fmt == "fewshot":
        parts = []
        if kind == "choice":
            for q, ch, a in CHOICE_SHOTS[:n_shots]:
                parts.append(f"Question: {question_text({'problem': q, 'choices': ch}, kind, instruction=False)}\nAnswer: {a}\n\n")
        else:
            for q, a in MATH_SHOTS[:n_shots]:
                parts.append(f"Question: {q}\nAnswer: {a}\n\n")
        return "".join(parts) + f"Question: {question_text(rec, kind, instruction=False)}\nAnswer:"
    if fmt == "think":
        return f"Question: {question_text(rec, kind)}\nAnswer: {THINK_OPEN}\n"
    if tokenizer is None or not has_chat_template(tokenizer):
        raise ConfigError("key 'prompt_format': 'chat' needs a tokenizer with a chat template")
    messages = [{"role": "user", "content": question_text(rec, kind)}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=think)
    if think and not opens_thought(prompt):
        prompt += THINK_OPEN + "\n"
    return prompt


__all__ = [
    "Benchmark",
    "REGISTRY",
    "resolve_name",
    "data_root",
    "default_data_roots",
    "benchmark_path",
    "load_file",
    "load_benchmark",
    "load_hub",
    "infer_kind",
    "build_prompt",
    "resolve_format",
    "stop_strings",
    "question_text",
    "has_chat_template",
]

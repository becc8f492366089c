"""``midtrain eval score``: score completions produced elsewhere (a vLLM server, lm-eval, another toolkit).

Algorithm: each ``{"id", "completion"}`` line (several per id; an optional ``sample`` index) is scored exactly as
``midtrain eval`` scores its own samples (:func:`midtrain.eval.evaluate.rows_for`: math-verify, the option letter,
or process verification for synthetic problems), then summarised per benchmark (mean@k, pass@k, maj@k) or, for
synthetic problems, in the one schema of :mod:`midtrain.synth.summary` (the one ``midtrain synth verify`` prints),
overall keys at the top level. Ids not in the benchmark are an error naming file and line; problems without completions are counted as
``missing``. With ``--out`` the run directory holds ``samples.jsonl`` and ``summary.json``.

``--format lm-eval`` reads lm-evaluation-harness ``--log_samples`` files (``samples_<task>_<date>.jsonl``): one
line per document and filter with ``doc_id``, ``doc`` (the dataset row), ``target``, ``arguments``, ``resps`` (per
request, the raw generations, several with ``repeats``) and ``filtered_resps``. The raw generations are scored
(midtrain extracts the answer itself, lm-eval's filters are not needed); a document repeated under another filter
is read once. A line names its problem by ``doc["id"]``/``doc["unique_id"]`` when that is a benchmark id, else by
its question text (``problem``/``question``/``Question``, whitespace-normalised), else by ``doc_id`` as the
position in the benchmark file (the same split, in order). Log-likelihood samples (multiple choice scored by
log-probability) hold no text and are an error. ``auto`` (the default) picks lm-eval when the first line has
``doc_id`` and ``resps``.

Launch: ``midtrain eval score --benchmark gsm8k --completions vllm-out.jsonl --json``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from midtrain.config import Config, param
from midtrain.data.jsonl import iter_jsonl
from midtrain.data.records import where
from midtrain.errors import ConfigError, DataError
from midtrain.eval.benchmarks import (
    Source,
    infer_kind,
    load_benchmark,
    load_file,
)
from midtrain.eval.evaluate import Task, rows_for, thinking_token_counts
from midtrain.eval.summary import summarize_benchmark
from midtrain.fileio import atomic_write_json
from midtrain.models import generation
from midtrain.outputs import SAMPLES, SUMMARY
from midtrain.runs import open_run
from midtrain.synth.summary import OPS_RENAMED, VERIFIABLE, OpRangeConfig, flatten, load_problems, summarize


@dataclass
class ScoreConfig(Config):
    RENAMED: ClassVar[dict[str, str]] = OPS_RENAMED

    completions: str = param(
        "", "JSONL of {id, completion} lines (several per id allowed; optional 'sample'), or lm-eval --log_samples output.", path="file"
    )
    format: Literal["auto", "midtrain", "lm-eval"] = param(
        "auto", "Completions file format: midtrain {id, completion} lines, lm-eval --log_samples JSONL, or auto (by the first line)."
    )
    benchmark: str = param("", "Registered benchmark the completions answer (see midtrain eval --help).")
    data: str = param(
        "", "Custom benchmark JSONL (id, problem, answer; + choices for multiple choice) instead of --benchmark.", path="file"
    )
    synthetic: str = param("", "Synthetic problem JSONL instead of --benchmark (process-verified with midtrain.synth).", path="file")
    data_root: str = param(
        "", "Benchmark data root (default: $MIDTRAIN_DATA_ROOT, else shared/benchmarks next to the checkout).", path="dir"
    )
    source: Source = param("local", "Where a registered benchmark comes from: local, hub (online) or auto.")
    thinking: bool = param(
        False, "Completions start inside an open '<think>' (the prompt opened it): text before '</think>' is never scored."
    )
    tokenizer: str = param("", "Tokenizer directory to count response/thinking tokens (optional).", path="dir")
    ops: OpRangeConfig = param(OpRangeConfig(), "The op ranges synthetic results are grouped by.")
    out: str = param("", "Optional output directory for samples.jsonl + summary.json.", path="dir")
    overwrite: bool = param(False, "Replace an existing output directory holding a different run.")

    def check(self) -> None:
        if not self.completions:
            raise ConfigError("key 'completions': give the completions JSONL")
        if sum(map(bool, (self.benchmark, self.data, self.synthetic))) != 1:
            raise ConfigError("key 'benchmark': give exactly one of benchmark, data or synthetic")
        self.ops.validate("ops.")  # also when the section was built in Python rather than parsed


@dataclass
class ScoreResult:
    summary_: dict[str, Any]
    out: str = ""

    def to_dict(self) -> dict[str, Any]:
        return self.summary_

    def summary(self) -> str:
        s = self.summary_
        if "verified_pass_at_k" in s:
            return f"synthetic: n={s['n']} verified pass@1={s['verified_pass_at_k'].get('1')} hacking={s['hacking_rate']}"
        return (
            f"{s.get('benchmark')}: n={s['n']} samples={s['samples']} accuracy={s['accuracy']:.4f} "
            f"mean@{s['k']}={s['mean_at_k']:.4f} pass@k={s['pass_at_k']} no_answer={s['no_answer']}"
        )


def read_completions(path: str | Path, ids: set[str]) -> list[dict[str, Any]]:
    """Completion lines grouped with sample indices; unknown ids, bad or repeated ``(id, sample)`` pairs and bad
    lines name file and line."""
    out: list[dict[str, Any]] = []
    counter: defaultdict[str, int] = defaultdict(int)
    seen: dict[tuple[str, int], Any] = {}
    for rec in iter_jsonl(path):
        line = rec.get("_line", "?")
        if "id" not in rec or "completion" not in rec:
            raise DataError(f"{path}:{line}: a completion line needs 'id' and 'completion'")
        rid = str(rec["id"])
        if rid not in ids:
            raise DataError(f"{path}:{line}: id '{rid}' is not in the benchmark")
        if not isinstance(rec["completion"], str):
            raise DataError(f"{path}:{line}: 'completion' must be a string")
        sample = rec.get("sample", counter[rid])
        counter[rid] += 1
        if isinstance(sample, float) and sample.is_integer():  # 3.0 from a writer that stores numbers as floats
            sample = int(sample)
        if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
            raise DataError(f"{path}:{line}: 'sample' must be an integer >= 0, got {sample!r}")
        if (rid, sample) in seen:
            raise DataError(f"{path}:{line}: id '{rid}' sample {sample} was already given on line {seen[rid, sample]}")
        seen[rid, sample] = line
        out.append({"id": rid, "sample": sample, "completion": rec["completion"]})
    if not out:
        raise DataError(f"no completions in {path}")
    return out


TEXT_KEYS = ("problem", "question", "Question", "input")


def norm_text(text: Any) -> str:
    return " ".join(str(text).split())


def sniff_format(path: str | Path) -> str:
    """``lm-eval`` when the first record of ``path`` looks like an lm-eval logged sample, else ``midtrain``."""
    for rec in iter_jsonl(path):
        return "lm-eval" if "doc_id" in rec and "resps" in rec else "midtrain"
    return "midtrain"


def lm_eval_id(rec: dict[str, Any], records: list[dict[str, Any]], by_id: set[str], by_text: dict[str, str], where: str) -> str:
    """The benchmark id a logged lm-eval sample answers (see the module docstring for the order of the rules)."""
    raw = rec.get("doc")
    doc: dict[str, Any] = raw if isinstance(raw, dict) else {}
    for key in ("id", "unique_id"):
        if str(doc.get(key)) in by_id:
            return str(doc[key])
    texts = [norm_text(doc[k]) for k in TEXT_KEYS if isinstance(doc.get(k), str)]
    for t in texts:
        if t in by_text:
            return by_text[t]
    if texts:
        raise DataError(f"{where}: doc_id {rec.get('doc_id')}: its question is not in the benchmark ({texts[0][:60]!r})")
    pos = rec.get("doc_id")
    if isinstance(pos, bool) or not isinstance(pos, int) or not 0 <= pos < len(records):
        raise DataError(f"{where}: doc_id {pos!r} is not a position in the benchmark's {len(records)} problems")
    return str(records[pos]["id"])


def read_lm_eval(path: str | Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """{id, sample, completion} rows from an lm-eval ``--log_samples`` file (raw generations, one doc once)."""
    by_id = {str(r["id"]) for r in records}
    by_text: dict[str, str] = {}
    for r in records:
        by_text.setdefault(norm_text(r.get("problem", "")), str(r["id"]))
    out: list[dict[str, Any]] = []
    seen: dict[str, Any] = {}
    for rec in iter_jsonl(path):
        loc = where(rec, path)
        if "doc_id" not in rec or "resps" not in rec:
            raise DataError(f"{loc}: an lm-eval sample line needs 'doc_id' and 'resps'")
        rid = lm_eval_id(rec, records, by_id, by_text, loc)
        resps = rec["resps"]
        if rid in seen:  # the same document under another filter: same generations
            if seen[rid] != resps:
                raise DataError(f"{loc}: doc '{rid}' appears again with other generations (two runs in one file?)")
            continue
        seen[rid] = resps
        texts = [x for req in resps for x in (req if isinstance(req, list) else [req])] if isinstance(resps, list) else []
        if not texts or not all(isinstance(x, str) for x in texts):
            raise DataError(f"{loc}: 'resps' holds no generated text (a log-likelihood task?); score generative (generate_until) tasks")
        out.extend({"id": rid, "sample": j, "completion": t} for j, t in enumerate(texts))
    if not out:
        raise DataError(f"no samples in {path}")
    return out


def score(cfg: ScoreConfig) -> ScoreResult:
    """Score completions produced elsewhere (e.g. by a vLLM server); see the module docstring."""
    tokenizer = None
    if cfg.tokenizer:
        from midtrain.models.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(cfg.tokenizer)
    if cfg.synthetic:
        records = load_problems(cfg.synthetic, required=VERIFIABLE)
        name, kind, domain, src = "synthetic", "synthetic", "synthetic", cfg.synthetic
    elif cfg.benchmark:
        bench, records, src = load_benchmark(cfg.benchmark, root=cfg.data_root or None, source=cfg.source)
        name, kind, domain = bench.name, bench.kind, bench.domain
    else:
        records, src = load_file(cfg.data), cfg.data
        name, kind, domain = Path(cfg.data).name.split(".")[0], infer_kind(records), "custom"
    fmt = sniff_format(cfg.completions) if cfg.format == "auto" else cfg.format
    if fmt == "lm-eval":
        comps = read_lm_eval(cfg.completions, records)
    else:
        comps = read_completions(cfg.completions, {r["id"] for r in records})
    task = Task(name, kind, domain, records, src, opened=[cfg.thinking] * len(records))  # type: ignore[arg-type]
    index = {r["id"]: i for i, r in enumerate(records)}
    items = [(index[c["id"]], c["sample"]) for c in comps]
    tok_counts = thinking_token_counts(tokenizer, [c["completion"] for c in comps]) if tokenizer else [None] * len(comps)
    gens = [generation.Generation(c["completion"], t, True) for c, t in zip(comps, tok_counts)]  # type: ignore[arg-type]
    rows = rows_for(task, gens, items, tokenizer)
    if kind == "synthetic":
        summary = {"benchmark": name, **flatten(summarize(rows, records, ranges=cfg.ops.resolve()))}
    else:
        summary = {"benchmark": name, "domain": domain, **summarize_benchmark(rows)}
    scored = {r["id"] for r in comps}
    summary["missing"] = sum(1 for r in records if r["id"] not in scored)
    if cfg.out:
        # the scored problems are an input like the completions: a changed problem file is a different run, and
        # `synth select` checks the file it pairs with these samples against this hash (same key as `midtrain eval`)
        inputs = {"completions": cfg.completions} | ({f"data:{name}": src} if Path(src).is_file() else {})
        with open_run(cfg.out, "eval_score", cfg, inputs, overwrite=cfg.overwrite) as run_:
            if not run_.cached:
                from midtrain.data.jsonl import write_jsonl

                write_jsonl(run_.path / SAMPLES, rows)
                atomic_write_json(run_.path / SUMMARY, summary)
                run_.finish({k: v for k, v in summary.items() if isinstance(v, (int, float))})
            summary = json.loads((run_.path / SUMMARY).read_text(encoding="utf-8"))
    return ScoreResult(summary, cfg.out)


__all__ = ["ScoreConfig", "ScoreResult", "read_completions", "read_lm_eval", "sniff_format", "score"]

"""``midtrain eval``: evaluate a model on real benchmarks and on the synthetic world.

Algorithm. For every benchmark (registry in :mod:`midtrain.eval.benchmarks`; custom JSONL files via ``data``) each
problem gets ``n_samples`` completions from the model (greedy for ``temperature=0``); each completion is scored
with :mod:`midtrain.eval.scoring` (math-verify, or the option letter for multiple choice) and appended, with fsync, to
``samples.jsonl`` as soon as its batch finishes. Metrics per benchmark (:func:`summarize_benchmark`): accuracy
over all samples, mean@k (the papers' mean@16 / mean@64 with ``n_samples`` = 16 / 64), unbiased pass@k for
k = 1, 2, 4, … ≤ ``n_samples``, majority-vote accuracy (maj@k, votes on the canonical answer), the share of
completions with no extractable answer, mean response and thinking length in tokens (the thinking is
:func:`midtrain.thoughts.thinking_part`: up to the last ``</think>``), truncation rate. Across
benchmarks: the plain macro average of mean@k and the domain-weighted macro average (PRISM): the mean over
domains (math, science, general, custom) of the mean over that domain's benchmarks, domains weighted equally
unless ``domain_weights`` says otherwise.

Synthetic world (``synthetic=problems.jsonl``, or ``synth_generate`` = SynthConfig mappings generated in-process
and saved as ``problems.jsonl``): the prompt is each record's ``prompt`` (ending in ``<think>``), generation
stops at ``</answer>``, and ``midtrain.synth.verify`` checks the trace. Per op range (``ops.scale`` paper: ID 2–10,
edge 11–14, hard 15–20; tiny: 2–5, 6–8, 9–12; or ``ops.ranges``), op, context and mode, the summary of
:mod:`midtrain.synth.summary` (the schema ``midtrain synth verify`` prints too): process-verified pass@1 and pass@k,
ProcessAcc, outcome accuracy, the hacking rate (right answer, wrong trace), mean rewards.

Outputs in ``out``: ``samples.jsonl`` (one line per completion) and ``summary.json``, plus the run metadata of
:mod:`midtrain.runs`. **Resumable**: re-running the same command after a crash or kill finds the finished
``(benchmark, id, sample)`` triples in ``samples.jsonl`` (a torn last line is dropped) and generates only the
rest. Sampling under a resume is not bit-identical to an uninterrupted run (batches differ).

Generation goes through the backends of :mod:`midtrain.llm.backends` (``complete``: raw prompts, stop strings, token
counts): batched ``transformers`` generation with a KV cache (:func:`midtrain.models.generation.generate`), or vLLM
when installed (``backend=vllm``; ``auto`` uses vLLM when it is importable and a GPU is present). The model is loaded
by :func:`midtrain.models.init.load_model`, which refuses missing or mis-shaped weights.

    midtrain eval runs/sft --benchmarks gsm8k math500 --n-samples 16 --temperature 0.6 --out runs/eval-sft
    midtrain eval runs/rl --synthetic data/synth-test.jsonl --n-samples 8 --temperature 1.0 --out runs/eval-synth
    midtrain eval runs/rl synth_generate='[{preset: tiny-edge, n: 64, render: compact, modulus: 10}]' \
        --ops.scale tiny --out runs/eval-synth-edge
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from midtrain.config import MAX_SEED, Config, param
from midtrain.console import log, progress
from midtrain.data.jsonl import append_jsonl, iter_jsonl_tolerant, repair_tail, write_jsonl
from midtrain.errors import ConfigError
from midtrain.eval.benchmarks import (
    PromptFormat,
    Source,
    build_prompt,
    infer_kind,
    load_benchmark,
    load_file,
    resolve_format,
    stop_strings,
)
from midtrain.eval.scoring import Kind, exit_with_parent, score_batch
from midtrain.eval.summary import macro_averages, summarize_benchmark
from midtrain.fileio import atomic_write_json
from midtrain.llm.backends import CompletionBackend, TransformersBackend, VLLMBackend
from midtrain.llm.config import BackendConfig, BackendKind
from midtrain.models import generation
from midtrain.outputs import SAMPLES, SUMMARY
from midtrain.runs import Result, open_run
from midtrain.synth.summary import OPS_RENAMED, VERIFIABLE, OpRangeConfig, load_problems, problems_from_specs, summarize, synth_config
from midtrain.synth.verify import sample_row
from midtrain.thoughts import THINK_OPEN, opens_thought, thinking_part


@dataclass
class EvalConfig(Config):
    RENAMED: ClassVar[dict[str, str]] = OPS_RENAMED

    model: str = param("", "Model checkpoint directory (or a hub id when online).", positional=True)
    out: str = param("", "Output run directory (samples.jsonl, summary.json).", path="dir")
    benchmarks: list[str] = param(
        [], "Registered benchmarks: gsm8k, math500, amc23, aime2024, aime2025, olympiadbench, gpqa_diamond, mmlu_stem."
    )
    data: list[str] = param(
        [], "Custom benchmark JSONL files (id, problem, answer; + choices for multiple choice), named by file stem.", path="file"
    )
    synthetic: str = param("", "Synthetic-world problem JSONL (midtrain synth generate); verified with midtrain.synth.verify.", path="file")
    synth_generate: list[dict[str, Any]] = param(
        [],
        "Generate the synthetic problems instead: one midtrain.synth SynthConfig mapping per set, e.g. synth_generate='[{preset: tiny-edge, n: 50, render: compact, modulus: 10}]'.",
    )
    ops: OpRangeConfig = param(OpRangeConfig(), "The op ranges synthetic results are grouped by.")
    synth_ranges: list[str] = param([], "Evaluate only synthetic problems whose op falls in these named ranges (empty: all).")
    tokenizer: str = param("", "Tokenizer directory (default: the model's).", path="dir")
    data_root: str = param(
        "", "Benchmark data root (default: $MIDTRAIN_DATA_ROOT, else shared/benchmarks next to the checkout).", path="dir"
    )
    source: Source = param("local", "Where registered benchmarks come from: local files, the HF hub (online), or auto (local, else hub).")
    prompt_format: PromptFormat = param(
        "auto",
        "fewshot (base models), think (plain '<think>' prompt), chat (chat template), auto (chat if the tokenizer has a template, else think).",
    )
    think: Literal["auto", "on", "off"] = param(
        "auto",
        "With prompt_format=chat: open a '<think>' block in the assistant turn. auto: only for thinking models (a chat template that knows <think> or enable_thinking, or a midtrain tokenizer with the <think> tag).",
    )
    n_shots: int = param(4, "Worked examples in the fewshot prompt.", ge=0)
    limit: int = param(0, "Evaluate only the first N problems of each benchmark / the synthetic file (0 = all).", ge=0)
    n_samples: int = param(1, "Completions per problem (k of mean@k; 16 or 64 in the papers).", ge=1)
    temperature: float = param(0.0, "Sampling temperature (0 = greedy).", ge=0)
    top_p: float = param(1.0, "Nucleus sampling threshold.", gt=0, le=1)
    max_new_tokens: int = param(512, "Generation budget per completion, in tokens.", ge=1)
    batch_size: int = param(32, "Completions generated per batch (transformers backend).", ge=1)
    score_workers: int = param(
        -1,
        "Background processes scoring one batch while the next generates; 0 = inline; -1 = auto (1 when generating on a GPU, else 0: on CPU a worker competes with generation).",
        ge=-1,
    )
    backend: Literal["auto", "transformers", "vllm"] = param("auto", "Generation backend; auto = vLLM when installed and a GPU is present.")
    dtype: Literal["float32", "bfloat16"] = param("float32", "Model weights dtype (transformers backend).")
    domain_weights: dict[str, float] = param(
        {}, "Weights of domains (math, science, general, custom) in the domain-weighted macro average; empty = equal.", ge=0
    )
    seed: int = param(0, "Sampling seed.", ge=0, le=MAX_SEED)
    overwrite: bool = param(False, "Replace an existing output directory holding a different run.")
    progress: bool = param(True, "Show a progress bar.")
    progress_every_s: float = param(
        30.0,
        "Without a terminal (a pipe, a log file): log a progress line at most every this many seconds, and at the end.",
        ge=0,
    )

    def check(self) -> None:
        if not self.model:
            raise ConfigError("key 'model': give a model checkpoint directory")
        if not self.out:
            raise ConfigError("key 'out': give an output directory")
        if not (self.benchmarks or self.data or self.synthetic or self.synth_generate):
            raise ConfigError("key 'benchmarks': give at least one of benchmarks, data, synthetic or synth_generate")
        if self.synthetic and self.synth_generate:
            raise ConfigError("keys 'synthetic' and 'synth_generate': give one of them, not both")
        for i, spec in enumerate(self.synth_generate):
            synth_config(spec, f"synth_generate[{i}]")
        if self.n_samples < 1:
            raise ConfigError("key 'n_samples': must be at least 1")
        if self.n_samples > 1 and self.temperature == 0:
            raise ConfigError("key 'n_samples': several samples per problem need temperature > 0 (greedy repeats itself)")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError("key 'temperature'/'top_p': need temperature >= 0 and 0 < top_p <= 1")
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.limit < 0 or self.n_shots < 0 or self.score_workers < -1:
            raise ConfigError("key 'max_new_tokens'/'batch_size'/'limit'/'n_shots'/'score_workers': out of range")
        self.ops.validate("ops.")  # also when the section was built in Python rather than parsed
        for name in self.synth_ranges:
            if name not in self.ranges():
                raise ConfigError(f"key 'synth_ranges': unknown range '{name}' (ranges: {', '.join(self.ranges())})")

    def ranges(self) -> dict[str, list[int]]:
        return self.ops.resolve()


# -- generation backends ----------------------------------------------------------------------------------------
def load_backend(cfg: EvalConfig, name: str, tokenizer: Any) -> tuple[CompletionBackend, int]:
    """The generation backend ``name`` of ``cfg`` (:mod:`midtrain.llm.backends`, the model loaded) and how many
    completions to ask it for at a time."""
    kind: BackendKind = "vllm" if name == "vllm" else "transformers"
    spec = BackendConfig(backend=kind, model=cfg.model, dtype=cfg.dtype, batch_size=cfg.batch_size, seed=cfg.seed, chat_template=False)
    if name == "vllm":  # exercised only where vLLM is installed (not in this repository's CPU tests)
        # vLLM batches continuously, so a chunk only bounds the work a kill loses; the checkpoint's own dtype
        return VLLMBackend(spec, tokenizer=cfg.tokenizer or cfg.model, dtype="auto"), 1024
    return TransformersBackend(spec, tokenizer=tokenizer), cfg.batch_size


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def pick_backend(choice: str) -> str:
    if choice != "auto":
        if choice == "vllm" and importlib.util.find_spec("vllm") is None:
            raise ConfigError("key 'backend': vllm is not installed (pip install 'midtrain[vllm]'), use backend=transformers")
        return choice
    if importlib.util.find_spec("vllm") is not None and _cuda():
        return "vllm"
    return "transformers"


def thinking_token_counts(tokenizer: Any, texts: Sequence[str | None]) -> list[int | None]:
    """Token counts of thinking spans (None where there was no thinking), one tokenizer call per batch."""
    idx = [i for i, t in enumerate(texts) if t is not None]
    out: list[int | None] = [None] * len(texts)
    if idx:
        enc = tokenizer([texts[i] for i in idx], add_special_tokens=False)["input_ids"]
        for i, ids in zip(idx, enc):
            out[i] = len(ids)
    return out


# -- tasks ------------------------------------------------------------------------------------------------------
@dataclass
class Task:
    """One thing to evaluate: a benchmark (or custom file) or the synthetic set."""

    name: str
    kind: Kind | Literal["synthetic"]
    domain: str
    records: list[dict[str, Any]]
    source: str
    title: str = ""
    prompts: list[str] = field(default_factory=list)
    opened: list[bool] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)


def _load_tasks(cfg: EvalConfig) -> list[Task]:
    tasks = []
    for name in cfg.benchmarks:
        bench, recs, src = load_benchmark(name, root=cfg.data_root or None, source=cfg.source, limit=cfg.limit)
        tasks.append(Task(bench.name, bench.kind, bench.domain, recs, src, bench.title))
    for path in cfg.data:
        recs = load_file(path, limit=cfg.limit)
        tasks.append(Task(Path(path).name.split(".")[0], infer_kind(recs), "custom", recs, str(path)))
    if cfg.synthetic or cfg.synth_generate:
        keep = {r: cfg.ranges()[r] for r in cfg.synth_ranges}
        if cfg.synthetic:
            recs, src = load_problems(cfg.synthetic, ranges=keep, limit=cfg.limit, required=VERIFIABLE), cfg.synthetic
        else:
            recs, src = problems_from_specs(cfg.synth_generate, ranges=keep, limit=cfg.limit), "generated"
        tasks.append(Task("synthetic", "synthetic", "synthetic", recs, src, "synthetic world", stop=["</answer>"]))
    names = [t.name for t in tasks]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"key 'data': benchmark names must be unique, '{sorted(dup)[0]}' appears twice")
    return tasks


def _payload(task: Task, gens: list[generation.Generation], items: list[tuple[int, int]]) -> list[tuple[str, dict[str, Any], bool]]:
    """What the scorer needs per sample: the completion, the record's answer fields, whether thinking was open."""
    keep = ("answer", "choices", "error")
    return [(g.text, {k: task.records[i].get(k) for k in keep}, task.opened[i]) for (i, _), g in zip(items, gens)]


def rows_for(
    task: Task,
    gens: list[generation.Generation],
    items: list[tuple[int, int]],
    tokenizer: Any,
    scores: Sequence[tuple[bool, str | None, str | None]] | None = None,
) -> list[dict[str, Any]]:
    """samples.jsonl rows of one batch (``scores`` from :func:`midtrain.eval.scoring.score_batch`, computed here if None)."""
    rows = []
    if task.kind == "synthetic":
        for (i, j), g in zip(items, gens):
            rows.append({"benchmark": task.name, **sample_row(task.records[i], j, g.text), "tokens": g.tokens, "finished": g.finished})
        return rows
    if scores is None:
        scores = score_batch(task.kind, _payload(task, gens, items))
    spans = [thinking_part(g.text, opened=task.opened[i]) for (i, _), g in zip(items, gens)]
    think = thinking_token_counts(tokenizer, spans) if tokenizer is not None else [None] * len(spans)
    for (i, j), g, t, (correct, answer, key) in zip(items, gens, think, scores):
        rec = task.records[i]
        rows.append(
            {
                "benchmark": task.name,
                "id": rec["id"],
                "sample": j,
                "completion": g.text,
                "answer": answer,
                "vote": key,
                "gold": rec["answer"],
                "correct": correct,
                "tokens": g.tokens,
                "thinking_tokens": t,
                "finished": g.finished,
            }
        )
    return rows


class _Scorer:
    """Scores batches in a background process so that generating the next batch overlaps scoring this one.

    ``workers=0`` (or a platform where a process pool cannot start) scores inline. The pool uses ``spawn``: the
    worker imports only :mod:`midtrain.eval.scoring` and runs math-verify on its main thread, so its timeouts work.
    """

    def __init__(self, workers: int):
        self.pool = None
        if workers > 0:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            try:
                self.pool = ProcessPoolExecutor(
                    max_workers=workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=exit_with_parent,
                    initargs=(os.getpid(),),
                )
            except (OSError, NotImplementedError, ValueError) as e:
                log(f"eval: scoring inline (no process pool: {e})")

    def submit(self, task: Task, gens: list[generation.Generation], items: list[tuple[int, int]]) -> Any:
        if self.pool is None or task.kind == "synthetic":
            return _Ready(None)  # synthetic verification and inline scoring happen in _rows_for
        return self.pool.submit(score_batch, task.kind, _payload(task, gens, items))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Ready:
    value: Any

    def result(self) -> Any:
        return self.value


def build_summary(
    cfg_like: dict[str, Any],
    tasks: list[Task],
    rows: list[dict[str, Any]],
    ks: Sequence[int] | None,
    domain_weights: dict[str, float],
    op_ranges: dict[str, list[int]],
) -> dict[str, Any]:
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_task[r.get("benchmark", "")].append(r)
    summary: dict[str, Any] = {**cfg_like, "benchmarks": {}}
    for t in tasks:
        ids = {r["id"] for r in t.records}
        trows = [r for r in by_task[t.name] if r["id"] in ids]
        if t.kind == "synthetic":
            summary["synthetic"] = summarize(trows, t.records, ks=ks, ranges=op_ranges)
        else:
            summary["benchmarks"][t.name] = {
                "title": t.title or t.name,
                "domain": t.domain,
                "kind": t.kind,
                "source": t.source,
                **summarize_benchmark(trows, ks),
            }
    summary.update(macro_averages(summary["benchmarks"], {b: s["domain"] for b, s in summary["benchmarks"].items()}, domain_weights))
    if not summary["benchmarks"]:
        del summary["benchmarks"]
    return summary


def flat_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    m: dict[str, Any] = {}
    for b, s in summary.get("benchmarks", {}).items():
        m[f"{b}.mean_at_k"] = s["mean_at_k"]
    for key in ("macro_avg", "domain_weighted_avg"):
        if summary.get(key) is not None:
            m[key] = summary[key]
    if "synthetic" in summary:
        for name, g in summary["synthetic"].get("by_range", {}).items():
            m[f"synthetic.{name}.pass_at_1"] = g["verified_pass_at_k"].get("1")
    return m


def thinks(choice: str, tokenizer: Any) -> bool:
    """Whether a chat prompt opens a '<think>' block: ``on``/``off``, or ``auto`` for a thinking model.

    Forcing '<think>' on a plain instruct model (SmolLM2, Llama-3-Instruct) makes its whole answer "thinking" that
    never closes, so a correct ``\\boxed{18}`` scores 0; a template that renders thinking itself (Qwen3's
    enable_thinking) or a model trained with midtrain's '<think>' tag is one that thinks.
    """
    if choice != "auto":
        return choice == "on"
    template = getattr(tokenizer, "chat_template", None) or ""
    text = " ".join(template.values()) if isinstance(template, dict) else str(template)
    if THINK_OPEN in text or "enable_thinking" in text:
        return True
    added = tokenizer.get_added_vocab() if hasattr(tokenizer, "get_added_vocab") else {}
    return THINK_OPEN in added


def _prepare_prompts(cfg: EvalConfig, tasks: list[Task], tokenizer: Any) -> str:
    """Fill each task's prompts, thinking flags and stop strings; returns the resolved prompt format."""
    fmt = "think"
    if any(t.kind != "synthetic" for t in tasks):
        fmt = resolve_format(cfg.prompt_format, tokenizer, f"tokenizer of '{cfg.tokenizer or cfg.model}'")
    think = thinks(cfg.think, tokenizer) if fmt == "chat" else True
    for t in tasks:
        if t.kind == "synthetic":
            t.prompts = [r["prompt"] for r in t.records]
            t.opened = [False] * len(t.records)
            continue
        t.prompts = [
            build_prompt(r, t.kind, fmt, tokenizer=tokenizer, n_shots=cfg.n_shots, think=think)  # type: ignore[arg-type]
            for r in t.records
        ]
        t.opened = [opens_thought(p) for p in t.prompts]
        t.stop = stop_strings(fmt)
    return fmt


def _generate_missing(
    cfg: EvalConfig, tasks: list[Task], samples: Path, backend_name: str, tokenizer: Any, on_append: Any, stats: dict[str, Any]
) -> tuple[int, int]:
    """Generate, score and append every (task, id, sample) not yet in ``samples``; returns (samples, tokens).

    ``stats`` receives the timing split: ``model_load_seconds``, ``generate_seconds`` (inside the backend's
    generate calls) and ``loop_seconds`` (generation + scoring + writes), so the eval's own overhead over raw
    generation is ``loop_seconds / generate_seconds - 1``, measured batch by batch in the same run.
    """
    repair_tail(samples)  # a kill mid-append leaves a torn last line: appends must start on a fresh one
    done = {(r.get("benchmark"), str(r["id"]), int(r["sample"])) for r in iter_jsonl_tolerant(samples)}
    todo = {
        t.name: [(i, j) for i, r in enumerate(t.records) for j in range(cfg.n_samples) if (t.name, r["id"], j) not in done] for t in tasks
    }
    total = sum(map(len, todo.values()))
    if done:
        log(f"eval: {len(done)} samples already in {samples}, {total} to generate")
    if not total:
        return 0, 0
    workers = cfg.score_workers if cfg.score_workers >= 0 else int(backend_name == "vllm" or _cuda())
    scorer = _Scorer(workers)  # started before the model loads: the worker imports while we load
    t_load = time.perf_counter()
    backend, per_call = load_backend(cfg, backend_name, tokenizer)
    stats["model_load_seconds"] = round(time.perf_counter() - t_load, 3)
    t0, n_gen, n_tok, t_gen = time.time(), 0, 0, 0.0
    pending: list[tuple[Task, list[generation.Generation], list[tuple[int, int]], Any]] = []

    def flush() -> None:  # write the scored batch (fsync'd: a kill loses at most the batches in flight)
        while pending:
            t, gens, chunk, fut = pending[0]
            append_jsonl(samples, rows_for(t, gens, chunk, tokenizer, fut.result()))
            pending.pop(0)
            on_append()

    try:
        with progress(log_every_s=cfg.progress_every_s) if cfg.progress else _NoBar() as bar:
            bar_task = bar.add_task("eval", total=total, info="")
            for t in tasks:
                items = sorted(todo[t.name], key=lambda ij: -len(t.prompts[ij[0]]))  # less padding per batch
                for start in range(0, len(items), per_call):
                    chunk = items[start : start + per_call]
                    t1 = time.perf_counter()
                    gens = backend.complete(
                        [t.prompts[i] for i, _ in chunk],
                        max_new_tokens=cfg.max_new_tokens,
                        temperature=cfg.temperature,
                        top_p=cfg.top_p,
                        stop=t.stop,
                        seed=cfg.seed + n_gen + len(done),
                    )
                    t_gen += time.perf_counter() - t1
                    fut = scorer.submit(t, gens, chunk)
                    flush()  # the previous batch, scored while this one generated
                    pending.append((t, gens, chunk, fut))
                    n_gen += len(chunk)
                    n_tok += sum(g.tokens for g in gens)
                    bar.update(bar_task, advance=len(chunk), info=f"{t.name} {n_tok / max(time.time() - t0, 1e-9):.0f} tok/s")
            flush()
    finally:
        try:
            flush()  # on an interrupt, keep what was already generated and scored
        except BaseException as e:  # noqa: BLE001 - the worker may have died with us; those samples are redone
            log(f"eval: {len(pending)} generated batch(es) not saved ({type(e).__name__})")
        scorer.close()
    stats.update(samples=n_gen, tokens=n_tok, generate_seconds=round(t_gen, 3), loop_seconds=round(time.time() - t0, 3))
    return n_gen, n_tok


def run(cfg: EvalConfig) -> Result:
    """Evaluate ``cfg.model``; see the module docstring."""
    from midtrain.models.tokenizer import load_tokenizer

    backend_name = pick_backend(cfg.backend)
    tasks = _load_tasks(cfg)  # bad input fails here, before the run directory exists
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
    fmt = _prepare_prompts(cfg, tasks, tokenizer)
    inputs = {f"data:{t.name}": t.source for t in tasks if Path(t.source).is_file()}
    for key, path in (("model", cfg.model), ("tokenizer", cfg.tokenizer)):
        if path and Path(path).is_dir():
            inputs[key] = path
    with open_run(cfg.out, "eval", cfg, inputs, overwrite=cfg.overwrite, seed=cfg.seed) as run_:
        if run_.cached:
            return Result.of(run_)
        if any(t.source == "generated" for t in tasks) and not (run_.path / "problems.jsonl").is_file():
            write_jsonl(run_.path / "problems.jsonl", next(t.records for t in tasks if t.source == "generated"))
        t0 = time.time()
        stats: dict[str, Any] = {}
        _generate_missing(cfg, tasks, run_.path / SAMPLES, backend_name, tokenizer, run_.keep, stats)
        rows = list(iter_jsonl_tolerant(run_.path / SAMPLES))
        head = {
            "kind": "eval",
            "model": cfg.model,
            "prompt_format": fmt,
            "n_samples": cfg.n_samples,
            "temperature": cfg.temperature,
            "max_new_tokens": cfg.max_new_tokens,
            "backend": backend_name,
        }
        summary = build_summary(head, tasks, rows, None, cfg.domain_weights, cfg.ranges())
        summary["generation"] = {**stats, "seconds": round(time.time() - t0, 3)}
        atomic_write_json(run_.path / SUMMARY, summary)
        for name, s in summary.get("benchmarks", {}).items():
            log(f"eval {name}: mean@{s['k']} {s['mean_at_k']:.4f}  pass@k {s['pass_at_k']}  no-answer {s['no_answer']}")
        for name, g in summary.get("synthetic", {}).get("by_range", {}).items():
            log(f"eval synthetic {name}: verified pass@1 {g['verified_pass_at_k'].get('1')}  hacking {g['hacking_rate']}")
        run_.finish(flat_metrics(summary))
        return Result.of(run_)


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *a: Any) -> None:
        return None

    def add_task(self, *a: Any, **k: Any) -> int:
        return 0

    def update(self, *a: Any, **k: Any) -> None:
        return None


# -- eval score -------------------------------------------------------------------------------------------------


__all__ = [
    "EvalConfig",
    "run",
    "summarize_benchmark",
    "macro_averages",
    "build_summary",
]

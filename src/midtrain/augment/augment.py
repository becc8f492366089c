"""``midtrain augment``: thinking augmentation of pretraining text (DESIGN §1.1 step 1).

Algorithm, per shard ``i`` of ``N``:

1. Read shard i's slice of the corpus (files, globs, shard dirs, datasets dirs: :func:`midtrain.data.corpus.iter_corpus`
   with ``shard=(i, N)``, whole documents, ≈ 1/N of the bytes; with ``--max-documents`` the first documents
   overall, assigned by ``sha256(id) mod N``), and cut each document into chunks
   of ≤ ``max_chunk_tokens`` tokens of the *target* model's tokenizer at paragraph or sentence boundaries
   (:mod:`midtrain.augment.chunking`). Chunk ids are ``<document id>#<index>``.
2. Chunks already in the shard file are skipped (resume); the rest go to the annotator in batches of
   ``batch_chunks`` with the prompt template (shipped ``prompts/augment.txt``, placeholder ``{text}``), several
   batches in flight for HTTP backends. With ``mode: insert`` the annotator is asked only for the thought at each
   of a few chosen sentence boundaries, and the record is assembled from the original text
   (:mod:`midtrain.augment.insert`). The programmatic backend answers by rule (:mod:`midtrain.augment.rules`);
   under it, synthetic problems (records with ``graph``) are annotated whole by the synthetic world instead.
3. Every answer is validated (:func:`midtrain.thoughts.validate_answer`): with thoughts removed the text must
   equal the chunk up to NFKC + whitespace normalisation at most; the segments are cut from the *original*, so
   an accepted record reconstructs its chunk exactly. Rejected answers are re-asked ``retries`` times at
   ``retry_temperature`` (identical answers to such re-asks warn once: a server that ignores sampling fields). A
   backend failure (after the backend's own retries) is recorded as ``failed`` with its ``error`` kind; a
   *rejection* is an outcome, a *failure* an outage.
4. Each finished batch is appended to ``out/shards/shard-i-of-N.jsonl`` and fsynced; when the shard is complete
   **without failed chunks** a ``.done`` marker (counts by status and reason, examples) is written. When all
   ``N`` markers exist the manifest (``manifest.json``, and the metrics of ``midtrain.json``) merges them and the
   run is ``COMPLETE``. A shard with failed chunks gets no marker but ``shard-i-of-N.failed.json`` (counts by
   kind); the run then exits non-zero with the counts (``augment: 12 of 40 chunks failed (connection refused
   ×12); …``). A fatal backend error (401/403, a redirect) stops scheduling batches at once. The next run of the
   same command drops the failed records from the shard file (one atomic rewrite) and asks again for exactly
   those chunks; accepted and rejected ones are kept, never re-asked nor duplicated.

Kill -9 at any moment and re-run the same command: the torn last line is truncated, finished chunks are skipped,
and every chunk ends up exactly once (status ``accepted`` or ``rejected``; ``failed`` until a re-run retries it). Manual splitting:
``--num-shards 8 --shard-index 3`` on each machine, same ``--out`` on a shared filesystem; the last shard to finish
writes the manifest. Multi-node: ``--executor datatrove_slurm`` (or ``datatrove_local``/``datatrove_ray``) runs
the same shard function as datatrove tasks (:mod:`midtrain.augment.datatrove`). Launch::

    midtrain augment corpus.jsonl --out runs/aug --tokenizer runs/tok --max-chunk-tokens 1024 \\
        --annotator.backend openai --annotator.model Qwen/Qwen3-8B --annotator.base-url http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from midtrain.augment.accounting import Tally, drop_failed, failed_summary_path, merge_manifest, stop_on_failures
from midtrain.augment.chunking import Chunk, chunk_record, require_usable_document, shard_chunks, token_counter
from midtrain.augment.config import AugmentConfig
from midtrain.augment.insert import insert_batch
from midtrain.augment.rules import RuleAnnotator, annotate_problem
from midtrain.augment.slurm import SlurmConfig
from midtrain.console import log, progress
from midtrain.data.inputs import input_files
from midtrain.data.jsonl import append_jsonl
from midtrain.errors import MidtrainError
from midtrain.fileio import atomic_write_json
from midtrain.llm.backends import OpenAIBackend, TextBackend, make_backend
from midtrain.llm.base import BackendError, warn_sampling_ignored
from midtrain.llm.prompts import check_template, fill_template, load_prompt
from midtrain.runs import Result, open_run
from midtrain.shards import (
    ShardLock,
    has_records,
    iter_shard,
    read_done,
    read_records,
    read_tolerant,
    shard_paths,
    to_parquet,
    write_done,
)
from midtrain.thoughts import (
    FAILED,
    check_record,
    render_augmented,
    strip_thoughts,
    validate_answer,
)

# Fields that say *how* to run, not *what*: reset in the run key so that a resumed run may change them.
_HOW: dict[str, Any] = {
    "shard_index": None,
    "executor": "inline",
    "num_workers": 1,
    "executor_options": {},
    "slurm": SlurmConfig().to_dict(),
    "batches_in_flight": 0,
    "annotator.base_url": "",
    "annotator.api_key_env": "OPENAI_API_KEY",
    "annotator.max_concurrency": 16,
    "annotator.timeout_s": 120.0,
    "annotator.max_retries": 5,
    "annotator.backoff_s": 1.0,
    "annotator.max_backoff_s": 60.0,
    "annotator.batch_size": 16,
    "annotator.num_threads": 0,
}


def key_config(cfg: AugmentConfig) -> AugmentConfig:
    """``cfg`` with the operational fields reset (what enters the run key and ``config.yaml``)."""
    return cfg.replace(**_HOW)


def operational(cfg: AugmentConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    return {k: (d[k.split(".")[0]][k.split(".")[1]] if "." in k else d[k]) for k in _HOW}


# -- chunks -----------------------------------------------------------------------------------------------------


# -- annotation -------------------------------------------------------------------------------------------------
def annotator_backend(cfg: AugmentConfig, template: str) -> TextBackend:
    """The annotator ``cfg.annotator`` describes; a programmatic one answers ``template`` by rule
    (:class:`midtrain.augment.rules.RuleAnnotator`)."""
    return make_backend(cfg.annotator, respond=RuleAnnotator(template, cfg.mode))


def uses_rules(cfg: AugmentConfig) -> bool:
    """Whether the annotator is the rule-based one, which annotates synthetic problems whole (by their gold trace)
    instead of being prompted with their text."""
    return cfg.annotator.backend == "programmatic"


def _synthetic(c: Chunk, cfg: AugmentConfig) -> dict[str, Any]:
    try:
        made = annotate_problem(c.problem or {})
    except Exception as e:  # noqa: BLE001 - one bad problem must not stop the run
        return chunk_record(c, "synth", "failed", 1, reason=FAILED, detail=f"{type(e).__name__}: {e}", error=type(e).__name__)
    out = check_record(made, min_thoughts=cfg.min_thoughts, max_thoughts=cfg.max_thoughts)
    rec = {
        **made,
        "id": c.id,
        "source_id": c.source_id,
        "domain": made.get("domain") or c.domain,
        "annotator": made.get("annotator") or "synth",
        "status": out.status,
        "reason": out.reason,
        "attempts": 1,
        "tokens": c.tokens,
    }
    if out.status == "accepted":
        rec["segments"] = out.segments
    else:
        rec.update(segments=[], detail=out.detail)
    return rec


async def annotate_batch(chunks: list[Chunk], backend: TextBackend, template: str, cfg: AugmentConfig) -> list[dict[str, Any]]:
    """Annotate, validate and retry one batch; one record per chunk, in order."""
    done: dict[str, dict[str, Any]] = {}
    pending = []
    for c in chunks:
        if c.problem is not None:  # only the rule annotator's chunks carry their problem (shard_chunks)
            done[c.id] = _synthetic(c, cfg)
        else:
            pending.append(c)
    if cfg.mode == "insert":  # thoughts only, at chosen points; the text is never re-emitted
        done.update((r["id"], r) for r in await insert_batch(pending, backend, template, cfg))
        return [done[c.id] for c in chunks]
    previous: dict[str, str] = {}  # chunk id → its last rejected answer
    for attempt in range(cfg.retries + 1):
        if not pending:
            break
        temperature = cfg.temperature if attempt == 0 else cfg.retry_temperature
        prompts = [fill_template(template, text=c.text) for c in pending]
        answers = await backend.agenerate(prompts, max_new_tokens=cfg.new_tokens, temperature=temperature, errors="return")
        retry = []
        _check_resampling(backend, pending, answers, previous, temperature)
        for c, ans in zip(pending, answers):
            if isinstance(ans, BackendError):
                extra = {"hint": ans.hint} if ans.hint else {}
                done[c.id] = chunk_record(c, backend.name, "failed", attempt + 1, reason=FAILED, detail=str(ans), error=ans.kind, **extra)
                continue
            previous[c.id] = ans[0]
            out = validate_answer(c.text, ans[0], mode=cfg.normalization, min_thoughts=cfg.min_thoughts, max_thoughts=cfg.max_thoughts)
            if out.status == "accepted":
                done[c.id] = chunk_record(c, backend.name, "accepted", attempt + 1, segments=out.segments)
            elif attempt < cfg.retries and out.reason != "source_has_tags":
                retry.append(c)
            else:
                extra = {"answer": ans[0]} if cfg.keep_answers else {}
                done[c.id] = chunk_record(c, backend.name, "rejected", attempt + 1, reason=out.reason, detail=out.detail, **extra)
        pending = retry
    return [done[c.id] for c in chunks]


def _check_resampling(backend: TextBackend, pending: list[Chunk], answers: list[Any], previous: dict[str, str], temperature: float) -> None:
    """Re-asks at temperature > 0 that return the rejected answer verbatim, for two or more chunks and all of them,
    mean a server that ignores the sampling fields: warn once (the retries cannot help). In-process backends sample
    themselves, and the programmatic one has nothing to sample: only servers are checked."""
    if not isinstance(backend, OpenAIBackend):
        return
    again = [a[0] == previous[c.id] for c, a in zip(pending, answers) if c.id in previous and not isinstance(a, BackendError)]
    if temperature > 0 and len(again) >= 2 and all(again):
        warn_sampling_ignored(backend, temperature, len(again))


def _batches_in_flight(cfg: AugmentConfig) -> int:
    if cfg.batches_in_flight:
        return cfg.batches_in_flight
    if cfg.annotator.backend == "openai":
        return max(2, math.ceil(2 * cfg.annotator.max_concurrency / cfg.batch_chunks))
    return 1


async def _annotate_all(chunks: list[Chunk], backend: TextBackend, template: str, cfg: AugmentConfig, sink: Any) -> None:
    limit = _batches_in_flight(cfg)
    running: set[asyncio.Task] = set()

    async def drain(wait_all: bool) -> None:
        nonlocal running
        while running and (wait_all or len(running) >= limit):
            finished, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for t in finished:
                sink(t.result())

    try:
        for s in range(0, len(chunks), cfg.batch_chunks):
            await drain(False)
            if getattr(backend, "fatal", None) is not None:  # bad credentials, a redirect: every request would fail
                break
            running.add(asyncio.create_task(annotate_batch(chunks[s : s + cfg.batch_chunks], backend, template, cfg)))
        await drain(True)
    finally:
        for t in running:
            t.cancel()
        aclose = getattr(backend, "aclose", None)
        if aclose is not None:
            await aclose()


def process_shard(
    cfg: AugmentConfig, index: int, *, backend: TextBackend | None = None, tokenizer: Any = None, template: str | None = None
) -> dict[str, Any]:
    """Annotate shard ``index`` to completion (resuming), write its ``.done`` marker; returns the marker."""
    paths = shard_paths(cfg.out, index, cfg.num_shards)
    info = read_done(paths)
    if info is not None:
        return info
    if tokenizer is None:
        from midtrain.models.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(cfg.tokenizer)
    template = template if template is not None else load_prompt(*cfg.template_source)
    with ShardLock(paths.lock):
        info = read_done(paths)  # another process may have finished it while we waited
        if info is not None:
            return info
        existing = drop_failed(paths.jsonl, read_tolerant(paths.jsonl, repair=True))  # drops a line torn by kill -9
        tally = Tally()
        for rec in existing:
            tally.add(rec)
        seen = {rec["id"] for rec in existing}
        chunks = [c for c in shard_chunks(cfg, tokenizer, index, synthetic=uses_rules(cfg)) if c.id not in seen]
        total = len(chunks) + len(seen)
        if chunks:
            backend = backend if backend is not None else annotator_backend(cfg, template)
            _run_shard(cfg, index, chunks, total, backend, template, tally, paths.jsonl, token_counter(tokenizer))
        info = {
            "shard": index,
            "num_shards": cfg.num_shards,
            "chunks": tally.chunks,
            **tally.to_dict(),
            "format": "jsonl",
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        failed_path = failed_summary_path(paths.jsonl)
        if tally.status["failed"] or tally.chunks < total:  # an outage is not a finished shard: no marker
            info.update(total=total, not_attempted=total - tally.chunks)
            atomic_write_json(failed_path, info)
            return info
        failed_path.unlink(missing_ok=True)
        if cfg.format == "parquet":
            records = read_tolerant(paths.jsonl)
            if to_parquet(records, paths.parquet):
                info["format"] = "parquet"
            else:
                log(f"augment: shard {index}: records do not fit one Arrow schema; kept as JSONL")
        write_done(paths, info)
        if info["format"] == "parquet":
            paths.jsonl.unlink(missing_ok=True)
    return info


def _run_shard(
    cfg: AugmentConfig,
    index: int,
    chunks: list[Chunk],
    total: int,
    backend: TextBackend,
    template: str,
    tally: Tally,
    path: Path,
    count: Any,
) -> None:
    start = time.time()
    done0, tok0, gen0 = tally.chunks, tally.tokens, getattr(backend, "stats", {}).get("completion_tokens", 0)
    next_log = [0.1]
    with progress() as bar:
        task = bar.add_task(f"augment shard {index}/{cfg.num_shards}", total=total, completed=done0, info="")

        def sink(records: list[dict[str, Any]]) -> None:
            synthetic = [r for r in records if not r.get("tokens") and r.get("chunk")]  # made by midtrain.synth
            for r, n in zip(synthetic, count([r["chunk"] for r in synthetic])):
                r["tokens"] = n
            append_jsonl(path, records)
            for r in records:
                tally.add(r)
            dt = max(time.time() - start, 1e-9)
            n = tally.chunks - done0
            rate = tally.status["accepted"] / max(tally.chunks, 1)
            gen = getattr(backend, "stats", {}).get("completion_tokens", 0) - gen0
            info = (
                f"{n / dt:.2f} chunks/s · {(tally.tokens - tok0) / dt:,.0f} corpus tok/s"
                + (f" · {gen / dt:,.0f} gen tok/s" if gen else "")
                + f" · accepted {rate:.1%}"
            )
            bar.update(task, completed=tally.chunks, info=info)
            if n >= next_log[0] * len(chunks) or n == len(chunks):
                log(f"augment shard {index}: {tally.chunks}/{total} chunks · {info}")
                next_log[0] = min(1.0, n / len(chunks) + 0.1)

        asyncio.run(_annotate_all(chunks, backend, template, cfg, sink))


# -- manifest and stage -----------------------------------------------------------------------------------------
class AugmentResult(Result):
    def summary(self) -> str:
        m = self.metrics
        if "chunks" not in m:
            return super().summary()
        lines = [
            f"{self.stage}: {'cache hit, ' if self.cached else ''}{self.out}",
            f"  shards {m['shards_done']}/{m['num_shards']}  chunks {m['chunks']}  accepted {m['accepted']} "
            f"({m['acceptance_rate']:.1%})  rejected {m['rejected']}  failed {m['failed']}  "
            f"thoughts/accepted chunk {m['thoughts_per_accepted_chunk']}",
        ]
        for reason, k in {**m["rejected_by_reason"], **{f"failed:{r}": k for r, k in m["failed_by_reason"].items()}}.items():
            lines.append(f"  {reason:<20} {k}")
        checks = m.get("thought_checks") or {}
        if checks:  # insert mode: what happened to every thought the annotator wrote
            lines.append(f"  thoughts checked {checks['answers']}  kept {checks['kept']} ({checks['kept_rate']:.1%})")
            for reason, k in checks["rejected_by_reason"].items():
                lines.append(f"    {reason:<22} {k} ({checks['rejected_share'][reason]:.1%})")
        return "\n".join(lines)


def run(cfg: AugmentConfig, *, backend: TextBackend | None = None) -> AugmentResult:
    """Augment the corpus into sharded, resumable output (see the module docstring).

    ``backend`` overrides ``cfg.annotator`` with a ready backend (an already loaded model, a scripted one); records
    with a ``graph`` are annotated whole by the synthetic world when ``cfg.annotator.backend`` is programmatic.
    """
    from midtrain.models.tokenizer import load_tokenizer

    template = load_prompt(*cfg.template_source)
    check_template(template, cfg.template_source[1], required=["text"])
    # Bad input fails here, before the run directory exists; a corpus without one usable text is an error, not a
    # finished run of 0 chunks (synthetic records carry a graph and are annotated programmatically).
    require_usable_document(cfg)
    tokenizer = load_tokenizer(cfg.tokenizer)
    inputs: dict[str, str | Path] = {k: v for i, p in enumerate(cfg.input) for k, v in input_files(f"input[{i}]", p).items()}
    inputs["tokenizer"] = cfg.tokenizer
    if Path(cfg.template_source[0]).suffix == ".txt":
        inputs["prompt"] = cfg.template_source[0]
    with open_run(cfg.out, "augment", key_config(cfg), inputs, overwrite=cfg.overwrite, shared=cfg.shard_index is not None) as run_:
        if run_.cached:
            return AugmentResult.of(run_)
        run_.keep_when(lambda: has_records(run_.path))  # a failure before any record leaves no directory behind
        run_.update(operational=operational(cfg))
        ann = cfg.annotator
        log(
            f"augment: {len(cfg.input)} input(s) → {cfg.num_shards} shard(s) in {run_.path}; chunks ≤ {cfg.max_chunk_tokens} "
            f"tokens; annotator {backend.name if backend is not None else ann.backend + (':' + ann.model if ann.model else '')}"
            f"; executor {cfg.executor}"
        )
        start = time.time()
        if cfg.executor == "inline":
            todo = [cfg.shard_index] if cfg.shard_index is not None else range(cfg.num_shards)
            for i in todo:
                if read_done(shard_paths(cfg.out, i, cfg.num_shards)) is None and backend is None:
                    backend = annotator_backend(cfg, template)
                process_shard(cfg, i, backend=backend, tokenizer=tokenizer, template=template)
        else:
            from midtrain.augment.datatrove import run_datatrove  # datatrove is optional and costs 0.1 s to import

            run_datatrove(cfg, shard_task)
        manifest = merge_manifest(cfg.out, cfg.num_shards)
        manifest["seconds_this_invocation"] = round(time.time() - start, 2)
        stop_on_failures(
            cfg.out, cfg.num_shards, [cfg.shard_index] if cfg.shard_index is not None else range(cfg.num_shards), run_, manifest
        )
        if manifest["shards_done"] < cfg.num_shards:
            log(f"augment: {manifest['shards_done']}/{cfg.num_shards} shards done; run the other shards (same --out)")
            run_.update(metrics=manifest)
            return AugmentResult(stage="augment", out=str(run_.path), metrics=manifest)
        atomic_write_json(run_.path / "manifest.json", manifest)
        run_.finish(manifest)
        log(
            f"augment: {manifest['chunks']} chunks, {manifest['accepted']} accepted ({manifest['acceptance_rate']:.1%}), "
            f"rejected {manifest['rejected_by_reason']}, failed {manifest['failed']} → {run_.path}"
        )
        return AugmentResult.of(run_)


def shard_task(cfg_dict: dict[str, Any], rank: int, world_size: int) -> dict[str, Any]:
    """One datatrove task (:mod:`midtrain.augment.datatrove`): :func:`process_shard` of shard ``rank``."""
    cfg = AugmentConfig.from_dict(cfg_dict)
    if world_size != cfg.num_shards:
        raise MidtrainError(f"datatrove world_size {world_size} != num_shards {cfg.num_shards}")
    return process_shard(cfg, rank)


def read_augmented(path: str | Path, *, status: str | None = "accepted") -> Iterator[dict[str, Any]]:
    """Augmented records of an output directory (or a JSONL/Parquet file), optionally of one status."""
    for rec in read_records(path):
        if status is None or rec.get("status") == status:
            yield rec


__all__ = [
    "AugmentResult",
    "annotator_backend",
    "uses_rules",
    "Chunk",
    "run",
    "process_shard",
    "shard_task",
    "shard_chunks",
    "annotate_batch",
    "merge_manifest",
    "read_augmented",
    "key_config",
    "iter_shard",
    "render_augmented",
    "strip_thoughts",
]

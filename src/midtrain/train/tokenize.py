"""``midtrain tokenize``: tokenize a corpus once into a token store on disk that training memory-maps.

Algorithm: every record becomes one document exactly as training defines it (:func:`midtrain.data.pairs.
record_to_pair`: ``<bos> prompt body <eos>``, prompt and body tokenized separately, records without text skipped).
The input files of every entry (:func:`midtrain.data.inputs.expand_input`) are tokenized in parallel, one process per
file (``num_proc``), each streaming its records (:func:`midtrain.data.corpus.iter_records`) in batches through the fast
tokenizer's batch encoder and appending to its own shard, so memory does not grow with the corpus. Errors name the
file and line. The store is a cached run directory (:func:`midtrain.runs.open_run`, keyed by the config and the
content of the inputs and the tokenizer): a re-run with the same inputs is a cache hit.

On-disk format (version 1), a run directory holding::

    manifest.json    {"format": "midtrain-tokens", "version": 1, "dtype": "uint16" | "uint32",
                      "tokenizer": {"sha256", "vocab_size", "bos", "eos", "pad", "name"},
                      "documents", "tokens", "domains": [{"name", "format", "documents", "tokens", "prompted",
                      "shards": [{"bin", "index", "source", "documents", "tokens", "max_id"}]}]}
    DDD-SSSSS.bin    the tokens of shard S of domain D, documents back to back: raw little-endian ``dtype``
                     (uint16 when every id fits, else uint32), read with ``np.memmap``
    DDD-SSSSS.npy    int64 ``[documents, 3]``: start offset into the .bin, length, prompt length (``<bos>`` +
                     prompt tokens: the prefix that carries no loss under ``completion_only``)

Domains are the ``corpus.mixture`` names (``default`` for ``corpus.files``) plus ``replay``. :func:`open_store` checks a
directory against this format (complete run, every manifest key, shard sizes, index bounds) before training reads it,
and training checks every token id against its model's vocabulary (the recorded ``max_id``, then a vectorised max).
Launch::

    midtrain tokenize --model runs/init --corpus.files corpus.jsonl --num-proc 8 --out runs/tokens
    midtrain pretrain --model runs/init --tokens runs/tokens --max-tokens 50000000 --out runs/base
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from array import array
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from midtrain.config import Config, param
from midtrain.console import log, progress
from midtrain.data.corpus import iter_records
from midtrain.data.inputs import expand_input
from midtrain.data.pairs import NO_PROMPT_FORMATS, Format, record_to_pair
from midtrain.errors import ConfigError, DataError, RunDirError
from midtrain.fileio import atomic_file, atomic_write_json, read_json
from midtrain.models.tokenizer import leading_bos
from midtrain.runs import MARKER, META, Result, content_hash, open_run, read_meta, resolve_key
from midtrain.train.corpus import CORPUS_RENAMED, CorpusConfig

STAGE = "tokenize"
MANIFEST = "manifest.json"
FORMAT_NAME, FORMAT_VERSION = "midtrain-tokens", 1
# The manifest keys that reading relies on, at the top, per domain and per shard (:func:`check_manifest`).
MANIFEST_KEYS = ("format", "version", "dtype", "tokenizer", "documents", "tokens", "domains")
DOMAIN_KEYS = ("name", "documents", "tokens", "prompted", "shards")
SHARD_KEYS = ("bin", "index", "documents", "tokens")
ID_CHUNK = 1 << 26  # tokens per vectorised max of the id check (bounds the memory touched at once)
BATCH_RECORDS = 1000  # records per tokenizer call: large enough for the Rust batch encoder, small in memory


@dataclass
class TokenizeConfig(Config):
    """The corpus of a causal-LM stage (the ``corpus`` section of ``midtrain pretrain``/``sft``) and where the store goes."""

    RENAMED: ClassVar[dict[str, str]] = CORPUS_RENAMED

    model: str = param("", "Checkpoint or tokenizer directory (or hub id) whose tokenizer is used.")
    corpus: CorpusConfig = param(CorpusConfig(), "Training files and how records become text.")
    completion_only: bool = param(False, "Training will leave prompts out of the loss: require records with a prompt.")
    num_proc: int = param(0, "Tokenizer processes, one input file each (0: one per CPU core, at most one per file).", ge=0)
    out: str = param("", "Output directory of the token store.", path="dir")
    overwrite: bool = param(False, "Replace an existing output directory holding a different run.")
    trust_remote_code: bool = param(False, "Allow custom tokenizer code from the checkpoint (off by default).")

    def check(self) -> None:
        if not self.model:
            raise ConfigError("key 'model': give a checkpoint or tokenizer directory")
        if not self.corpus.files and not self.corpus.mixture:
            raise ConfigError("key 'corpus.files': give at least one training file (or a 'corpus.mixture')")
        if not self.out:
            raise ConfigError("key 'out': give an output directory")
        if self.corpus.replay and "replay" in self.corpus.mixture:
            raise ConfigError("key 'corpus.mixture.replay': the name 'replay' is taken by the `corpus.replay` files")
        if self.completion_only and self.corpus.format in NO_PROMPT_FORMATS:
            raise ConfigError(f"key 'completion_only': format '{self.corpus.format}' has no prompt to leave out of the loss")


@dataclass(frozen=True)
class Domain:
    name: str
    files: list[str]
    fmt: Format


def domains_of(cfg: TokenizeConfig) -> list[Domain]:
    """The domains of a config in store order: the mixture names sorted (or ``default``), then ``replay``."""
    corpus = cfg.corpus
    sources = dict(corpus.mixture) if corpus.mixture else {"default": list(corpus.files)}
    out = [Domain(name, [f for spec in sources[name] for f in expand_input(spec)], corpus.format) for name in sorted(sources)]
    if corpus.replay:
        out.append(Domain("replay", [f for spec in corpus.replay for f in expand_input(spec)], corpus.replay_format))
    return out


def store_inputs(cfg: TokenizeConfig) -> dict[str, str]:
    """The local inputs whose content enters the run key (hub ids are named in the config)."""
    inputs = {"model": cfg.model}
    for dom in domains_of(cfg):
        inputs.update({f"{dom.name}[{i}]": f for i, f in enumerate(dom.files)})
    return {k: v for k, v in inputs.items() if Path(v).exists()}


def expected_key(cfg: TokenizeConfig) -> str:
    """The run key :func:`run` gives ``cfg`` (what other processes wait for)."""
    return resolve_key(cfg.out, STAGE, cfg, {k: content_hash(v) for k, v in store_inputs(cfg).items()})


# -- the tokenizer ----------------------------------------------------------------------------------------------
def tokenizer_identity(tokenizer: Any) -> dict[str, Any]:
    """What makes two tokenizers give the same ids: a hash of the vocabulary and rules, and the special ids."""
    if getattr(tokenizer, "is_fast", False):
        spec = json.loads(tokenizer.backend_tokenizer.to_str())
        for call_setting in ("truncation", "padding"):  # set per call, not part of the tokenizer
            spec.pop(call_setting, None)
    else:
        spec = {"vocab": sorted(tokenizer.get_vocab().items()), "class": type(tokenizer).__name__}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    return {
        "sha256": digest,
        "vocab_size": len(tokenizer),
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "pad": tokenizer.pad_token_id,
        "name": str(getattr(tokenizer, "name_or_path", "")),
    }


def token_dtype(vocab_size: int) -> str:
    """uint16 when every id (0 … vocab_size − 1) fits in 16 bits, else uint32."""
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of ``texts`` without special tokens; the fast tokenizer's batch encoder when there is one."""
    if not any(texts):
        return [[] for _ in texts]
    if getattr(tokenizer, "is_fast", False):
        backend = tokenizer.backend_tokenizer
        batch = getattr(backend, "encode_batch_fast", backend.encode_batch)  # _fast: no character offsets
        return [e.ids for e in batch(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


# -- one shard --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    source: str
    fmt: Format
    text_field: str
    bin_path: Path
    index_path: Path
    dtype: str


@dataclass
class Shard:
    source: str
    bin: str
    index: str
    documents: int = 0
    tokens: int = 0
    prompted: int = 0  # documents with a prompt
    max_id: int = -1  # the largest token id: compared with the model's vocabulary before training


def batches(job: Job) -> Iterator[list[tuple[str, str]]]:
    """(prompt, body) pairs of the job's file, ``BATCH_RECORDS`` at a time; records without text are skipped."""
    batch: list[tuple[str, str]] = []
    for rec in iter_records(job.source, text_field=job.text_field):
        prompt, body = record_to_pair(rec, job.fmt, job.source, job.text_field)
        if prompt or body:
            batch.append((prompt, body))
        if len(batch) == BATCH_RECORDS:
            yield batch
            batch = []
    if batch:
        yield batch


def tokenize_file(tokenizer: Any, job: Job, on_batch: Callable[[int, int], None] | None = None) -> Shard:
    """Tokenize one file into its shard (.bin of tokens, .npy index); ``on_batch(records, tokens)`` after each batch."""
    bos = leading_bos(tokenizer)  # none for tokenizers that never add their BOS (SmolLM2, Qwen)
    eos = [tokenizer.eos_token_id]
    shard = Shard(job.source, job.bin_path.name, job.index_path.name)
    index = array("q")  # start, length, prompt length per document: 24 bytes each
    with atomic_file(job.bin_path) as out:
        for batch in batches(job):
            flat: list[int] = []
            for p_ids, b_ids in zip(encode(tokenizer, [p for p, _ in batch]), encode(tokenizer, [b for _, b in batch])):
                index.extend((shard.tokens + len(flat), len(bos) + len(p_ids) + len(b_ids) + 1, len(bos) + len(p_ids)))
                shard.prompted += bool(p_ids)
                flat += bos + p_ids + b_ids + eos
            out.write(np.asarray(flat, dtype=np.dtype(job.dtype).newbyteorder("<")).tobytes())
            shard.max_id = max(shard.max_id, max(flat, default=-1))
            shard.tokens += len(flat)
            shard.documents += len(batch)
            if on_batch is not None:
                on_batch(len(batch), len(flat))
    with atomic_file(job.index_path) as f:
        np.save(f, np.frombuffer(index, dtype=np.int64).reshape(-1, 3))
    return shard


WORKER: dict[str, Any] = {}  # the tokenizer of a worker process (set by the pool initializer)


def init_worker(tokenizer: Any) -> None:
    WORKER["tokenizer"] = tokenizer


def work(job: Job) -> Shard:
    return tokenize_file(WORKER["tokenizer"], job)


def tokenize_all(tokenizer: Any, jobs: list[Job], num_proc: int) -> list[Shard]:
    """Every job's shard, in job order: in this process for one worker, else a pool of ``num_proc`` processes."""
    procs = min(num_proc or os.cpu_count() or 1, len(jobs))
    shards: list[Shard | None] = [None] * len(jobs)
    done = {"docs": 0, "tokens": 0}
    # fork: the workers inherit the loaded tokenizer instead of loading it again; forked before the progress bar
    # starts its refresh thread
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(procs, initializer=init_worker, initargs=(tokenizer,)) if procs > 1 else nullcontext() as pool, progress() as bar:
        task = bar.add_task("tokenize", total=len(jobs), info="")

        def advance(docs: int, tokens: int, files: int = 0) -> None:
            done["docs"] += docs
            done["tokens"] += tokens
            bar.update(task, advance=files, info=f"{done['docs']:,} docs  {done['tokens']:,} tokens")

        if pool is None:
            for i, job in enumerate(jobs):
                shards[i] = tokenize_file(tokenizer, job, advance)
                advance(0, 0, 1)
        else:
            for i, shard in pool.imap_unordered(indexed_work, list(enumerate(jobs))):
                shards[i] = shard
                advance(shard.documents, shard.tokens, 1)
    return [s for s in shards if s is not None]


def indexed_work(item: tuple[int, Job]) -> tuple[int, Shard]:
    return item[0], work(item[1])


# -- the verb ---------------------------------------------------------------------------------------------------
def run(cfg: TokenizeConfig) -> Result:
    """Tokenize the corpus of ``cfg`` into a token store (see module docstring)."""
    from midtrain.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    domains = domains_of(cfg)
    with open_run(cfg.out, STAGE, cfg, store_inputs(cfg), overwrite=cfg.overwrite) as run:
        if run.cached:
            return Result.of(run)
        ident = tokenizer_identity(tokenizer)
        dtype = token_dtype(ident["vocab_size"])
        jobs = [
            Job(f, d.fmt, cfg.corpus.text_field, run.path / f"{i:03d}-{j:05d}.bin", run.path / f"{i:03d}-{j:05d}.npy", dtype)
            for i, d in enumerate(domains)
            for j, f in enumerate(d.files)
        ]
        shards = iter(tokenize_all(tokenizer, jobs, cfg.num_proc))
        entries: list[dict[str, Any]] = []
        for d in domains:
            mine = [next(shards) for _ in d.files]
            entry: dict[str, Any] = {
                "name": d.name,
                "format": d.fmt,
                "documents": sum(s.documents for s in mine),
                "tokens": sum(s.tokens for s in mine),
                "prompted": sum(s.prompted for s in mine),
                "shards": [s.__dict__ for s in mine],
            }
            if not entry["documents"]:
                raise DataError(f"empty dataset: no usable records in {', '.join(d.files)}")
            entries.append(entry)
        if cfg.completion_only and not any(e["prompted"] for e in entries if e["name"] != "replay"):
            files = ", ".join(f for d in domains if d.name != "replay" for f in d.files)
            raise DataError(f"completion_only: no record in {files} has a prompt (prompt + completion records) to leave out of the loss")
        manifest = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "dtype": dtype,
            "tokenizer": ident,
            "documents": sum(e["documents"] for e in entries),
            "tokens": sum(e["tokens"] for e in entries),
            "domains": entries,
        }
        atomic_write_json(run.path / MANIFEST, manifest)
        log(f"tokenize: {manifest['documents']:,} documents, {manifest['tokens']:,} tokens ({dtype}) in {len(jobs)} shards")
        run.finish({"documents": manifest["documents"], "tokens": manifest["tokens"], "shards": len(jobs), "dtype": dtype})
        return Result.of(run)


# -- reading a store --------------------------------------------------------------------------------------------
@dataclass
class TokenStore:
    """An opened, checked token store: the manifest, per-domain document tables and memory-mapped shards."""

    path: Path
    manifest: dict[str, Any]
    shards: list[np.ndarray] = field(default_factory=list)  # memmaps, global shard order
    shard_domain: list[int] = field(default_factory=list)  # domain index of each shard

    @property
    def names(self) -> list[str]:
        return [d["name"] for d in self.manifest["domains"]]

    def documents(self, domain: str) -> np.ndarray:
        """int64 ``[documents, 4]`` of a domain: shard, start, length, prompt length."""
        k = self.names.index(domain)
        parts = []
        for s, d in enumerate(self.shard_domain):
            if d == k:
                idx = np.load(self.path / self.manifest_shard(s)["index"], mmap_mode="r")
                parts.append(np.column_stack([np.full(len(idx), s, dtype=np.int64), idx]))
        return np.concatenate(parts) if parts else np.zeros((0, 4), dtype=np.int64)

    def manifest_shard(self, s: int) -> dict[str, Any]:
        return [sh for d in self.manifest["domains"] for sh in d["shards"]][s]


def bad(path: Path, why: str) -> RunDirError:
    return RunDirError(f"{path}: not a usable `midtrain tokenize` directory ({why}); run `midtrain tokenize` again")


def open_store(path: str | Path, tokenizer: Any | None = None, vocab_size: int | None = None) -> TokenStore:
    """The token store at ``path``, checked: a finished tokenize run, this format, a manifest with every key
    (:func:`check_manifest`), consistent shards, and, when given, tokenized by the same ``tokenizer`` with every
    id below the model's ``vocab_size`` (:func:`check_ids`). Anything else is a one-line error naming the file."""
    path = Path(path)
    if not (path / MANIFEST).is_file() or not (path / META).is_file():
        raise bad(path, f"no {MANIFEST}")
    if read_meta(path / META).get("stage") != STAGE or not (path / MARKER).is_file():
        raise bad(path, "not a finished tokenize run")
    man = read_json(path / MANIFEST)
    if not isinstance(man, dict) or man.get("format") != FORMAT_NAME or man.get("version") != FORMAT_VERSION:
        raise bad(path / MANIFEST, f"format is not {FORMAT_NAME} version {FORMAT_VERSION}")
    if man.get("dtype") not in ("uint16", "uint32"):
        raise bad(path / MANIFEST, f"unknown dtype {man.get('dtype')!r}")
    check_manifest(path / MANIFEST, man)
    if tokenizer is not None:
        ours, theirs = tokenizer_identity(tokenizer), man.get("tokenizer", {})
        diff = [k for k in ("sha256", "vocab_size", "bos", "eos") if ours[k] != theirs.get(k)]
        if diff:
            raise RunDirError(
                f"{path} was tokenized with another tokenizer ({theirs.get('name')!r}; differs in {', '.join(diff)}) "
                f"than the model's ({ours['name']!r}); run `midtrain tokenize` with this model"
            )
    store = TokenStore(path, man)
    for k, dom in enumerate(man["domains"]):
        for sh in dom["shards"]:
            store.shards.append(check_shard(path, sh, man["dtype"]))
            store.shard_domain.append(k)
    if vocab_size is not None:
        check_ids(store, vocab_size)
    return store


def check_manifest(path: Path, man: dict[str, Any]) -> None:
    """DataError naming the manifest and the key when a key that reading relies on is missing or of the wrong kind
    (a KeyError or TypeError later otherwise): counts are non-negative integers, and shard files are plain names
    inside the store, never a path out of it."""

    def need(obj: Any, keys: tuple[str, ...], where: str) -> None:
        if not isinstance(obj, dict):
            raise DataError(f"{path}: key '{where}' must be a mapping, got {type(obj).__name__}")
        for k in keys:
            if k not in obj:
                raise DataError(f"{path}: missing key '{where + '.' if where else ''}{k}'")

    def items(obj: Any, where: str) -> list[Any]:
        if not isinstance(obj, list):
            raise DataError(f"{path}: key '{where}' must be a list, got {type(obj).__name__}")
        return obj

    need(man, MANIFEST_KEYS, "")
    for i, dom in enumerate(items(man["domains"], "domains")):
        need(dom, DOMAIN_KEYS, f"domains[{i}]")
        for j, sh in enumerate(items(dom["shards"], f"domains[{i}].shards")):
            where = f"domains[{i}].shards[{j}]"
            need(sh, SHARD_KEYS, where)
            for k in ("bin", "index"):
                if not isinstance(sh[k], str) or Path(sh[k]).name != sh[k] or sh[k] in ("", ".", ".."):
                    raise DataError(f"{path}: key '{where}.{k}' must be a file name inside the store, got {sh[k]!r}")
            for k in ("documents", "tokens", "max_id"):
                v = sh.get(k, -1)  # (max_id: stores written before it was recorded have none)
                if not isinstance(v, int) or isinstance(v, bool) or v < (-1 if k == "max_id" else 0):
                    raise DataError(f"{path}: key '{where}.{k}' must be a count, got {v!r}")


def check_ids(store: TokenStore, vocab_size: int) -> None:
    """DataError naming the file when a token id is not below ``vocab_size`` (the model's embedding rows), which
    would otherwise be an IndexError inside the first forward: the ids the manifest records (cheap), then a
    vectorised max over every shard (a .bin changed after tokenization, or a store without recorded ids)."""
    shards = [sh for d in store.manifest["domains"] for sh in d["shards"]]
    hint = f"outside the model's vocabulary of {vocab_size} ids; run `midtrain tokenize` with the model's tokenizer"
    for sh in shards:
        if sh.get("max_id", -1) >= vocab_size:
            raise DataError(f"{store.path / MANIFEST}: shard {sh['bin']} holds token id {sh['max_id']}, {hint}")
    for sh, tokens in zip(shards, store.shards):
        top = max((int(tokens[i : i + ID_CHUNK].max()) for i in range(0, len(tokens), ID_CHUNK)), default=-1)
        if top >= vocab_size:
            raise DataError(f"{store.path / sh['bin']}: token id {top} is {hint}")


def check_shard(path: Path, sh: dict[str, Any], dtype: str) -> np.ndarray:
    """The memmap of one shard after checking its size and its index against each other."""
    bin_path, idx_path = path / sh["bin"], path / sh["index"]
    size = np.dtype(dtype).itemsize
    if not bin_path.is_file() or bin_path.stat().st_size != sh["tokens"] * size:
        raise bad(bin_path, f"missing or not {sh['tokens']} {dtype} tokens")
    try:
        idx = np.load(idx_path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise bad(idx_path, f"unreadable index: {e}") from None
    if idx.dtype != np.int64 or idx.ndim != 2 or idx.shape != (sh["documents"], 3):
        raise bad(idx_path, f"index is not int64 [{sh['documents']}, 3]")
    if len(idx) and (idx[:, 0].min() < 0 or (idx[:, 0] + idx[:, 1]).max() > sh["tokens"] or idx[:, 1].min() < 1):
        raise bad(idx_path, "document bounds outside the shard")
    if not sh["tokens"]:
        return np.zeros(0, dtype=dtype)
    return np.memmap(bin_path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r")


__all__ = [
    "STAGE",
    "TokenStore",
    "TokenizeConfig",
    "expected_key",
    "check_ids",
    "check_manifest",
    "open_store",
    "run",
    "token_dtype",
    "tokenizer_identity",
]

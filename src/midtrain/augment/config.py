"""The configs of ``midtrain augment``: the stage's :class:`AugmentConfig` and its insert-mode section
:class:`InsertConfig`.

A leaf module: chunking (:mod:`midtrain.augment.chunking`), insert mode (:mod:`midtrain.augment.insert`) and the
stage (:mod:`midtrain.augment.augment`) all read these configs, and none of them is imported here, so the package
has no import circle (not even one for type annotations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from midtrain.augment.slurm import SlurmConfig, check_executor_values
from midtrain.config import MAX_SEED, Config, param
from midtrain.errors import ConfigError
from midtrain.llm.config import BackendConfig


@dataclass
class InsertConfig(Config):
    """The knobs of insert mode (``augment --mode insert``)."""

    points: int = param(4, "Insertion points per chunk (fewer when the chunk has fewer unit boundaries).", ge=1)
    min_spacing: int = param(1, "Minimum distance between two insertion points, in units (sentences or token pieces).", ge=1)
    max_unit_tokens: int = param(64, "A sentence longer than this many tokens is cut into pieces of this size.", ge=1)
    min_words: int = param(3, "Reject thoughts with fewer words.", ge=1)
    max_words: int = param(200, "Reject thoughts with more words.", ge=1)
    max_new_tokens: int = param(160, "Annotator token budget of one thought.", ge=1)
    cut_off_fraction: float = param(
        0.5,
        "thought_cut_off: reject a thought that does not end a sentence once it is at least this share of "
        "max_new_tokens long (target-tokenizer tokens): the annotator ran out of budget mid-sentence. 0: any thought "
        "without a sentence end.",
        ge=0,
        le=1,
    )
    max_restate_overlap: float = param(
        0.5,
        "thought_restates_text: reject a thought when more than this share of its word pairs occur in the last "
        "restate_window_words words read. 1: off.",
        ge=0,
        le=1,
    )
    restate_window_words: int = param(64, "How many of the last words read the restatement check compares with.", ge=1)
    min_informative_ratio: float = param(
        0.15,
        "thought_filler: reject a thought when distinct informative words (not function words nor generic talk "
        "about reading: 'text', 'next', 'continue') are under this share of its words. 0: off.",
        ge=0,
        le=1,
    )
    prompt: str = param("insert", "Thought prompt: a shipped name or a .txt template with a {text} placeholder (the text so far).")
    seed: int = param(0, "Seed of the insertion points (with the chunk id: deterministic per chunk).", ge=0, le=MAX_SEED)

    def check(self) -> None:
        if self.min_words > self.max_words:
            raise ConfigError("key 'min_words': must be at most max_words")


@dataclass
class AugmentConfig(Config):
    input: list[str] = param(
        [], "Corpus: .jsonl(.gz)/.parquet/.txt files, globs, directories of shards, datasets dirs or hub ids.", positional=True
    )
    out: str = param("", "Output directory (shards/, manifest.json, midtrain.json).", path="dir")
    tokenizer: str = param("", "The target model's tokenizer directory (chunk budgets are counted with it).", path="dir")
    text_field: str = param("text", "Field holding the document text.")
    id_field: str = param("id", "Field holding the document id (default: <file stem>:<line>).")
    domain_field: str = param("domain", "Field holding the domain label.")
    default_domain: str = param("general", "Domain of documents without one.")
    max_documents: int | None = param(None, "Read only the first N documents of the corpus (all inputs together).", ge=1)
    max_chunk_tokens: int = param(1024, "Chunk budget L in target-tokenizer tokens (DESIGN: 2048, 1024 for small models).", ge=8)
    annotator: BackendConfig = param(BackendConfig(), "The annotator model's backend.")
    mode: Literal["rewrite", "insert"] = param(
        "rewrite",
        "rewrite: the annotator re-emits the chunk with thoughts inside (text checked); insert: it writes only the "
        "thoughts at chosen sentence boundaries, the text is kept by construction (midtrain.augment.insert).",
    )
    insert: InsertConfig = param(InsertConfig(), "Insert mode: insertion points, thought checks, prompt.")
    prompt: str = param("augment", "Annotator prompt: a shipped name or a .txt template with a {text} placeholder.")
    max_new_tokens: int = param(0, "Annotator token budget per chunk; 0: 2 × max_chunk_tokens + 256.", ge=0)
    temperature: float = param(0.0, "Annotator sampling temperature of the first attempt.", ge=0)
    retries: int = param(1, "Re-ask the annotator this many times when its answer is rejected.", ge=0)
    retry_temperature: float = param(0.7, "Sampling temperature of the retries.", ge=0)
    normalization: Literal["exact", "whitespace", "nfkc"] = param(
        "nfkc", "Text preservation check: exact; whitespace (runs collapsed, ends trimmed); nfkc (NFKC + whitespace)."
    )
    min_thoughts: int = param(1, "Reject answers with fewer thoughts.", ge=0)
    max_thoughts: int = param(16, "Reject answers with more thoughts.", ge=0)
    batch_chunks: int = param(64, "Chunks per annotator call and per fsynced append.", ge=1)
    batches_in_flight: int = param(0, "Concurrent batches; 0: 1 for in-process backends, enough to fill max_concurrency for openai.", ge=0)
    format: Literal["jsonl", "parquet"] = param("jsonl", "Shard file format (Parquet is written when a shard completes).")
    num_shards: int = param(1, "Number of output shards (shard i reads part i of the corpus).", ge=1)
    shard_index: int | None = param(None, "Process only this shard (manual splitting across machines); default all.", ge=0)
    executor: Literal["inline", "datatrove_local", "datatrove_slurm", "datatrove_ray"] = param(
        "inline", "inline: this process; datatrove_*: one datatrove task per shard (pip install 'midtrain[distributed]')."
    )
    num_workers: int = param(1, "Shards run in parallel by datatrove_local / datatrove_ray.", ge=1)
    executor_options: dict[str, Any] = param({}, "Extra keyword arguments of the datatrove executor (beyond the slurm section).")
    slurm: SlurmConfig = param(SlurmConfig(), "Slurm options of executor datatrove_slurm (one job array task per shard).")
    keep_answers: bool = param(True, "Store the raw annotator answer on rejected records (for the rejection report).")
    overwrite: bool = param(False, "Replace an existing output directory holding a different run.")

    def check(self) -> None:
        if not self.input:
            raise ConfigError("key 'input': give at least one corpus file")
        if not self.out:
            raise ConfigError("key 'out': give an output directory")
        if not self.tokenizer:
            raise ConfigError("key 'tokenizer': give the target model's tokenizer directory")
        if self.max_chunk_tokens < 8:
            raise ConfigError("key 'max_chunk_tokens': must be at least 8")
        if self.num_shards < 1:
            raise ConfigError("key 'num_shards': must be >= 1")
        if self.shard_index is not None and not 0 <= self.shard_index < self.num_shards:
            raise ConfigError(f"key 'shard_index': must be in [0, {self.num_shards})")
        if self.executor == "datatrove_slurm" and not self.slurm.partition:
            raise ConfigError("key 'slurm.partition': executor datatrove_slurm needs a Slurm partition")
        check_executor_values(self.executor, self.out, self.executor_options, self.slurm)
        if self.shard_index is not None and self.executor != "inline":
            raise ConfigError("key 'shard_index': datatrove assigns shards itself; use executor=inline for manual splits")
        if self.retries < 0 or self.batch_chunks < 1 or self.batches_in_flight < 0:
            raise ConfigError("key 'retries'/'batch_chunks'/'batches_in_flight': out of range")
        if not 0 <= self.min_thoughts <= self.max_thoughts:
            raise ConfigError("key 'min_thoughts': must be between 0 and max_thoughts")
        if self.mode == "insert" and self.insert.points < self.min_thoughts:
            raise ConfigError("key 'insert.points': fewer insertion points than min_thoughts; every chunk would be rejected")

    @property
    def template_source(self) -> tuple[str, str]:
        """``(prompt name or path, its config key)`` of the mode's annotator template."""
        return (self.insert.prompt, "insert.prompt") if self.mode == "insert" else (self.prompt, "prompt")

    @property
    def new_tokens(self) -> int:
        return self.max_new_tokens or 2 * self.max_chunk_tokens + 256


__all__ = ["AugmentConfig", "InsertConfig"]

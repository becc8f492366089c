"""The corpus a causal-LM stage reads: the ``corpus`` section shared by ``pretrain``, ``sft`` and ``tokenize``.

One section, declared once, says which files are read and how each record becomes text; the stages differ only
in what they do with it (``tokenize`` writes a token store, ``pretrain``/``sft`` tokenize on first use and then
sample a mixture from the store). Domains: the ``mixture`` names (``default`` for ``files``), plus ``replay``
(an earlier stage's data, with its own ``replay_format``). A record becomes a ``(prompt, body)`` pair as
:func:`midtrain.data.pairs.record_to_pair` reads it. Written in YAML as::

    corpus:
      files: [aug/sft.jsonl]
      format: augmented
      replay: [runs/id_data/problems.jsonl]
"""

from __future__ import annotations

from dataclasses import dataclass

from midtrain.config import Config, param
from midtrain.data.pairs import Format

# The flat keys of the section before it was one (``RENAMED`` of the stages that have it: a one-line error names the new key).
CORPUS_RENAMED: dict[str, str] = {
    "data": "corpus.files",
    "format": "corpus.format",
    "text_field": "corpus.text_field",
    "mixture": "corpus.mixture",
    "replay": "corpus.replay",
    "replay_format": "corpus.replay_format",
}


@dataclass
class CorpusConfig(Config):
    """Which files a causal-LM stage reads and how records become text (the ``corpus`` section)."""

    files: list[str] = param([], "Training files (JSONL/Parquet/datasets dir/txt, globs).")
    format: Format = param("auto", "How records become text: auto, text, prompt_completion, augmented, augmented_raw.")
    text_field: str = param("text", "Field holding the text for the 'text' format.")
    mixture: dict[str, list[str]] = param({}, "Domain name → files; replaces `files` when set.")
    replay: list[str] = param([], "Files from an earlier stage: the 'replay' domain.")
    replay_format: Format = param(
        "auto", "How replay records become text (auto: by their fields; the earlier stage's data often has another format)."
    )

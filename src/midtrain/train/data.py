"""Training data for causal-LM stages: records → token documents → mixture → packed rows.

1. **Records → documents.** Each record becomes one document ``<bos> text <eos>`` with a per-token loss mask:
   - ``text``: a ``text`` field (pretraining corpora);
   - ``prompt_completion``: ``prompt`` + ``completion`` (synthetic problems, SFT pairs); with
     ``completion_only`` the prompt tokens carry no loss;
   - ``augmented``: an augmented chunk (DESIGN §2) rendered *with* its thoughts (thinking SFT);
   - ``augmented_raw``: the same chunk without thoughts (the SFT(raw) control);
   - ``auto`` picks the first that fits each record (segments → augmented, prompt+completion, text).
2. **Mixture.** Documents are grouped by source (a domain name → files); each domain gets ``weight × budget``
   tokens, drawn in a seeded shuffled order and repeated if a domain is too small; a ``replay`` share of an
   earlier stage's data is one more domain. Without a budget every document is used once.
3. **Packing.** Documents are laid into rows of ``seq_len`` tokens in order, never split unless longer than a
   row (the remainder of a row is padding); ``position_ids`` restart at 0 at each document, so transformers'
   attention masking (``find_packed_sequence_indices``) keeps documents from attending to each other, while the
   batch stays ``[B, T]`` (attention cost O(B·T²), not O((B·T)²) as with padding-free flattening).
   The first token of every document segment and all padding carry no loss.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from midtrain.data import iter_records
from midtrain.errors import DataError
from midtrain.thoughts import render_augmented

Format = Literal["auto", "text", "prompt_completion", "augmented", "augmented_raw"]


@dataclass
class Doc:
    ids: list[int]
    mask: list[bool]  # mask[t]: token t is a prediction target
    domain: str = "default"
    prompt_tokens: int = 0  # tokens of the record's prompt (prompt_completion records)


def record_to_pair(rec: dict[str, Any], fmt: Format, path: str | Path, text_field: str = "text") -> tuple[str, str]:
    """(unmasked prefix, text) of one record: the prefix is the prompt when there is one, else empty."""
    kind = fmt
    if kind == "auto":
        if isinstance(rec.get("segments"), list):
            kind = "augmented"
        elif "prompt" in rec and "completion" in rec:
            kind = "prompt_completion"
        elif text_field in rec:
            kind = "text"
        else:
            fields = ", ".join(k for k in rec if not k.startswith("_"))
            raise DataError(
                f"{path}:{rec.get('_line', '?')}: record has no '{text_field}', 'prompt'+'completion' or "
                f"'segments' field (fields: {fields})"
            )
    if kind == "text":
        if not isinstance(rec.get(text_field), str):
            raise DataError(f"{path}:{rec.get('_line', '?')}: record has no string '{text_field}' field")
        return "", rec[text_field]
    if kind == "prompt_completion":
        for f in ("prompt", "completion"):
            if not isinstance(rec.get(f), str):
                raise DataError(f"{path}:{rec.get('_line', '?')}: record has no string '{f}' field")
        return rec["prompt"], rec["completion"]
    if not isinstance(rec.get("segments"), list):
        raise DataError(f"{path}:{rec.get('_line', '?')}: record has no 'segments' list (augmented format)")
    if rec.get("status", "accepted") != "accepted":
        return "", ""
    if kind == "augmented":
        return "", render_augmented(rec)
    return "", "".join(seg.get("text", "") for seg in rec["segments"])


def read_pairs(
    paths: Iterable[str | Path], *, fmt: Format = "auto", text_field: str = "text", what: str = "dataset"
) -> list[tuple[str, str]]:
    """(prompt, body) of every usable record in ``paths`` (see :func:`record_to_pair`); none at all is an error."""
    paths = list(paths)
    pairs = []
    for path in paths:
        for rec in iter_records(path, text_field=text_field):
            prompt, body = record_to_pair(rec, fmt, path, text_field)
            if prompt or body:
                pairs.append((prompt, body))
    if not pairs:
        raise DataError(f"empty {what}: no usable records in {', '.join(map(str, paths))}")
    return pairs


def load_documents(
    paths: Iterable[str | Path],
    tokenizer: Any,
    *,
    fmt: Format = "auto",
    completion_only: bool = False,
    text_field: str = "text",
    domain: str = "default",
) -> list[Doc]:
    """Tokenize every record of ``paths`` into a document with its loss mask; empty input is an error."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id]
    pairs = read_pairs(paths, fmt=fmt, text_field=text_field)
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=False)["input_ids"]
    bodies = tokenizer([b for _, b in pairs], add_special_tokens=False)["input_ids"]
    docs = []
    for p_ids, b_ids in zip(prompts, bodies):
        ids = bos + p_ids + b_ids + eos
        n_prompt = len(bos) + len(p_ids)
        mask = [(not completion_only) or t >= n_prompt for t in range(len(ids))]
        docs.append(Doc(ids, mask, domain, len(p_ids)))
    return docs


def mix(
    domains: dict[str, list[Doc]],
    weights: dict[str, float],
    budget_tokens: int | None,
    seed: int,
) -> tuple[list[Doc], dict[str, int]]:
    """Draw documents per domain to ``weight × budget`` tokens (seeded; repeats a small domain).

    Returns the shuffled documents and the tokens taken per domain. ``budget_tokens=None`` takes every document
    once (weights ignored).
    """
    rng = random.Random(seed)
    chosen: list[Doc] = []
    taken: dict[str, int] = {}
    total_w = sum(weights.get(d, 0.0) for d in domains)
    for name in sorted(domains):
        docs = domains[name]
        if budget_tokens is None:
            pick = list(docs)
        else:
            w = weights.get(name, 0.0)
            if w <= 0:
                continue
            target = budget_tokens * w / total_w
            order = list(range(len(docs)))
            pick, n, i = [], 0, 0
            rng.shuffle(order)
            while n < target:
                if i == len(order):
                    rng.shuffle(order)
                    i = 0
                doc = docs[order[i]]
                pick.append(doc)
                n += len(doc.ids)
                i += 1
        taken[name] = sum(len(d.ids) for d in pick)
        chosen += pick
    rng.shuffle(chosen)
    return chosen, taken


@dataclass
class PackedRows:
    input_ids: list[list[int]]
    position_ids: list[list[int]]
    labels: list[list[int]]

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return {"input_ids": self.input_ids[i], "position_ids": self.position_ids[i], "labels": self.labels[i]}

    @property
    def target_tokens(self) -> int:
        return sum(sum(1 for x in row if x != -100) for row in self.labels)


def pack(docs: list[Doc], seq_len: int, pad_id: int) -> PackedRows:
    """Lay documents into ``[seq_len]`` rows without splitting any that fits in a row (see module doc)."""
    rows = PackedRows([], [], [])
    ids: list[int] = []
    pos: list[int] = []
    lab: list[int] = []

    def flush() -> None:
        if not ids:
            return
        fill = seq_len - len(ids)
        rows.input_ids.append(ids + [pad_id] * fill)
        rows.position_ids.append(pos + list(range(fill)))
        rows.labels.append(lab + [-100] * fill)
        ids.clear()
        pos.clear()
        lab.clear()

    for doc in docs:
        pieces = [(doc.ids[i : i + seq_len], doc.mask[i : i + seq_len]) for i in range(0, len(doc.ids), seq_len)]
        for piece_ids, piece_mask in pieces:
            if len(ids) + len(piece_ids) > seq_len:
                flush()
            ids += piece_ids
            pos += list(range(len(piece_ids)))
            lab += [-100] + [t if m else -100 for t, m in zip(piece_ids[1:], piece_mask[1:])]
    flush()
    return rows


def collate(features: list[dict[str, list[int]]]) -> dict[str, Any]:
    """Stack packed rows into tensors; no attention mask, so position_ids define the document blocks."""
    import torch

    return {
        "input_ids": torch.tensor([f["input_ids"] for f in features], dtype=torch.long),  # [B, T]
        "position_ids": torch.tensor([f["position_ids"] for f in features], dtype=torch.long),  # [B, T]
        "labels": torch.tensor([f["labels"] for f in features], dtype=torch.long),  # [B, T]
    }

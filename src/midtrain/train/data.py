"""Training data for causal-LM stages: records → token documents on disk → mixture → packed rows, built on the fly.

1. **Records → documents.** Each record becomes one document ``<bos> prompt body <eos>``
   (:func:`midtrain.data.pairs.record_to_pair`; no
   ``<bos>`` for tokenizers that never add theirs, see :func:`midtrain.models.tokenizer.leading_bos`;
   ``midtrain tokenize`` writes them to a token store, :mod:`midtrain.train.tokenize`):
   - ``text``: a ``text`` field (pretraining corpora);
   - ``prompt_completion``: ``prompt`` + ``completion`` (synthetic problems, SFT pairs); with
     ``completion_only`` the prompt tokens carry no loss;
   - ``augmented``: an augmented chunk (DESIGN §2) rendered *with* its thoughts (thinking SFT);
   - ``augmented_raw``: the same chunk without thoughts (the SFT(raw) control);
   - ``auto`` picks the first that fits each record (segments → augmented, prompt+completion, text).
2. **Mixture** (:func:`mix_documents`, over document lengths only). Each domain gets ``weight × budget`` tokens,
   drawn in a seeded shuffled order and repeated if a domain is too small; a ``replay`` share of an earlier
   stage's data is one more domain. Without a budget every document is used once. The drawn documents are shuffled.
3. **Packing plan** (:func:`pack_plan`). Documents are laid into rows of ``seq_len`` tokens in order, never split
   unless longer than a row (the remainder of a row is padding). The plan is int64 arrays — segments ``[n, 4]``
   (shard, start, length, first labelled position) and row offsets ``[rows + 1]`` — stored as .npy and memory-mapped,
   so a process holds neither the corpus nor the plan in memory.
4. **Rows** (:class:`PackedDataset`, map-style): row ``i`` is assembled from the memory-mapped shards when asked
   for. ``position_ids`` restart at 0 at each document, so transformers' attention masking
   (``find_packed_sequence_indices``) keeps documents from attending to each other, while the batch stays
   ``[B, T]`` (attention cost O(B·T²), not O((B·T)²) as with padding-free flattening). The first token of every
   document segment and all padding carry no loss (label -100); so do prompt tokens under ``completion_only``.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Any

import numpy as np


def mix_documents(lengths: list[np.ndarray], weights: list[float], budget_tokens: int | None, seed: int) -> tuple[np.ndarray, list[int]]:
    """Draw documents per domain to ``weight × budget`` tokens (seeded; repeats a small domain), then shuffle.

    ``lengths[k]`` are the document lengths of domain ``k``; documents are numbered globally, domain after domain.
    Returns the drawn document numbers in training order and the tokens drawn per domain. ``budget_tokens=None``
    takes every document once (weights ignored).
    """
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in lengths])])
    total_w = sum(weights)
    picks, taken = [], []
    for k, lens in enumerate(lengths):
        if budget_tokens is None:
            pick = np.arange(len(lens), dtype=np.int64)
        elif weights[k] <= 0 or not len(lens):
            pick = np.zeros(0, dtype=np.int64)
        else:
            target = budget_tokens * weights[k] / total_w
            passes = int(target // max(int(lens.sum()), 1)) + 1  # shuffled passes over the domain that reach it
            order = np.concatenate([rng.permutation(len(lens)) for _ in range(passes)])
            need = int(np.searchsorted(np.cumsum(lens[order]), target, side="left")) + 1  # until ≥ target
            pick = order[:need]
        taken.append(int(lens[pick].sum()))
        picks.append(pick + offsets[k])
    drawn = np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)
    return rng.permutation(drawn), taken


@dataclass
class Plan:
    """Packed rows as segments: row ``i`` is ``segments[rows[i]:rows[i + 1]]``, each (shard, start, length,
    first labelled position within the segment)."""

    segments: np.ndarray  # [n_segments, 4] int64
    rows: np.ndarray  # [n_rows + 1] int64
    documents: int  # documents (of the drawn order) that the rows hold


def pack_plan(order: np.ndarray, docs: np.ndarray, seq_len: int, *, completion_only: bool = False, max_rows: int | None = None) -> Plan:
    """Lay the documents ``docs[order]`` (rows of shard, start, length, prompt length) into ``[seq_len]`` rows
    without splitting any that fits in a row; stop after ``max_rows`` full rows (see module doc)."""
    seg, rows = array("q"), array("q", [0])
    fill = used = 0
    done = False
    for lo in range(0, len(order), 1 << 16):  # chunks: Python ints for speed, without listing every document
        for shard, start, length, prompt in docs[order[lo : lo + (1 << 16)]].tolist():
            for off in range(0, length, seq_len):
                n = min(seq_len, length - off)
                if fill + n > seq_len:  # the piece does not fit: the row is done (padding fills it)
                    rows.append(len(seg) // 4)
                    fill = 0
                    if max_rows is not None and len(rows) - 1 >= max_rows:
                        done = True
                        break
                # label position j ≥ 1 of the piece predicts doc token off + j; it counts unless in the prompt
                seg.extend((shard, start + off, n, max(1, prompt - off) if completion_only else 1))
                fill += n
            if done:
                break
            used += 1
        if done:
            break
    if fill and not done:
        rows.append(len(seg) // 4)
    return Plan(np.frombuffer(seg, dtype=np.int64).reshape(-1, 4), np.frombuffer(rows, dtype=np.int64), used)


def plan_stats(plan: Plan, shard_domain: np.ndarray, names: list[str], seq_len: int) -> dict[str, Any]:
    """Rows, documents, document tokens per domain, packing efficiency and loss-bearing tokens of a plan."""
    n_rows = len(plan.rows) - 1
    seg = plan.segments
    per_domain = np.bincount(shard_domain[seg[:, 0]], weights=seg[:, 2], minlength=len(names)) if len(seg) else np.zeros(len(names))
    return {
        "documents": plan.documents,
        "rows": n_rows,
        "tokens_per_domain": {n: int(t) for n, t in zip(names, per_domain) if t},
        "packing_efficiency": round(float(seg[:, 2].sum()) / max(n_rows * seq_len, 1), 4),
        "target_tokens": int(np.maximum(seg[:, 2] - seg[:, 3], 0).sum()),
    }


class PackedDataset:
    """Map-style dataset of packed rows assembled on demand from memory-mapped token shards and a plan.

    Nothing but the requested row is materialised, so memory does not depend on corpus size; ``len`` and indexing
    are all that ``transformers.Trainer`` (sequential sampler, accelerate's per-rank sharding, resume skipping)
    needs.
    """

    def __init__(self, shards: list[np.ndarray], segments: np.ndarray, rows: np.ndarray, seq_len: int, pad_id: int) -> None:
        self.shards, self.segments, self.rows = shards, segments, rows
        self.seq_len, self.pad_id = seq_len, pad_id

    def __len__(self) -> int:
        return len(self.rows) - 1

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        ids = np.full(self.seq_len, self.pad_id, dtype=np.int64)  # [T]
        pos = np.empty(self.seq_len, dtype=np.int64)  # [T]
        lab = np.full(self.seq_len, -100, dtype=np.int64)  # [T]
        fill = 0
        for shard, start, n, first in self.segments[self.rows[i] : self.rows[i + 1]].tolist():
            toks = self.shards[shard][start : start + n]
            ids[fill : fill + n] = toks
            pos[fill : fill + n] = np.arange(n)
            if first < n:
                lab[fill + first : fill + n] = toks[first:]
            fill += n
        pos[fill:] = np.arange(self.seq_len - fill)  # padding: positions restart like one more document
        return {"input_ids": ids, "position_ids": pos, "labels": lab}


def collate(features: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack packed rows (arrays or lists) into tensors; no attention mask, so position_ids define the document
    blocks."""
    import torch

    def stack(key: str) -> Any:
        return torch.from_numpy(np.asarray([f[key] for f in features], dtype=np.int64))

    return {
        "input_ids": stack("input_ids"),  # [B, T]
        "position_ids": stack("position_ids"),  # [B, T]
        "labels": stack("labels"),  # [B, T]
    }

import random

import numpy as np
import pytest
import torch

from midtrain.train.data import PackedDataset, collate, mix_documents, pack_plan, plan_stats


def reference_pack(docs, seq_len, pad_id):
    """The in-memory packing that training used before the token store (documents as (ids, mask) lists): the
    reference the memory-mapped rows must equal."""
    rows = {"input_ids": [], "position_ids": [], "labels": []}
    ids, pos, lab = [], [], []

    def flush():
        if not ids:
            return
        fill = seq_len - len(ids)
        rows["input_ids"].append(ids + [pad_id] * fill)
        rows["position_ids"].append(pos + list(range(fill)))
        rows["labels"].append(lab + [-100] * fill)
        ids.clear(), pos.clear(), lab.clear()

    for doc_ids, doc_mask in docs:
        for i in range(0, len(doc_ids), seq_len):
            piece_ids, piece_mask = doc_ids[i : i + seq_len], doc_mask[i : i + seq_len]
            if len(ids) + len(piece_ids) > seq_len:
                flush()
            ids += piece_ids
            pos += list(range(len(piece_ids)))
            lab += [-100] + [t if m else -100 for t, m in zip(piece_ids[1:], piece_mask[1:])]
    flush()
    return rows


def store_of(docs, n_shards=2):
    """Token shards and a document table ``[n, 4]`` (shard, start, length, prompt length) holding ``docs``
    ((ids, prompt length) pairs), spread over ``n_shards`` shards."""
    shards = [[] for _ in range(n_shards)]
    table = []
    for k, (ids, prompt) in enumerate(docs):
        s = k % n_shards
        table.append((s, len(shards[s]), len(ids), prompt))
        shards[s] += ids
    return [np.asarray(s, dtype=np.uint16) for s in shards], np.asarray(table, dtype=np.int64)


def rows_of(shards, table, seq_len, completion_only=False, order=None, max_rows=None):
    order = np.arange(len(table)) if order is None else order
    plan = pack_plan(order, table, seq_len, completion_only=completion_only, max_rows=max_rows)
    ds = PackedDataset(shards, plan.segments, plan.rows, seq_len, pad_id=0)
    return [ds[i] for i in range(len(ds))], plan


def as_lists(rows):
    return {k: [r[k].tolist() for r in rows] for k in ("input_ids", "position_ids", "labels")}


def test_rows_keep_documents_whole_and_mask_boundaries():
    shards, table = store_of([([1, 10, 11, 2], 0), ([1, 20, 2], 0), ([1, 30, 31, 32, 2], 0)])
    rows, _ = rows_of(shards, table, seq_len=8)
    got = as_lists(rows)
    assert got["input_ids"] == [[1, 10, 11, 2, 1, 20, 2, 0], [1, 30, 31, 32, 2, 0, 0, 0]]
    assert got["position_ids"] == [[0, 1, 2, 3, 0, 1, 2, 0], [0, 1, 2, 3, 4, 0, 1, 2]]
    assert got["labels"] == [[-100, 10, 11, 2, -100, 20, 2, -100], [-100, 30, 31, 32, 2, -100, -100, -100]]


def test_rows_split_only_documents_longer_than_a_row():
    shards, table = store_of([(list(range(1, 11)), 0)], n_shards=1)
    rows, _ = rows_of(shards, table, seq_len=4)
    assert [r["input_ids"].tolist() for r in rows] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 0, 0]]
    assert rows[1]["labels"].tolist() == [-100, 6, 7, 8]


@pytest.mark.parametrize("completion_only", [False, True])
def test_memmap_rows_equal_the_reference_packing(completion_only):
    rng = random.Random(0)
    docs = []
    for _ in range(300):
        n = rng.choice([rng.randint(2, 12), rng.randint(13, 40)])  # some longer than a row
        docs.append(([rng.randint(3, 299) for _ in range(n)], rng.randint(0, n)))
    shards, table = store_of(docs, n_shards=3)
    order = np.random.default_rng(1).permutation(len(docs))
    rows, plan = rows_of(shards, table, 16, completion_only, order=order)
    ref_docs = [(docs[k][0], [(not completion_only) or t >= docs[k][1] for t in range(len(docs[k][0]))]) for k in order]
    assert as_lists(rows) == reference_pack(ref_docs, 16, 0)
    stats = plan_stats(plan, np.zeros(3, dtype=np.int64), ["d"], 16)
    assert stats["target_tokens"] == sum(sum(1 for x in r["labels"] if x != -100) for r in rows)
    assert stats["rows"] == len(rows) and stats["documents"] == len(docs)


def test_plan_stops_at_max_rows_with_the_same_first_rows():
    rng = random.Random(2)
    shards, table = store_of([([rng.randint(3, 99) for _ in range(rng.randint(2, 20))], 0) for _ in range(200)])
    full, _ = rows_of(shards, table, 16)
    cut, plan = rows_of(shards, table, 16, max_rows=10)
    assert len(cut) == 10 and as_lists(cut) == as_lists(full[:10])
    assert plan.documents < 200


def test_mixture_weights_and_small_domain_repeats():
    a, b = np.full(5, 10), np.full(100, 10)
    order, taken = mix_documents([a, b], [0.75, 0.25], budget_tokens=400, seed=0)
    assert taken == [300, 100]  # the small domain repeats to reach its share
    assert len(order) == 40 and (order < 5).sum() == 30 and len(set(order[order < 5].tolist())) == 5
    again, _ = mix_documents([a, b], [0.75, 0.25], budget_tokens=400, seed=0)
    other, _ = mix_documents([a, b], [0.75, 0.25], budget_tokens=400, seed=1)
    assert again.tolist() == order.tolist() and other.tolist() != order.tolist()  # order follows the seed


def test_mixture_without_budget_takes_every_document_once():
    order, taken = mix_documents([np.full(3, 4), np.full(2, 7)], [1.0, 0.0], budget_tokens=None, seed=0)
    assert sorted(order.tolist()) == [0, 1, 2, 3, 4] and taken == [12, 14]


def test_collate_stacks_arrays_and_lists():
    batch = collate([{"input_ids": np.array([1, 2]), "position_ids": [0, 1], "labels": np.array([-100, 2])}] * 2)
    assert batch["input_ids"].dtype == torch.long and batch["labels"].tolist() == [[-100, 2], [-100, 2]]


def test_packed_documents_do_not_attend_to_each_other(nano_model):
    """Logits of a document packed after another equal its logits alone (transformers' packed-sequence mask)."""
    from midtrain.models.init import load_model
    from midtrain.train.lm import prepare_for_packed_training

    model = prepare_for_packed_training(load_model(nano_model)).train()  # as in training: train mode, no cache
    d1, d2 = [1, 40, 41, 42, 43, 2], [1, 50, 51, 52, 2]
    shards, table = store_of([(d1, 0), (d2, 0)], n_shards=1)
    rows, _ = rows_of(shards, table, 12)
    batch = collate([rows[0]])
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0, 6:11]
        alone = model(input_ids=torch.tensor([d2])).logits[0]
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-4)
    model.config.use_cache = True  # the transformers default: the cache silently disables the packed mask
    with torch.no_grad():
        leaky = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0, 6:11]
    assert not torch.allclose(leaky, alone, atol=1e-3), "transformers now masks packed rows with a cache too"

import json

import pytest
import torch

from midtrain.errors import DataError
from midtrain.train.data import Doc, collate, load_documents, mix, pack


def test_pack_keeps_documents_whole_and_masks_boundaries():
    docs = [Doc([1, 10, 11, 2], [True] * 4), Doc([1, 20, 2], [True] * 3), Doc([1, 30, 31, 32, 2], [True] * 5)]
    rows = pack(docs, seq_len=8, pad_id=0)
    assert rows.input_ids == [[1, 10, 11, 2, 1, 20, 2, 0], [1, 30, 31, 32, 2, 0, 0, 0]]
    assert rows.position_ids == [[0, 1, 2, 3, 0, 1, 2, 0], [0, 1, 2, 3, 4, 0, 1, 2]]
    assert rows.labels == [[-100, 10, 11, 2, -100, 20, 2, -100], [-100, 30, 31, 32, 2, -100, -100, -100]]


def test_pack_splits_only_documents_longer_than_a_row():
    rows = pack([Doc(list(range(1, 11)), [True] * 10)], seq_len=4, pad_id=0)
    assert rows.input_ids == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 0, 0]]
    assert rows.labels[1] == [-100, 6, 7, 8]


def test_completion_only_mask(tokenizer_dir, tmp_path):
    from midtrain.models.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    p = tmp_path / "pc.jsonl"
    p.write_text(json.dumps({"prompt": "a=1.?a<think>", "completion": "a=1.</think>"}) + "\n")
    (doc,) = load_documents([p], tok, completion_only=True)
    n_prompt = 1 + len(tok("a=1.?a<think>", add_special_tokens=False)["input_ids"])
    assert doc.mask == [False] * n_prompt + [True] * (len(doc.ids) - n_prompt)
    (full,) = load_documents([p], tok)
    assert all(full.mask) and full.ids == doc.ids


def test_augmented_records_render_with_or_without_thoughts(tokenizer_dir, tmp_path):
    from midtrain.models.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    rec = {"id": "x", "segments": [{"text": "a=1.", "thought": "so a is 1"}, {"text": "b=2.", "thought": ""}], "status": "accepted"}
    p = tmp_path / "aug.jsonl"
    p.write_text(json.dumps(rec) + "\n" + json.dumps({**rec, "id": "y", "status": "rejected"}) + "\n")
    (think,) = load_documents([p], tok, fmt="augmented")
    (raw,) = load_documents([p], tok, fmt="augmented_raw")
    assert tok.decode(think.ids[1:-1]) == "a=1.<think>so a is 1</think>b=2."
    assert tok.decode(raw.ids[1:-1]) == "a=1.b=2."


def test_mixture_weights_and_replay_shares():
    a = [Doc([0] * 10, [True] * 10, "a") for _ in range(5)]
    b = [Doc([0] * 10, [True] * 10, "b") for _ in range(100)]
    docs, taken = mix({"a": a, "b": b}, {"a": 0.75, "b": 0.25}, budget_tokens=400, seed=0)
    assert taken == {"a": 300, "b": 100}  # the small domain repeats to reach its share
    assert len(docs) == 40


def test_missing_column_and_empty_file_name_the_file(tokenizer_dir, tmp_path):
    from midtrain.models.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    p = tmp_path / "bad.jsonl"
    p.write_text('{"body": "x"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: record has no 'text'.*fields: body"):
        load_documents([p], tok)
    e = tmp_path / "empty.jsonl"
    e.write_text("\n")
    with pytest.raises(DataError, match="empty dataset"):
        load_documents([e], tok)


def test_packed_documents_do_not_attend_to_each_other(nano_model):
    """Logits of a document packed after another equal its logits alone (transformers' packed-sequence mask)."""
    from midtrain.models.init import load_model
    from midtrain.train.lm import prepare_for_packed_training

    model = prepare_for_packed_training(load_model(nano_model)).train()  # as in training: train mode, no cache
    d1, d2 = [1, 40, 41, 42, 43, 2], [1, 50, 51, 52, 2]
    rows = pack([Doc(d1, [True] * 6), Doc(d2, [True] * 5)], seq_len=12, pad_id=0)
    batch = collate([rows[0]])
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0, 6:11]
        alone = model(input_ids=torch.tensor([d2])).logits[0]
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-4)
    model.config.use_cache = True  # the transformers default: the cache silently disables the packed mask
    with torch.no_grad():
        leaky = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0, 6:11]
    assert not torch.allclose(leaky, alone, atol=1e-3), "transformers now masks packed rows with a cache too"

"""The in-process transformers annotator (a random nano model): the plumbing, counts and retries."""

from __future__ import annotations

from midtrain.augment.augment import read_augmented, run
from midtrain.augment.config import AugmentConfig


def test_inprocess_annotator_counts_every_chunk(tmp_path, nano_model, make_corpus):
    corpus = make_corpus(tmp_path / "c.jsonl", 4, seed=1, paragraphs=(1, 2))
    prompt = tmp_path / "p.txt"
    prompt.write_text("Copy the text and add thoughts in <think> tags:\n{text}\n")
    cfg = AugmentConfig.from_dict(
        {
            "input": [str(corpus)],
            "out": str(tmp_path / "aug"),
            "tokenizer": str(nano_model),
            "max_chunk_tokens": 32,
            "max_new_tokens": 16,
            "retries": 1,
            "prompt": str(prompt),
            "batch_chunks": 4,
            "annotator": {"backend": "transformers", "model": str(nano_model), "batch_size": 8},
        }
    )
    m = run(cfg).metrics
    assert m["chunks"] > 0 and m["accepted"] + m["rejected"] + m["failed"] == m["chunks"]
    assert sum(m["rejected_by_reason"].values()) == m["rejected"]
    recs = list(read_augmented(cfg.out, status=None))
    assert len(recs) == m["chunks"] and all(r["annotator"] == "transformers:nano" for r in recs)
    assert all(r["attempts"] == 2 for r in recs if r["status"] == "rejected")  # the retry re-asked
    assert all(isinstance(r.get("answer"), str) for r in recs if r["status"] == "rejected")

"""Token-budgeted chunking: lossless, within budget, at paragraph/sentence boundaries."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from midtrain.augment.chunking import PARAGRAPH, chunk_document, chunk_text, sentences, shard_chunks, split_units
from midtrain.models.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    return load_tokenizer(tokenizer_dir)


def n_tokens(tok, text):
    return len(tok(text, add_special_tokens=False)["input_ids"])


def test_lossless_and_within_budget(tok, make_prose):
    text = make_prose(1, 12)
    for budget in (16, 40, 200, 10_000):
        chunks = chunk_text(text, tok, budget)
        assert "".join(c for c, _ in chunks) == text
        assert all(n == n_tokens(tok, c) <= budget for c, n in chunks)
    assert len(chunk_text(text, tok, 10_000)) == 1


def test_prefers_paragraph_then_sentence_boundaries(tok, make_prose):
    text = make_prose(2, 8)
    paragraphs = text.count("\n\n") + 1
    chunks = chunk_text(text, tok, 120)
    assert 1 < len(chunks) < paragraphs * 4
    for c, _ in chunks[:-1]:  # every cut falls after a sentence end (. ! ?) and whitespace
        assert c.rstrip()[-1] in ".!?", repr(c[-20:])


def test_long_words_and_whitespace(tok):
    text = "x" * 500 + " short. " + "\n\n\n" + "y" * 30
    chunks = chunk_text(text, tok, 20)
    assert "".join(c for c, _ in chunks) == text
    assert all(n <= 20 for _, n in chunks)
    assert chunk_text("   \n\n ", tok, 20) == []


def test_sentence_rules():
    assert sentences("Mr. Darcy came. He left! Did he? Yes.") == ["Mr. Darcy came. ", "He left! ", "Did he? ", "Yes."]
    assert sentences("See Fig. 2 and J. Smith, i.e. the author. Next.") == ["See Fig. 2 and J. Smith, i.e. the author. ", "Next."]
    assert split_units("\n\nA.\n\nB.", PARAGRAPH) == ["\n\nA.\n\n", "B."]


def test_chunk_ids(tok, make_prose):
    chunks = chunk_document("doc7", make_prose(3, 6), tok, 40)
    assert [c.id for c in chunks] == [f"doc7#{k:04d}" for k in range(len(chunks))]
    assert all(c.source_id == "doc7" and c.tokens <= 40 for c in chunks)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=400), budget=st.integers(8, 64))
def test_property_lossless_within_budget(tok, text, budget):
    chunks = chunk_text(text, tok, budget)
    pos = 0  # chunks are consecutive cuts of the text; only whitespace-only pieces may be dropped
    for c, _ in chunks:
        idx = text.find(c, pos)
        assert idx >= 0 and text[pos:idx].strip() == ""
        pos = idx + len(c)
    assert text[pos:].strip() == ""
    assert all(n_tokens(tok, c) <= budget and c.strip() for c, _ in chunks)


def test_shard_i_of_n_reads_about_one_nth_of_the_corpus(tmp_path, tok, make_corpus, monkeypatch):
    from midtrain.augment import chunking
    from midtrain.augment.config import AugmentConfig

    lines = make_corpus(tmp_path / "all.txt", 48, seed=1).read_text().splitlines(keepends=True)
    (tmp_path / "a.jsonl").write_text("".join(lines[:24]))
    (tmp_path / "b.jsonl").write_text("".join(lines[24:]))
    base = {"input": [str(tmp_path / "*.jsonl")], "out": str(tmp_path / "aug"), "tokenizer": "tok", "max_chunk_tokens": 48}
    yielded: list[int] = []
    real = chunking.iter_corpus

    def counting(*a, **k):
        yielded.append(0)
        for rec in real(*a, **k):
            yielded[-1] += 1
            yield rec

    monkeypatch.setattr(chunking, "iter_corpus", counting)
    whole = shard_chunks(AugmentConfig.from_dict({**base, "num_shards": 1}), tok, 0)
    assert yielded == [48]
    yielded.clear()
    cfg = AugmentConfig.from_dict({**base, "num_shards": 4})
    parts = [shard_chunks(cfg, tok, i) for i in range(4)]
    assert sum(yielded) == 48 and all(6 <= k <= 18 for k in yielded), yielded  # ≈ 12 each, never the whole corpus
    assert sorted(c.id for p in parts for c in p) == sorted(c.id for c in whole)  # same ids, each chunk once
    assert [c.text for c in parts[2]] == [c.text for c in shard_chunks(cfg, tok, 2)]  # stable on a re-read (resume)
    yielded.clear()
    capped = AugmentConfig.from_dict({**base, "num_shards": 4, "max_documents": 30})  # the first 30 of the corpus
    docs = {c.source_id for i in range(4) for c in shard_chunks(capped, tok, i)}
    assert docs == {f"doc{k}" for k in range(30)}

import json
from pathlib import Path

import numpy as np
import pytest
from test_data import reference_pack  # tests/train is on sys.path (rootdir-relative, no __init__)

from midtrain.errors import ConfigError, DataError, RunDirError
from midtrain.train.corpus import CorpusConfig
from midtrain.train.data import PackedDataset, pack_plan
from midtrain.train.tokenize import TokenizeConfig, open_store, run, token_dtype


def tokenize(tokenizer_dir, out, data, fmt="auto", **kw):
    corpus = CorpusConfig(files=[str(d) for d in data], format=fmt)
    return run(TokenizeConfig(model=str(tokenizer_dir), corpus=corpus, out=str(out), **kw))


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def doc_tokens(store, domain="default"):
    """Every document of a domain as (token list, prompt length)."""
    docs = store.documents(domain)
    return [(store.shards[s][a : a + n].tolist(), p) for s, a, n, p in docs.tolist()]


def test_rows_from_the_store_equal_the_reference_packing(tokenizer_dir, corpus, tmp_path):
    from midtrain.models.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    res = tokenize(tokenizer_dir, tmp_path / "t", [corpus])
    store = open_store(tmp_path / "t", tok)
    texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
    expected = [[tok.bos_token_id, *tok(t, add_special_tokens=False)["input_ids"], tok.eos_token_id] for t in texts]
    assert [ids for ids, _ in doc_tokens(store)] == expected  # records become documents as before
    assert res.metrics["documents"] == 600 and res.metrics["tokens"] == sum(map(len, expected))
    docs = store.documents("default")
    plan = pack_plan(np.arange(len(docs)), docs, 64)
    ds = PackedDataset(store.shards, plan.segments, plan.rows, 64, tok.pad_token_id)
    ref = reference_pack([(ids, [True] * len(ids)) for ids in expected], 64, tok.pad_token_id)
    assert [ds[i]["input_ids"].tolist() for i in range(len(ds))] == ref["input_ids"]
    assert [ds[i]["labels"].tolist() for i in range(len(ds))] == ref["labels"]
    assert [ds[i]["position_ids"].tolist() for i in range(len(ds))] == ref["position_ids"]


def test_completion_only_masks_the_prompt(tokenizer_dir, tmp_path):
    from midtrain.models.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    p = write(tmp_path / "pc.jsonl", [{"prompt": "a=1.?a<think>", "completion": "a=1.</think>"}])
    tokenize(tokenizer_dir, tmp_path / "t", [p], completion_only=True)
    store = open_store(tmp_path / "t", tok)
    ((ids, n_prompt),) = doc_tokens(store)
    assert n_prompt == 1 + len(tok("a=1.?a<think>", add_special_tokens=False)["input_ids"])
    docs = store.documents("default")
    for completion_only, first in ((True, n_prompt), (False, 1)):
        plan = pack_plan(np.arange(1), docs, 32, completion_only=completion_only)
        labels = PackedDataset(store.shards, plan.segments, plan.rows, 32, 0)[0]["labels"].tolist()
        assert labels[: len(ids)] == [-100] * first + ids[first:]


def test_completion_only_needs_a_prompt(tokenizer_dir, corpus, tmp_path):
    with pytest.raises(DataError, match="completion_only: no record"):
        tokenize(tokenizer_dir, tmp_path / "t", [corpus], completion_only=True)
    assert not (tmp_path / "t").exists()


def test_augmented_records_render_with_or_without_thoughts(tokenizer_dir, tmp_path):
    from midtrain.models.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    rec = {"id": "x", "segments": [{"text": "a=1.", "thought": "so a is 1"}, {"text": "b=2.", "thought": ""}], "status": "accepted"}
    p = write(tmp_path / "aug.jsonl", [rec, {**rec, "id": "y", "status": "rejected"}])
    tokenize(tokenizer_dir, tmp_path / "think", [p], fmt="augmented")
    tokenize(tokenizer_dir, tmp_path / "raw", [p], fmt="augmented_raw")
    ((think, _),) = doc_tokens(open_store(tmp_path / "think"))
    ((raw, _),) = doc_tokens(open_store(tmp_path / "raw"))
    assert tok.decode(think[1:-1]) == "a=1.<think>so a is 1</think>b=2."
    assert tok.decode(raw[1:-1]) == "a=1.b=2."


def test_errors_name_the_file_and_line(tokenizer_dir, tmp_path):
    good = write(tmp_path / "good.jsonl", [{"text": "a=1."}] * 3)
    bad = write(tmp_path / "bad.jsonl", [{"text": "a"}, {"body": "x"}])
    with pytest.raises(DataError, match=r"bad.jsonl:2: record has no 'text'.*fields: body"):
        tokenize(tokenizer_dir, tmp_path / "t", [good, bad], num_proc=2)  # raised in a worker process
    empty = write(tmp_path / "empty.jsonl", [])
    with pytest.raises(DataError, match="empty dataset.*empty.jsonl"):
        tokenize(tokenizer_dir, tmp_path / "t", [empty])
    assert not (tmp_path / "t").exists()


def test_uint16_when_the_vocab_fits_else_uint32(tokenizer_dir, corpus, tmp_path, monkeypatch):
    assert token_dtype(300) == "uint16" and token_dtype(1 << 16) == "uint16"
    assert token_dtype((1 << 16) + 1) == "uint32" and token_dtype(128_256) == "uint32"  # Llama-3
    tokenize(tokenizer_dir, tmp_path / "u16", [corpus])
    import midtrain.train.tokenize as tz

    monkeypatch.setattr(tz, "token_dtype", lambda vocab_size: "uint32")  # as for a vocabulary over 65,536
    tokenize(tokenizer_dir, tmp_path / "u32", [corpus])
    a, b = open_store(tmp_path / "u16"), open_store(tmp_path / "u32")
    assert a.manifest["dtype"] == "uint16" and b.manifest["dtype"] == "uint32"
    assert a.shards[0].dtype == np.uint16 and b.shards[0].dtype == np.uint32
    assert (tmp_path / "u32" / "000-00000.bin").stat().st_size == 2 * (tmp_path / "u16" / "000-00000.bin").stat().st_size
    assert doc_tokens(a) == doc_tokens(b)


def test_parallel_shards_equal_one_process_and_rerun_is_a_cache_hit(tokenizer_dir, corpus, tmp_path):
    lines = corpus.read_text().splitlines(keepends=True)
    parts = [tmp_path / f"part{i}.jsonl" for i in range(3)]
    for i, p in enumerate(parts):
        p.write_text("".join(lines[i * 200 : (i + 1) * 200]))
    one = tokenize(tokenizer_dir, tmp_path / "one", parts, num_proc=1)
    three = tokenize(tokenizer_dir, tmp_path / "three", parts, num_proc=3)
    for i in range(3):
        name = f"000-{i:05d}"
        assert (tmp_path / "one" / f"{name}.bin").read_bytes() == (tmp_path / "three" / f"{name}.bin").read_bytes()
        assert np.array_equal(np.load(tmp_path / "one" / f"{name}.npy"), np.load(tmp_path / "three" / f"{name}.npy"))
    assert not one.cached and not three.cached and three.metrics["tokens"] == one.metrics["tokens"]
    assert tokenize(tokenizer_dir, tmp_path / "one", parts, num_proc=2).cached  # num_proc does not enter the key
    parts[0].write_text(lines[0])
    with pytest.raises(RunDirError, match="input 'default\\[0\\]'"):  # changed content is not a cache hit
        tokenize(tokenizer_dir, tmp_path / "one", parts)


def test_mixture_and_replay_domains(tokenizer_dir, corpus, tmp_path):
    a = write(tmp_path / "a.jsonl", [{"text": "a=1."}] * 4)
    mix = CorpusConfig(mixture={"zz": [str(a)], "aa": [str(corpus)]}, replay=[str(a)])
    cfg = TokenizeConfig(model=str(tokenizer_dir), corpus=mix, out=str(tmp_path / "t"))
    run(cfg)
    store = open_store(tmp_path / "t")
    assert store.names == ["aa", "zz", "replay"] and len(store.documents("zz")) == 4 and len(store.documents("aa")) == 600
    with pytest.raises(ConfigError, match="corpus.mixture.replay"):
        TokenizeConfig(model="m", corpus=CorpusConfig(mixture={"replay": ["x"]}, replay=["y"]), out="o").validate()


def test_corrupt_or_foreign_token_dirs_are_refused(tokenizer_dir, nano_model, corpus, tmp_path):
    from midtrain.models.tokenizer import TokenizerConfig, load_tokenizer, train_tokenizer

    tokenize(tokenizer_dir, tmp_path / "t", [corpus])
    open_store(tmp_path / "t", load_tokenizer(tokenizer_dir))  # the good one opens
    open_store(tmp_path / "t", load_tokenizer(nano_model))  # so does a model saved with the same tokenizer
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x.txt").write_text("x")
    with pytest.raises(RunDirError, match="plain.*not a usable `midtrain tokenize` directory"):
        open_store(tmp_path / "plain")
    train_tokenizer(TokenizerConfig(corpus=[str(corpus)], out=str(tmp_path / "tok2"), kind="char"))
    with pytest.raises(RunDirError, match="another tokenizer"):
        open_store(tmp_path / "t", load_tokenizer(tmp_path / "tok2"))
    man = json.loads((tmp_path / "t" / "manifest.json").read_text())
    (tmp_path / "t" / "manifest.json").write_text(json.dumps({**man, "version": 99}))
    with pytest.raises(RunDirError, match="manifest.json.*version"):
        open_store(tmp_path / "t")
    (tmp_path / "t" / "manifest.json").write_text(json.dumps(man))
    shard = tmp_path / "t" / "000-00000.bin"
    shard.write_bytes(shard.read_bytes()[:-2])  # truncated shard
    with pytest.raises(RunDirError, match="000-00000.bin"):
        open_store(tmp_path / "t")
    (tmp_path / "t" / "COMPLETE").unlink()
    with pytest.raises(RunDirError, match="not a finished tokenize run"):
        open_store(tmp_path / "t")


def test_index_out_of_bounds_is_refused(tokenizer_dir, corpus, tmp_path):
    tokenize(tokenizer_dir, tmp_path / "t", [corpus])
    idx_path = tmp_path / "t" / "000-00000.npy"
    idx = np.load(idx_path)
    idx[-1, 1] += 5  # the last document runs past the end of the shard
    np.save(idx_path, idx)
    with pytest.raises(RunDirError, match="000-00000.npy.*bounds"):
        open_store(Path(tmp_path / "t"))


def test_token_ids_are_checked_against_the_model_vocabulary(tokenizer_dir, corpus, tmp_path):
    tokenize(tokenizer_dir, tmp_path / "t", [corpus])
    man = json.loads((tmp_path / "t" / "manifest.json").read_text())
    shard = man["domains"][0]["shards"][0]
    top = shard["max_id"]
    assert top == int(open_store(tmp_path / "t").shards[0].max())  # recorded while tokenizing
    open_store(tmp_path / "t", vocab_size=top + 1)  # every id fits
    with pytest.raises(DataError, match=rf"manifest.json: shard {shard['bin']} holds token id {top}, outside .* {top} ids"):
        open_store(tmp_path / "t", vocab_size=top)
    del shard["max_id"]  # a store written before max_id was recorded: the data is scanned
    (tmp_path / "t" / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(DataError, match=rf"{shard['bin']}: token id {top} is outside the model's vocabulary of {top} ids"):
        open_store(tmp_path / "t", vocab_size=top)
    del man["domains"][0]["shards"][0]["index"]
    (tmp_path / "t" / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(DataError, match=r"manifest.json: missing key 'domains\[0\].shards\[0\].index'"):
        open_store(tmp_path / "t")

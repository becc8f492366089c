"""``midtrain augment`` on a glob and on a hub-layout Parquet dir: same chunks as the JSONL, run key follows the files."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from midtrain.augment.augment import read_augmented, run
from midtrain.augment.config import AugmentConfig
from midtrain.errors import RunDirError


def cfg_for(tmp_path: Path, inputs: list[str], out: str, tokenizer_dir: Path, **kw) -> AugmentConfig:
    base = dict(input=inputs, out=str(tmp_path / out), tokenizer=str(tokenizer_dir), max_chunk_tokens=64, batch_chunks=8, num_shards=3)
    return AugmentConfig.from_dict({**base, **kw})


def chunks(out: str) -> dict[str, str]:
    return {r["id"]: r["chunk"] for r in read_augmented(out, status=None)}


def test_glob_and_hub_dir_inputs_augment_like_the_jsonl(tmp_path, prose_corpus, tokenizer_dir):
    recs = [json.loads(line) for line in prose_corpus.read_text().splitlines()]
    for k in range(2):
        (tmp_path / "parts").mkdir(exist_ok=True)
        (tmp_path / "parts" / f"p{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs[k * 10 : (k + 1) * 10]))
        (tmp_path / "hub" / "data").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(recs[k * 10 : (k + 1) * 10]), tmp_path / "hub" / "data" / f"train-0000{k}-of-00002.parquet")
    (tmp_path / "hub" / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n---\n"
    )
    ref = run(cfg_for(tmp_path, [str(prose_corpus)], "ref", tokenizer_dir, num_shards=1))
    glob = cfg_for(tmp_path, [str(tmp_path / "parts" / "*.jsonl")], "glob", tokenizer_dir)
    assert run(glob).metrics["shards_done"] == 3
    hub = run(cfg_for(tmp_path, [str(tmp_path / "hub")], "hub-out", tokenizer_dir))
    assert chunks(glob.out) == chunks(hub.out) == chunks(ref.out) and len(chunks(ref.out)) > 20
    assert run(glob).cached
    with open(tmp_path / "parts" / "p1.jsonl", "a") as f:  # the glob's files changed: not the same run any more
        f.write(json.dumps({"id": "new", "text": "A new document. It has two sentences."}) + "\n")
    with pytest.raises(RunDirError, match=r"input\[0\]\[1\]"):
        run(glob)

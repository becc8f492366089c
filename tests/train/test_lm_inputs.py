"""`pretrain`/`sft` train from every input form `midtrain.data` reads: a glob, a directory of Parquet shards in the
hub's layout (README `configs:`), a `save_to_disk` directory — the same rows as the plain JSONL file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from midtrain.data.jsonl import iter_jsonl
from midtrain.train.corpus import CorpusConfig
from midtrain.train.pretrain import PretrainConfig, run


def write_forms(corpus: Path, root: Path) -> dict[str, str]:
    """The corpus as a glob of JSONL parts, a hub-layout Parquet dir, and a save_to_disk dir."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    recs = [{"id": r["id"], "text": r["text"]} for r in iter_jsonl(corpus)][:240]
    parts = root / "parts"
    parts.mkdir(parents=True)
    for k in range(3):
        (parts / f"part-{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs[k * 80 : (k + 1) * 80]))
    hub = root / "hub"
    (hub / "data").mkdir(parents=True)
    for k in range(2):
        pq.write_table(pa.Table.from_pylist(recs[k * 120 : (k + 1) * 120]), hub / "data" / f"train-0000{k}-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(recs[:5]), hub / "data" / "test-00000-of-00001.parquet")  # not train: left out
    (hub / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n"
        "  - split: test\n    path: data/test-*\n---\n# a dataset card\n"
    )
    datasets.Dataset.from_list(recs).save_to_disk(str(root / "saved"))
    (root / "plain.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return {"plain": str(root / "plain.jsonl"), "glob": str(parts / "*.jsonl"), "hub": str(hub), "saved": str(root / "saved")}


@pytest.mark.slow
def test_glob_parquet_shards_and_save_to_disk_all_train_on_the_same_rows(nano_model, corpus, tmp_path):
    forms = write_forms(corpus, tmp_path / "in")
    metrics = {}
    for name, spec in forms.items():
        cfg = PretrainConfig(
            model=str(nano_model), corpus=CorpusConfig(files=[spec]), out=str(tmp_path / name), seq_len=64, batch_size=8, max_steps=3
        )
        metrics[name] = run(cfg).metrics
        assert (tmp_path / name / "model.safetensors").is_file()
    plain = metrics.pop("plain")
    for name, m in metrics.items():  # same documents, same order from the seed, so the same rows and losses
        assert (m["documents"], m["rows"], m["target_tokens"]) == (plain["documents"], plain["rows"], plain["target_tokens"]), name
        assert m["final_loss"] == pytest.approx(plain["final_loss"], rel=1e-4), name

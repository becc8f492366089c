"""The ``corpus`` section: declared once, shared by pretrain, sft and tokenize; the flat keys of before are refused
with one line naming the new key."""

from __future__ import annotations

import dataclasses

import pytest

from midtrain.cli import main
from midtrain.config import load_config
from midtrain.errors import ConfigError
from midtrain.train.corpus import CORPUS_RENAMED, CorpusConfig
from midtrain.train.lm import token_config
from midtrain.train.pretrain import PretrainConfig
from midtrain.train.sft import SFTConfig
from midtrain.train.tokenize import TokenizeConfig

STAGES = [PretrainConfig, SFTConfig, TokenizeConfig]


@pytest.mark.parametrize("cls", STAGES)
def test_the_stages_share_one_section_and_declare_none_of_its_keys(cls):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert fields["corpus"].default_factory() == CorpusConfig()  # type: ignore[misc]
    assert not set(fields) & {f.name for f in dataclasses.fields(CorpusConfig)}  # files, format, ... only in the section
    assert cls.RENAMED.items() >= CORPUS_RENAMED.items()


@pytest.mark.parametrize("cls", STAGES)
def test_the_section_from_yaml_and_flags(cls, tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: m\nout: o\ncorpus:\n  files: [a.jsonl]\n  format: augmented\n  replay: [r.jsonl]\n")
    cfg = load_config(cls, f, ["corpus.replay_format=text", "replay_share=0.2"] if cls is not TokenizeConfig else [])
    assert cfg.corpus.files == ["a.jsonl"] and cfg.corpus.format == "augmented" and cfg.corpus.replay == ["r.jsonl"]
    assert cfg.corpus.text_field == "text"  # a partial section keeps the section's defaults


@pytest.mark.parametrize("cls", STAGES)
@pytest.mark.parametrize("old, new", sorted(CORPUS_RENAMED.items()))
def test_flat_keys_of_before_name_the_new_key(cls, old, new, tmp_path):
    f = tmp_path / "old.yaml"
    f.write_text(f"model: m\nout: o\n{old}: {'[x]' if old in ('data', 'replay') else '{}' if old == 'mixture' else 'text'}\n")
    with pytest.raises(ConfigError, match=rf"^key '{old}' in .*old\.yaml is now '{new}'$"):
        load_config(cls, f)
    with pytest.raises(ConfigError, match=rf"^key '{old}' is now '{new}'$"):
        load_config(cls, None, [f"{old}=text"])


def test_an_old_flag_is_one_line_naming_the_new_key(capsys):
    assert main(["pretrain", "--model", "m", "--data", "a.jsonl", "--out", "o"]) == 2
    assert capsys.readouterr().err.strip() == "error: key 'data' is now 'corpus.files'"
    assert main(["tokenize", "--model", "m", "--corpus.files", "a.jsonl", "--format", "text", "--out", "o"]) == 2
    assert capsys.readouterr().err.strip() == "error: key 'format' is now 'corpus.format'"


def test_checks_name_the_section_keys():
    with pytest.raises(ConfigError, match="key 'corpus.files': give at least one training file"):
        PretrainConfig(model="m", out="o").validate()
    with pytest.raises(ConfigError, match="key 'corpus.replay': replay_share > 0 needs replay files"):
        PretrainConfig(model="m", out="o", corpus=CorpusConfig(files=["a"]), replay_share=0.2).validate()
    with pytest.raises(ConfigError, match="key 'completion_only': format 'text'"):
        TokenizeConfig(model="m", out="o", corpus=CorpusConfig(files=["a"], format="text"), completion_only=True).validate()
    with pytest.raises(ConfigError, match="key 'tokens': .*leave the corpus section empty"):
        PretrainConfig(model="m", out="o", corpus=CorpusConfig(files=["a"]), tokens="t").validate()


def test_the_first_use_store_reads_the_stages_corpus(tmp_path):
    corpus = CorpusConfig(files=["a.jsonl"], format="augmented", text_field="body", replay=["r.jsonl"], replay_format="text")
    cfg = PretrainConfig(model="m", out="o", corpus=corpus, completion_only=False, num_proc=3)
    tcfg = token_config(cfg, tmp_path / "tokens")
    assert tcfg.corpus == corpus.replace(replay=[])  # replay only when replay_share > 0: it is not trained on
    assert token_config(PretrainConfig(**{**vars(cfg), "replay_share": 0.3}), tmp_path).corpus == corpus
    assert (tcfg.num_proc, tcfg.out) == (3, str(tmp_path / "tokens"))

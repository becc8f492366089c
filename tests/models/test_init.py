"""The one model loader: what loads, what is refused (missing or mis-shaped weights, another kind of model, a
pickle), and that every stage that reads a model refuses through it, before its run directory exists."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from midtrain.cli import main
from midtrain.errors import MidtrainError
from midtrain.models.init import check_model_dir, load_model, load_model_config
from midtrain.models.tokenizer import load_tokenizer


def copy_model(nano_model: Path, to: Path) -> Path:
    shutil.copytree(nano_model, to)
    return to


def drop_tensor(model: Path, name_part: str) -> str:
    """Remove the first tensor whose name contains ``name_part`` from the checkpoint; returns its name."""
    path = model / "model.safetensors"
    tensors = load_file(str(path))
    name = next(k for k in sorted(tensors) if name_part in k)
    del tensors[name]
    save_file(tensors, str(path), metadata={"format": "pt"})
    return name


def test_a_whole_checkpoint_loads_and_a_tied_head_is_not_missing(nano_model):
    conf = load_model_config(nano_model)
    assert conf.tie_word_embeddings  # the nano preset ties: lm_head is the embedding, never "missing"
    model = load_model(nano_model)
    assert model.dtype == torch.float32 and model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert load_model(nano_model, dtype="bfloat16").dtype == torch.bfloat16
    assert check_model_dir(nano_model).model_type == "llama"


def test_missing_tensors_are_refused_not_initialised_at_random(nano_model, tmp_path):
    model = copy_model(nano_model, tmp_path / "m")
    name = drop_tensor(model, "layers.1.mlp")
    with pytest.raises(MidtrainError, match=rf"weights do not match its llama config \(1 missing or mis-shaped tensors, e.g. {name}\)"):
        load_model(model)


def test_mis_shaped_weights_and_no_weights_are_refused(nano_model, tmp_path):
    other = copy_model(nano_model, tmp_path / "wide")
    conf = json.loads((other / "config.json").read_text())
    conf.update(intermediate_size=conf["intermediate_size"] * 2)
    (other / "config.json").write_text(json.dumps(conf))
    with pytest.raises(MidtrainError, match=f"model '{other}': weights do not"):
        load_model(other)
    bare = copy_model(nano_model, tmp_path / "bare")
    (bare / "model.safetensors").unlink()
    with pytest.raises(MidtrainError, match=f"model '{bare}': weights do not load as a llama model"):
        load_model(bare)


def test_other_kinds_of_checkpoint_are_refused(nano_model, tmp_path):
    from transformers import BertConfig, BertModel

    bert = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)).save_pretrained(
        bert
    )
    with pytest.raises(MidtrainError, match="is a BertModel .* not a causal language model"):
        load_model(bert)
    with pytest.raises(MidtrainError, match="expected qwen2"):
        load_model(nano_model, expect_arch="qwen2")
    with pytest.raises(MidtrainError, match="no config.json"):
        check_model_dir(tmp_path)

    class Payload:
        def __reduce__(self):
            return (print, ("unpickled!",))

    pickled = copy_model(nano_model, tmp_path / "pickled")
    (pickled / "model.safetensors").unlink()
    (pickled / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(MidtrainError, match="refused to load the pickled weights"):
        load_model(pickled)


def test_every_stage_that_reads_a_model_refuses_a_broken_one_before_its_run(nano_model, corpus, tmp_path, capsys):
    broken = copy_model(nano_model, tmp_path / "broken")
    drop_tensor(broken, "layers.0.self_attn")
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "a", "problem": "1+1?", "answer": "2"}) + "\n")
    runs = {
        "eval": ["eval", str(broken), "--data", str(data)],
        "sft": ["sft", "--model", str(broken), "--corpus.files", str(corpus), "--seq-len", "32", "--max-steps", "1"],
        "analyze cka": ["analyze", "cka", str(broken), str(nano_model), "--probe", str(corpus)],
    }
    for name, argv in runs.items():
        out = tmp_path / name.replace(" ", "-")
        assert main([*argv, "--out", str(out)]) == 2, name
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "weights do not match its llama config" in err and str(broken) in err, (name, err)
        assert not out.exists(), name


# -- presets, and a saved model reloads as it was --------------------------------------------------------------
def test_model_reload_gives_identical_logits(nano_model):
    from transformers import AutoModelForCausalLM

    m1 = load_model(nano_model)
    m2 = AutoModelForCausalLM.from_pretrained(str(nano_model))
    x = torch.tensor([[1, 5, 9, 20, 33]])
    with torch.no_grad():
        assert torch.equal(m1(x).logits, m2(x).logits)
    assert load_tokenizer(nano_model).pad_token == "<pad>"


def test_cli_reload_in_fresh_offline_process(nano_model):
    code = (
        "import torch;from transformers import AutoModelForCausalLM,AutoTokenizer;"
        f"t=AutoTokenizer.from_pretrained('{nano_model}');m=AutoModelForCausalLM.from_pretrained('{nano_model}');"
        "print(m(**t('a=1.b=a+2',return_tensors='pt')).logits.shape[-1])"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert res.returncode == 0, res.stderr
    assert int(res.stdout.strip()) == len(load_tokenizer(nano_model))


@pytest.mark.parametrize("preset", ["nano", "micro", "tiny"])
def test_presets_sizes(preset, tokenizer_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from midtrain.models.init import PRESETS, model_config

    m = AutoModelForCausalLM.from_config(model_config(preset, 300))
    n = sum(p.numel() for p in m.parameters())
    assert (
        {"nano": (3e5, 6e5), "micro": (5e5, 1.2e6), "tiny": (2e6, 4e6)}[preset][0]
        < n
        < {"nano": (3e5, 6e5), "micro": (5e5, 1.2e6), "tiny": (2e6, 4e6)}[preset][1]
    )
    assert PRESETS["interplay-100m"].hidden == 768 and PRESETS["interplay-100m"].kv_heads == 2


def test_an_unknown_preset_is_one_line_and_leaves_nothing(capsys, tmp_path, tokenizer_dir):
    out = tmp_path / "o"
    assert main(["model", "init", "--preset", "gigantic", "--tokenizer", str(tokenizer_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "unknown preset 'gigantic'" in err
    assert not out.exists()

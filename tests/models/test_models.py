import subprocess
import sys

import pytest
import torch

from midtrain.cli import main
from midtrain.models.init import load_model
from midtrain.models.tokenizer import TAGS, load_tokenizer


def test_tokenizer_reloads_offline_and_round_trips(tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    text = "<question>a=12.b=a+345</question><think>b=12+345=357.</think><answer>357</answer><think>x</think>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == text  # tags survive: verifiers need them
    for tag in TAGS:
        assert len(tok(tag, add_special_tokens=False)["input_ids"]) == 1
    for digits in ("357", "12", "9081"):
        pieces = [tok.decode([i]) for i in tok(digits, add_special_tokens=False)["input_ids"]]
        assert pieces == list(digits)
    assert tok.bos_token == "<bos>" and tok.eos_token == "<eos>" and tok.pad_token == "<pad>"


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


def _one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    for n in needles:
        assert n in err


def test_bad_inputs(capsys, tmp_path, tokenizer_dir):
    out = tmp_path / "o"
    _one_line_error(capsys, ["tokenizer", "train", "--corpus", str(tmp_path / "nope.jsonl"), "--out", str(out)], "nope.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    _one_line_error(capsys, ["tokenizer", "train", "--corpus", str(empty), "--out", str(out)], "empty corpus")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "ok"}\n{"text": "\xff\xfe bad"}\n')
    _one_line_error(capsys, ["tokenizer", "train", "--corpus", str(bad), "--out", str(out)], "bad.jsonl:2", "UTF-8")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "ok"}\n{"text": \n')
    _one_line_error(capsys, ["tokenizer", "train", "--corpus", str(broken), "--out", str(out)], "broken.jsonl:2", "malformed JSON")
    _one_line_error(
        capsys, ["model", "init", "--preset", "gigantic", "--tokenizer", str(tokenizer_dir), "--out", str(out)], "unknown preset 'gigantic'"
    )
    assert not out.exists()

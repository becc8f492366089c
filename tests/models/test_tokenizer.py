"""``midtrain tokenizer train`` and loading (midtrain.models.tokenizer): the trained tokenizer round-trips offline, bad
corpora are one-line errors, and BOS: plain transformers sees the model midtrain trained; midtrain's own paths get one
BOS."""

import json

import torch

from midtrain.cli import main
from midtrain.experiment.demo import BASE_DIR
from midtrain.models.generation import generate
from midtrain.models.init import load_model
from midtrain.models.tokenizer import PLAIN_CHAT_TEMPLATE, TAGS, is_plain_chat_template, load_tokenizer

TEXT = "<question>a=3.b=a+4</question>"


def test_default_tokenization_starts_with_one_bos(tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    bare = tok(TEXT, add_special_tokens=False)["input_ids"]
    assert tok.bos_token_id not in bare
    assert tok(TEXT)["input_ids"] == [tok.bos_token_id] + bare
    # midtrain's paths prepend the BOS text and tokenize without special tokens: still exactly one
    assert tok(tok.bos_token + TEXT, add_special_tokens=False)["input_ids"] == [tok.bos_token_id] + bare
    pair = tok(TEXT, "x=1")["input_ids"]
    assert pair.count(tok.bos_token_id) == 1 and pair[0] == tok.bos_token_id


def test_plain_chat_template_is_bos_and_raw_text(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    assert tok.chat_template == PLAIN_CHAT_TEMPLATE and is_plain_chat_template(tok)
    msgs = [{"role": "user", "content": TEXT}]
    assert tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == "<bos>" + TEXT
    ids = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ids == tok(TEXT)["input_ids"]  # no second BOS from the post-processor
    full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": "b=7"}], tokenize=False)
    assert full == "<bos>" + TEXT + "b=7<eos>"


def test_training_documents_carry_one_bos(tmp_path, tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"prompt": TEXT, "completion": "<answer>7</answer>"}) + "\n")
    from midtrain.train.corpus import CorpusConfig
    from midtrain.train.tokenize import TokenizeConfig, open_store, run

    corpus = CorpusConfig(files=[str(f)], format="prompt_completion")
    run(TokenizeConfig(model=str(tokenizer_dir), corpus=corpus, out=str(tmp_path / "t")))
    store = open_store(tmp_path / "t", tok)
    ((shard, start, n, _),) = store.documents("default").tolist()
    ids = store.shards[shard][start : start + n].tolist()
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1


def test_shipped_base_tokenizer_adds_bos_and_keeps_its_vocabulary():
    tok = load_tokenizer(BASE_DIR)
    assert is_plain_chat_template(tok)
    assert tok("a=1")["input_ids"][0] == tok.bos_token_id == 0
    assert tok("<think>", add_special_tokens=False)["input_ids"] == [265]  # the ids the shipped weights were trained on


def test_plain_transformers_generate_on_the_shipped_base_matches_midtrain():
    """Default tokenization + model.generate (what pipelines, lm-eval, vLLM do) gives midtrain's greedy outputs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from midtrain.synth.generate import SynthConfig, generate_problems

    rec = json.loads((BASE_DIR / "acceptance.json").read_text())
    problems = generate_problems(SynthConfig.from_dict({**rec["problems"]["id"], "n": 6}))
    prompts = [p["prompt"] for p in problems]
    ours = [g[0].text for g in generate(load_model(BASE_DIR), load_tokenizer(BASE_DIR), prompts, max_new_tokens=48)]
    tok = AutoTokenizer.from_pretrained(str(BASE_DIR))
    model = AutoModelForCausalLM.from_pretrained(str(BASE_DIR))
    theirs = []
    for prompt in prompts:
        enc = tok(prompt, return_tensors="pt")  # add_special_tokens=True: the post-processor's BOS
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=48, do_sample=False, pad_token_id=tok.pad_token_id)  # [1, T]
        theirs.append(tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))
    assert theirs == ours
    assert sum("<answer>" in t for t in ours) >= 4  # the base solves these (a test that compares empty strings proves nothing)


def never_adds_bos(bos: str):
    """A tokenizer like SmolLM2's or Qwen's: it names a BOS (a chat marker) but never adds it to a text."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, bos: 1, "<|im_end|>": 2, "a": 3, "b": 4}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token=bos, eos_token="<|im_end|>", unk_token="[UNK]")


def test_leading_bos_follows_the_tokenizers_own_encoding(tokenizer_dir):
    from tokenizers import processors

    from midtrain.models.tokenizer import leading_bos

    ours = load_tokenizer(tokenizer_dir)
    assert leading_bos(ours) == [ours.bos_token_id]  # the post-processor adds it
    smol = never_adds_bos("<|im_start|>")
    assert smol("a b")["input_ids"] == [3, 4] and leading_bos(smol) == []  # never prepend a chat marker to raw text
    legacy = load_tokenizer(tokenizer_dir)
    legacy.backend_tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)  # before the BOS post-processor
    assert legacy(TEXT)["input_ids"][0] != legacy.bos_token_id
    assert leading_bos(legacy) == [legacy.bos_token_id]  # trained with a hand-prepended BOS: keeps it


# -- `midtrain tokenizer train`: the trained tokenizer round-trips offline; bad corpora are one-line errors --------
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


def _one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    for n in needles:
        assert n in err


def test_tokenizer_train_bad_inputs(capsys, tmp_path):
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
    assert not out.exists()

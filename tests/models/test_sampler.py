"""The KV-cache sampler reproduces the HF model: logits, greedy tokens, EOS/compaction, sampling semantics."""

from __future__ import annotations

import pytest
import torch

from midtrain.models import sampler
from midtrain.models.init import model_config
from midtrain.models.sampler import KVDecoder, sample, supported, warp

V = 64
EOS = [3, 7, 11]  # several stop ids, so random models finish rows at different steps


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(kind: str):
    """Tiny random models: the nano/micro presets, GQA 4:1 with another rope theta, biases on, and Qwen2."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    ids = dict(bos_token_id=0, eos_token_id=1, pad_token_id=2)
    if kind == "gqa":
        cfg = LlamaConfig(
            vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
            rope_theta=500.0, rms_norm_eps=1e-5, tie_word_embeddings=False, **ids,
        )  # fmt: skip
    elif kind == "mistral":  # Llama's math when the sliding window is off
        from transformers import MistralConfig

        cfg = MistralConfig(
            vocab_size=V,
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            sliding_window=None,
            **ids,
        )
    elif kind == "bias":
        cfg = model_config("nano", V, rope_theta=2e4, **ids)
        cfg.attention_bias = cfg.mlp_bias = True
    else:
        cfg = model_config(kind.removeprefix("qwen2-"), V, arch="qwen2" if kind.startswith("qwen2") else "llama", **ids)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():  # random init leaves biases at 0 and norms at 1: perturb so they matter
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


KINDS = ["nano", "micro", "gqa", "bias", "qwen2-nano", "mistral"]


def left_padded(lengths: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.full((len(lengths), width), 2)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, width - n :] = torch.randint(12, V, (n,), generator=g)  # no EOS inside prompts
        mask[i, width - n :] = 1
    return ids, mask


def hf_generate(model, ids, mask, n_new: int, eos: list[int], **kw) -> list[list[int]]:
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n_new, pad_token_id=2, eos_token_id=eos, **kw)
    rows = []
    for row in out[:, ids.shape[1] :].tolist():
        end = next((j + 1 for j, t in enumerate(row) if t in eos), len(row))
        rows.append(row[:end])
    return rows


@pytest.mark.parametrize("kind", KINDS)
def test_prefill_and_decode_logits_equal_full_forward(kind):
    model = build(kind)
    assert supported(model) is None
    ids, mask = left_padded([7, 2, 5, 1, 7, 4])
    extra = torch.randint(12, V, (ids.shape[0], 5), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(input_ids=torch.cat([ids, extra], 1), attention_mask=torch.cat([mask, torch.ones_like(extra)], 1)).logits
    dec = KVDecoder(model, ids.shape[0], ids.shape[1] + 5)
    with torch.inference_mode():
        mine = [dec.prefill(ids, mask)] + [dec.step(extra[:, j]) for j in range(4)]
    got = torch.stack(mine, 1)  # [B, 5, V]: after the prompt, then after each forced token
    want = ref[:, ids.shape[1] - 1 : ids.shape[1] + 4]
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    assert want.std() > 0.1  # not a degenerate model


def stop_ids(model, ids, mask) -> list[int]:
    """Two ids greedy decoding emits mid-way in some rows (random models rarely pick a fixed EOS)."""
    rows = hf_generate(model, ids, mask, 16, [], do_sample=False)
    return sorted({rows[0][5], rows[-1][9]})


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_tokens_identical_to_generate(kind):
    model = build(kind)
    ids, mask = left_padded([6, 1, 3, 6, 2, 5, 4, 6], seed=3)
    eos = stop_ids(model, ids, mask)
    want = hf_generate(model, ids, mask, 16, eos, do_sample=False)
    got = sample(model, ids, mask, max_new_tokens=16, eos_token_ids=eos)
    assert got.tokens == want
    assert any(len(r) < 16 for r in want) and any(len(r) == 16 and r[-1] not in eos for r in want)  # both endings occur


def test_compaction_drops_finished_rows_without_changing_outputs():
    model = build("gqa")  # the most varied greedy outputs of the random models
    ids, mask = left_padded([5, 3, 8, 2, 6, 7, 1, 4] * 3, seed=4)
    eos = stop_ids(model, ids, mask)
    on = sample(model, ids, mask, max_new_tokens=20, eos_token_ids=eos)
    off = sample(model, ids, mask, max_new_tokens=20, eos_token_ids=eos, compact=False)
    assert on.tokens == off.tokens
    assert off.row_steps == off.full_steps == 24 * 19
    assert on.row_steps < off.row_steps  # rows were dropped
    assert len({len(r) for r in on.tokens}) >= 3  # rows end at different steps
    assert all(r[-1] in eos for r in on.tokens if len(r) < 20)
    assert all(t not in eos for r in on.tokens for t in r[:-1])  # cut at the first EOS


def teacher_logprobs(model, ids, mask, rows: list[list[int]], temperature: float) -> list[list[float]]:
    """Per row, log p(token) under softmax(logits / T) of a full forward over prompt + completion."""
    out = []
    for i, row in enumerate(rows):
        prompt = ids[i][mask[i].bool()]
        seq = torch.cat([prompt, torch.tensor(row)])[None]
        with torch.no_grad():
            logits = model(input_ids=seq).logits[0, len(prompt) - 1 : -1]  # [n, V]
        logp = torch.log_softmax(logits / temperature, -1)
        out.append(logp.gather(1, torch.tensor(row)[:, None])[:, 0].tolist())
    return out


def test_sampled_tokens_follow_the_model_distribution():
    model = build("nano")
    ids, mask = left_padded([4, 2, 6, 3] * 4, seed=5)
    torch.manual_seed(7)
    a = sample(model, ids, mask, max_new_tokens=12, eos_token_ids=EOS, do_sample=True, temperature=0.7)
    torch.manual_seed(7)
    b = sample(model, ids, mask, max_new_tokens=12, eos_token_ids=EOS, do_sample=True, temperature=0.7)
    assert a.tokens == b.tokens  # fixed seed → deterministic
    teacher = teacher_logprobs(model, ids, mask, a.tokens, 0.7)
    assert a.logprobs is not None
    for got, want in zip(a.logprobs, teacher, strict=True):
        assert got == pytest.approx(want, abs=1e-4)
    greedy = sample(model, ids, mask, max_new_tokens=12, eos_token_ids=EOS)
    assert a.tokens != greedy.tokens  # it did sample
    top1 = sample(model, ids, mask, max_new_tokens=12, eos_token_ids=EOS, do_sample=True, temperature=1.3, top_k=1)
    assert top1.tokens == greedy.tokens


def test_sampling_with_top_k_top_p_matches_generate_with_the_same_seed():
    """Same warpers, same RNG draws: without EOS (the batch never shrinks) HF and the sampler draw identically."""
    model = build("nano")
    ids, mask = left_padded([4, 2, 6, 3], seed=6)
    kw = dict(do_sample=True, temperature=0.8, top_k=20, top_p=0.9)
    torch.manual_seed(11)
    want = hf_generate(model, ids, mask, 10, [], **kw)
    torch.manual_seed(11)
    assert sample(model, ids, mask, max_new_tokens=10, eos_token_ids=[], **kw).tokens == want


def test_warp_equals_hf_logits_processors():
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    logits = torch.randn(16, V, generator=torch.Generator().manual_seed(8)) * 3
    for t, k, p in [(0.7, 0, 1.0), (1.0, 5, 1.0), (1.3, 0, 0.6), (0.5, 10, 0.8), (1.0, 0, 0.01)]:
        want = logits.clone()
        for proc in [TemperatureLogitsWarper(t), TopKLogitsWarper(k) if k else None, TopPLogitsWarper(p) if p < 1 else None]:
            want = proc(None, want) if proc is not None else want
        got = warp(logits, t, k, p)
        assert torch.equal(torch.isinf(got), torch.isinf(want)) and torch.allclose(got[~torch.isinf(got)], want[~torch.isinf(want)])
    assert torch.isinf(warp(logits, 1.0, 0, 0.01)).sum(-1).eq(V - 1).all()  # tiny top_p keeps the argmax only


def test_unsupported_models_and_options_give_a_reason(monkeypatch):
    from transformers import GPT2Config, GPT2LMHeadModel

    model = build("nano")
    assert supported(model, do_sample=True, temperature=0.7, top_k=5, top_p=0.9, max_new_tokens=8) is None
    assert "repetition_penalty" in supported(model, repetition_penalty=1.2)
    assert "min_p" in supported(model, min_p=0.1)
    assert "temperature" in supported(model, do_sample=True, temperature=0.0)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=V))
    assert "architecture" in supported(gpt2)
    scaled = build("nano")
    scaled.model.rotary_emb.rope_type = "linear"
    assert "rope" in supported(scaled)
    model.lm_head = torch.nn.Sequential(model.lm_head)  # e.g. an adapter wrapping a projection
    assert "plain" in supported(model)
    windowed = build("mistral")
    windowed.config.sliding_window = 16
    assert "sliding" in supported(windowed)
    monkeypatch.setenv("MIDTRAIN_SAMPLER", "hf")
    assert supported(build("nano")) == "MIDTRAIN_SAMPLER=hf"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        monkeypatch.delenv("MIDTRAIN_SAMPLER")
        assert "autocast" in supported(build("nano"))


def test_generation_generate_goes_through_the_sampler_with_the_same_output(nano_model, monkeypatch):
    from midtrain.models.generation import generate
    from midtrain.models.init import load_model
    from midtrain.models.tokenizer import load_tokenizer

    model, tok = load_model(nano_model), load_tokenizer(nano_model)
    prompts = ["a=1.b=a+2.?b", "x", "a=3.b=a+a.c=b+1.?c<think>"]
    calls = []
    real = sampler.sample
    monkeypatch.setattr(sampler, "sample", lambda *a, **k: calls.append(k) or real(*a, **k))
    ours = generate(model, tok, prompts, max_new_tokens=10, batch_size=2)
    assert len(calls) == 2 and calls[0]["eos_token_ids"] == tok.eos_token_id and calls[0]["do_sample"] is False
    monkeypatch.setenv("MIDTRAIN_SAMPLER", "hf")
    assert generate(model, tok, prompts, max_new_tokens=10, batch_size=2) == ours
    assert len(calls) == 2  # the env var forced HF generate
    monkeypatch.delenv("MIDTRAIN_SAMPLER")
    generate(model, tok, prompts, max_new_tokens=10, stop=["</think>"])
    assert len(calls) == 2  # stop strings: HF generate

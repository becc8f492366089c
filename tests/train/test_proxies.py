"""The proxy detectors of ``midtrain rl`` (midtrain.train.proxies): the k3 KL estimator, the KL reference on a real
model, and the training-batch statistics of :class:`ProxyMeter`."""

from __future__ import annotations

import math

import pytest
import torch

from midtrain.train.proxies import KLReference, ProxyMeter, k3, window_proxies


def test_k3_is_zero_on_agreement_nonnegative_and_known():
    lp = torch.tensor([-0.5, -2.0, -1.0])
    assert torch.equal(k3(lp, lp), torch.zeros(3))
    r = k3(torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)]))  # r = 2
    assert float(r) == pytest.approx(1 - math.log(2))
    assert (k3(torch.randn(100), torch.randn(100)) >= 0).all()
    assert math.isfinite(float(k3(torch.tensor([0.0]), torch.tensor([-500.0]))))  # clipped, never inf


def test_k3_on_samples_of_the_reference_estimates_kl_ref_to_new():
    q = torch.tensor([0.7, 0.25, 0.05])  # the reference (sampling) distribution
    p = torch.tensor([0.2, 0.3, 0.5])
    x = torch.multinomial(q, 40_000, replacement=True, generator=torch.Generator().manual_seed(0))
    est = float(k3(p.log()[x], q.log()[x]).mean())
    exact = float((q * (q / p).log()).sum())  # KL(q ‖ p)
    assert est == pytest.approx(exact, rel=0.05)
    assert abs(est - float((p * (p / q).log()).sum())) > 0.15  # not the other direction (0.955)


def test_kl_reference_is_zero_for_the_same_policy_and_grows_when_it_moves(nano_model, tmp_path):
    from midtrain.models.init import load_model
    from midtrain.models.tokenizer import load_tokenizer

    model, tok = load_model(nano_model), load_tokenizer(nano_model)
    prompts = [tok("a=1.?a<think>")["input_ids"], tok("b=2.c=b+1.?c<think>")["input_ids"]]
    completions = [tok("a=1.</think>", add_special_tokens=False)["input_ids"], tok("c=3", add_special_tokens=False)["input_ids"]]
    ref = KLReference.build(model, prompts, completions, tok.pad_token_id)
    assert ref is not None and [len(x) for x in ref.logps] == [len(c) for c in completions]
    assert ref.kl(model, tok.pad_token_id) == pytest.approx(0.0, abs=1e-6)
    ref.save(tmp_path / "ref.json")
    again = KLReference.load(tmp_path / "ref.json")
    assert again == ref and KLReference.load(tmp_path / "none.json") is None
    with torch.no_grad():
        model.lm_head.weight.add_(0.5 * torch.randn_like(model.lm_head.weight))
    assert again.kl(model, tok.pad_token_id) > 1e-3
    assert KLReference.build(model, prompts, [[], []], tok.pad_token_id) is None


class FakeTokenizer:
    def __init__(self, texts):
        self.texts = texts

    def batch_decode(self, rows, skip_special_tokens=True):
        assert skip_special_tokens and len(rows) == len(self.texts)
        return self.texts


def test_proxy_meter_reads_advantages_and_rejected_rewarded_completions():
    from midtrain.synth.generate import generate_problems

    prob = generate_problems(n=1, ops="3", seed=1, render="compact", modulus=10, order="dependency", distractors=False)[0]
    gold = prob["completion"]
    trace, rest = gold.split("</think>", 1)
    first, _, tail = trace.partition(".")
    head, _, v = first.rpartition("=")
    hacked = f"{head}={(int(v) + 1) % 10}.{tail}</think>{rest}"  # the first step's value wrong, the answer right
    rows = [{"record": prob}] * 4
    texts = [gold, hacked, "nonsense", gold]
    batch = {"completion_ids": torch.ones(4, 3, dtype=torch.long), "completion_mask": torch.ones(4, 3)}
    rewards = torch.tensor([[9.0], [9.0], [9.0], [9.0], [1.0], [1.0], [0.0], [0.0]])  # [N_all, 1]: rank 1's rows are 4..7
    meter = ProxyMeter(synthetic=True)
    meter.observe(rows, batch, torch.tensor([0.5, 0.5, -0.5, -0.5]), rewards, 1, FakeTokenizer(texts))
    meter.observe(rows, batch, torch.tensor([1.0, 0.0, 0.0, -1.0]), rewards, 1, FakeTokenizer(texts))
    got = meter.take()
    assert got["proxy_rejected"] == 0.5  # rewarded: gold and hacked (twice); the hacked one is rejected
    assert got["proxy_adv_mean"] == 0.0 and got["proxy_adv_absmax"] == 1.0
    assert got["proxy_adv_std"] == pytest.approx(math.sqrt((4 * 0.25 + 2) / 8))
    assert meter.take() == {}  # reset

    strict = ProxyMeter(synthetic=True, strict=True)
    strict.observe(rows, batch, torch.zeros(4), rewards, 1, FakeTokenizer([]))  # (nothing decoded)
    assert strict.take()["proxy_rejected"] == 0.0
    other = ProxyMeter(synthetic=False)
    other.observe([{}] * 4, batch, torch.zeros(4, 7), rewards, 0, FakeTokenizer([]))  # [n, T] per-token advantages
    assert set(other.take()) == {"proxy_adv_mean", "proxy_adv_std", "proxy_adv_absmax"}


def test_window_proxies_of_sums():
    s = {"adv_n": 4.0, "adv_sum": 2.0, "adv_sq": 3.0, "rewarded": 0.0, "rejected": 0.0}
    got = window_proxies(s, 1.5, synthetic=True)
    assert got == {"proxy_adv_mean": 0.5, "proxy_adv_std": pytest.approx(math.sqrt(0.5)), "proxy_adv_absmax": 1.5}
    assert window_proxies({**s, "adv_n": 0.0}, 0.0, True) == {}

"""midtrain.train.rl_trainer: TRL computes exactly our Dr. GRPO through the hooks, and the hooked TRL surface is the
one the trainer was written against (a changed signature fails with one line naming the method and TRL's version)."""

from __future__ import annotations

import json

import pytest
import torch
import trl
from trl import GRPOTrainer

from midtrain.errors import MidtrainError
from midtrain.train import rl_trainer
from midtrain.train.grpo import dr_grpo_loss, group_advantages, token_logprobs
from midtrain.train.rl_config import LossConfig, RLConfig, RolloutConfig, VLLMConfig
from midtrain.train.rl_trainer import Generation, MidtrainGRPOTrainer, build_grpo_config

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster and deterministic


# -- the TRL surface ---------------------------------------------------------------------------------------------
def test_every_overridden_trl_method_is_recorded():
    overridden = {n for n, v in vars(MidtrainGRPOTrainer).items() if callable(v) and hasattr(GRPOTrainer, n)}
    assert overridden == set(rl_trainer.TRL_HOOKS), "record the TRL signature of every hook in rl_trainer.TRL_HOOKS"


@pytest.mark.parametrize("name", sorted(rl_trainer.TRL_HOOKS))
def test_hooked_trl_signature_is_unchanged(name):
    now = rl_trainer.parameters(getattr(GRPOTrainer, name))
    assert now == rl_trainer.TRL_HOOKS[name], (
        f"TRL {trl.__version__} changed GRPOTrainer.{name}({now}); midtrain's RL trainer was written against "
        f"TRL {rl_trainer.TESTED_TRL}'s ({rl_trainer.TRL_HOOKS[name]}): re-read the hook and update rl_trainer.py"
    )


def test_installed_trl_is_the_pinned_minor_and_matches_the_record():
    assert trl.__version__.startswith(rl_trainer.TESTED_TRL + "."), f"TRL {trl.__version__} installed, tested {rl_trainer.TESTED_TRL}"
    assert rl_trainer.hook_changes() == []


def test_a_changed_hook_is_one_line_naming_method_and_version(monkeypatch):
    monkeypatch.setitem(rl_trainer.TRL_HOOKS, "_generate", "self, prompts, extra")
    (change,) = rl_trainer.hook_changes()
    assert "\n" not in change and f"TRL {trl.__version__}" in change and "GRPOTrainer._generate(self, prompts)" in change
    with pytest.raises(MidtrainError, match=r"GRPOTrainer\._generate"):
        MidtrainGRPOTrainer(None)  # type: ignore[arg-type]  # refused before TRL is touched
    monkeypatch.setattr(rl_trainer, "BATCH_KEYS", ("advantages", "rewards_by_name"))
    assert any("no longer returns rewards_by_name" in c for c in rl_trainer.hook_changes())


def test_generation_reads_trls_tuple_by_name():
    values = ([[1]], [[2, 3]], None, ["x"], None, {}, None, [])
    gen = Generation.of(values)
    assert gen.completion_ids == [[2, 3]] and gen.completions == ["x"] and tuple(gen) == values  # still TRL's tuple
    with pytest.raises(MidtrainError, match=r"_generate returned 7 values, midtrain reads 8"):
        Generation.of(values[:7])


def test_grpo_config_maps_every_section():
    cfg = RLConfig(
        model="m",
        data=["d"],
        out="o",
        precision="fp32",
        rollout=RolloutConfig(num_generations=4, max_completion_length=32, temperature=0.7, top_p=0.9, top_k=5),
        loss=LossConfig(epsilon_low=0.1, epsilon_high=0.28, num_iterations=2, mask_truncated_completions=True),
        vllm=VLLMConfig(mode="server", server_url="http://10.0.0.2:8000", importance_sampling=False),
    )
    args = build_grpo_config(cfg, "/tmp/x")
    assert (args.num_generations, args.max_completion_length, args.temperature, args.top_p, args.top_k) == (4, 32, 0.7, 0.9, 5)
    assert (args.epsilon, args.epsilon_high, args.num_iterations, args.mask_truncated_completions) == (0.1, 0.28, 2, True)
    assert (args.loss_type, args.scale_rewards, args.beta) == ("dr_grpo", "none", 0.0)
    assert (args.use_vllm, args.vllm_mode, args.vllm_server_base_url, args.vllm_importance_sampling_correction) == (
        True,
        "server",
        "http://10.0.0.2:8000",
        False,
    )
    default = build_grpo_config(RLConfig(model="m", data=["d"], out="o", precision="fp32"), "/tmp/x")
    assert not default.use_vllm and default.max_completion_length == 256 and default.epsilon == default.epsilon_high == 0.2
    assert not default.bf16


# -- TRL computes exactly our Dr. GRPO ---------------------------------------------------------------------------
def _scored_batch(make_rl_trainer, prompts, texts, answers, reward="math", columns=None, credit="sequence", **cfg_kw):
    """A real trainer whose generation returns ``texts`` for ``prompts``; returns (trainer, scored batch).

    ``columns``: extra dataset columns per row (e.g. the synthetic ``record``)."""
    trainer, tok = make_rl_trainer(reward, extras={"credit": credit}, **cfg_kw)
    prompt_ids = [tok(p)["input_ids"] for p in prompts]
    completion_ids = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
    trainer._generate = lambda batch: (prompt_ids, completion_ids, None, texts, None, {}, None, [])
    rows = [{"prompt": p, "answer": a, **(columns[i] if columns else {})} for i, (p, a) in enumerate(zip(prompts, answers))]
    out = trainer._generate_and_score_completions(rows)
    trainer.current_gradient_accumulation_steps = 1
    return trainer, out


def test_trl_advantages_and_loss_equal_ours(make_rl_trainer):
    """With our config, GRPOTrainer's advantages are group_advantages(·, "none") and its loss is dr_grpo_loss."""
    G = 4
    prompts = ["a=1.b=a+2.?b"] * G + ["a=2.b=a+2.?b"] * G
    texts = ["3", "4", "3", "x3", "4", "4", "5", "4"]  # group 1 rewards [1,0,1,0], group 2 [1,1,0,1]
    rollout = RolloutConfig(num_generations=G, max_completion_length=6, temperature=0.7)
    trainer, out = _scored_batch(make_rl_trainer, prompts, texts, ["3"] * 4 + ["4"] * 4, rollout=rollout)
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    assert torch.allclose(out["advantages"], group_advantages(rewards, G, "none"))
    assert torch.allclose(out["advantages"], torch.tensor([0.5, -0.5, 0.5, -0.5, 0.25, 0.25, -0.75, 0.25]))
    assert trainer.batch_rewards is None  # consumed by the batch it belonged to

    loss_trl = trainer._compute_loss(trainer.model, out)
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    attn = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    T = out["completion_ids"].size(1)
    with torch.no_grad():
        logits = trainer.model(input_ids=ids, attention_mask=attn).logits[:, -T - 1 : -1]
    logp = token_logprobs(logits, out["completion_ids"], temperature=0.7)
    ours = dr_grpo_loss(logp, logp, out["advantages"], out["completion_mask"], 0.2, 0.2, max_completion_len=6)
    assert loss_trl.item() == pytest.approx(ours.item(), rel=1e-4, abs=1e-7)
    assert abs(ours.item()) > 1e-4  # a non-trivial batch


def test_rewards_of_the_batch_in_flight_are_kept_for_the_rest_of_its_scoring(make_rl_trainer, monkeypatch):
    seen = []
    original = MidtrainGRPOTrainer._calculate_rewards

    def spy(self, *args):
        out = original(self, *args)
        seen.append(self.batch_rewards)  # what the hook recorded, before the batch's scoring consumes it
        return out

    monkeypatch.setattr(MidtrainGRPOTrainer, "_calculate_rewards", spy)
    texts = ["3", "4", "3", "3"] * 2
    trainer, _ = _scored_batch(make_rl_trainer, ["a=1.b=a+2.?b"] * 8, texts, ["3"] * 8)
    (scored,) = seen
    assert scored.rewards.shape == (8, 1) and scored.rewards[:, 0].tolist() == [1.0, 0.0, 1.0, 1.0] * 2
    assert scored.first_errors is None and trainer.batch_rewards is None


def test_zero_advantage_rows_are_skipped_without_changing_loss_or_gradient(make_rl_trainer):
    """A zero-variance group (Â = 0) is left out of the forward pass; loss and gradient equal the full batch's."""
    prompts = ["a=1.b=a+2.?b"] * 4 + ["a=2.b=a+2.?b"] * 4
    texts = ["3", "3", "3", "3", "4", "4", "x5", "4"]  # group 1 all right (Â = 0), group 2 [1,1,0,1]
    trainer, out = _scored_batch(make_rl_trainer, prompts, texts, ["3"] * 4 + ["4"] * 4)
    assert (out["advantages"][:4] == 0).all() and (out["advantages"][4:] != 0).all()

    def loss_and_grad(skip: bool):
        trainer.extras.skip_zero_advantage = skip
        trainer.model.zero_grad()
        before = trainer.extras.counters.tokens_trained
        loss = trainer.compute_loss(trainer.model, dict(out))
        loss.backward()
        grads = [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]
        return loss.item(), grads, trainer.extras.counters.tokens_trained - before

    loss_all, g_all, tok_all = loss_and_grad(False)
    loss_skip, g_skip, tok_skip = loss_and_grad(True)
    assert abs(loss_all) > 1e-6 and loss_skip == pytest.approx(loss_all, rel=1e-5, abs=1e-8)
    assert len(g_all) == len(g_skip) and all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(g_all, g_skip))
    assert tok_skip < tok_all  # the zero-variance group was not forwarded


def test_first_error_credit_gives_each_token_its_advantage(make_rl_trainer):
    """credit=first_error: the scored batch carries [N, T] advantages, cut at the verifier's first wrong step."""
    from midtrain.synth.generate import SynthConfig, generate_problems

    rec = generate_problems(SynthConfig(ops="3", n=1, seed=5, render="compact", modulus=10, order="dependency", distractors=False))[0]
    good = rec["solution"] + f"</think><answer>{rec['answer']}</answer>"
    steps = rec["solution"].split(".")
    bad = ".".join([steps[0], steps[1] + "1", *steps[2:]]) + "</think><answer>9</answer>"  # step 2's value is wrong
    lucky = ".".join([steps[0], steps[1] + "1", *steps[2:]]) + f"</think><answer>{rec['answer']}</answer>"
    texts, prompt = [good, bad, lucky, bad], rec["problem"] + rec["question"] + "<think>"
    columns = [{"record": json.dumps(rec)}] * 4
    trainer, out = _scored_batch(make_rl_trainer, [prompt] * 4, texts, [rec["answer"]] * 4, "synthetic_process", columns, "first_error")
    adv, ids = out["advantages"], out["completion_ids"]
    assert adv.shape == ids.shape
    seq = [row[row != 0][0] for row in adv]  # each row's Â_i: the value of its credited tokens
    assert seq[0] > 0 and seq[1] < 0 and seq[3] < 0  # verified > lucky (wrong step, right answer) > wrong answer
    e = rl_trainer.token_at(ids[1].tolist(), bad, len(steps[0]) + 1, trainer._tokenizer)  # the second clause's token
    assert 0 < e < ids.size(1)
    assert (adv[0] == adv[0, 0]).all()  # verified: the same advantage on every token
    assert (adv[1, :e] == 0).all() and (adv[1, e:] == seq[1]).all()  # failed: blamed from its mistake on
    if seq[2] > 0:  # lucky, above the group mean: credited only before its mistake
        assert (adv[2, :e] == seq[2]).all() and (adv[2, e:] == 0).all()
    else:
        assert (adv[2, :e] == 0).all() and (adv[2, e:] == seq[2]).all()
    loss = trainer.compute_loss(trainer.model, dict(out))
    assert torch.isfinite(loss) and abs(loss.item()) > 1e-6


def test_token_at_maps_characters_to_tokens(nano_model):
    from midtrain.models.tokenizer import load_tokenizer

    tok = load_tokenizer(nano_model)
    text = "a=1.b=a+2=3.</think><answer>3</answer>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    for offset in (0, 4, 12, len(text) - 1):
        k = rl_trainer.token_at(ids, text, offset, tok)
        assert len(tok.decode(ids[:k])) <= offset < len(tok.decode(ids[: k + 1]))
    assert rl_trainer.token_at(ids, text, len(text), tok) == len(ids)


def test_generation_counts_tokens_and_thinking(make_rl_trainer, monkeypatch):
    trainer, tok = make_rl_trainer()
    prompts = ["a=1.?a<think>", "b=2.?b<think>"]
    completions = ["a=1.</think><answer>1</answer>", "b=2"]
    ids = [tok(c, add_special_tokens=False)["input_ids"] for c in completions]
    monkeypatch.setattr(GRPOTrainer, "_generate", lambda self, p: ([[1]] * 2, ids, None, completions, None, {}, None, []))
    out = trainer._generate(prompts)
    c = trainer.extras.counters
    assert isinstance(out, Generation) and out.completions == completions
    assert (c.completions, c.tokens_generated) == (2, len(ids[0]) + len(ids[1])) and c.gen_s > 0
    think = rl_trainer.thinking_tokens(ids[0], completions[0], prompts[0], tok) + len(ids[1])  # the second never closes
    assert c.think_tokens == think and 0 < rl_trainer.thinking_tokens(ids[0], completions[0], prompts[0], tok) < len(ids[0])


def test_stop_ids_end_completions_for_generation_and_the_loss_mask(make_rl_trainer):
    plain, _ = make_rl_trainer()
    eos = list(plain.eos_token_ids)
    assert "eos_token_id" not in plain.generation_kwargs or plain.generation_kwargs["eos_token_id"] == eos  # untouched
    trainer, tok = make_rl_trainer(extras={"stop_ids": (7, eos[0])})
    assert trainer.eos_token_ids == [*eos, 7]  # each id once
    assert trainer.generation_kwargs["eos_token_id"] == trainer.generation_config.eos_token_id == [*eos, 7]

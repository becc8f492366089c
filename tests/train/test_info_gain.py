"""``midtrain rl --task suffix --reward info_gain`` (RLP) and ``ref_prob`` (RLPR): the pure math on hand values, the
reward against a manual forward, the EMA baseline cancelling from the advantages and the gradient through the real
trainer (``loss.nothink_baseline``), and short runs on the nano model (weights move, only the thought is trained,
the EMA moves and survives a resume; no EMA without the baseline; ref_prob with the RMT loss logged)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from midtrain.errors import ConfigError
from midtrain.train import info_gain as ig
from midtrain.train import rl_trainer
from midtrain.train.rl import run
from midtrain.train.rl_config import RL_OPTIM, LossConfig, RLConfig, RolloutConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster and deterministic


# -- pure functions on hand values -------------------------------------------------------------------------------
def test_masked_mean_logprob_on_hand_values():
    # Row 0: two tokens with p = 1/2 and 1/4 (logits log-probs given directly) → mean (ln ½ + ln ¼)/2.
    # Row 1: only its last token counts (mask), p = 3/4.
    logits = torch.log(
        torch.tensor(
            [
                [[0.5, 0.25, 0.25], [0.25, 0.25, 0.5]],
                [[0.1, 0.1, 0.8], [0.75, 0.125, 0.125]],
            ]
        )
    )  # [2, 2, 3]
    targets = torch.tensor([[0, 1], [2, 0]])
    mask = torch.tensor([[1, 1], [0, 1]])
    got = ig.masked_mean_logprob(logits, targets, mask)
    want = torch.tensor([(math.log(0.5) + math.log(0.25)) / 2, math.log(0.75)])
    assert torch.allclose(got, want, atol=1e-6)
    assert ig.masked_mean_logprob(logits, targets, torch.zeros(2, 2)).tolist() == [0.0, 0.0]


def test_information_gain_and_ema_update_on_hand_values():
    assert ig.information_gain(torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -2.5])).tolist() == [1.0, -0.5]
    e, p = torch.tensor([1.0, 2.0]), torch.tensor([3.0, -2.0])
    ig.ema_update_([e], [p], 0.75)  # 0.75·1 + 0.25·3 = 1.5; 0.75·2 + 0.25·(−2) = 1.0
    assert e.tolist() == [1.5, 1.0]
    ig.ema_update_([e], [p], 1.0)  # frozen
    assert e.tolist() == [1.5, 1.0]
    ig.ema_update_([e], [p], 0.0)  # the policy itself
    assert e.tolist() == [3.0, -2.0]


def test_thought_ids_left_pad_and_nothink_prompt():
    close, eos, pad = 9, 1, 2
    assert ig.thought_ids([5, 6, close], close) == [5, 6, close]
    assert ig.thought_ids([5, close, 7], close) == [5, close]  # nothing after the thought
    assert ig.thought_ids([5, 6, eos], close, {eos, pad}) == [5, 6, close]  # EOS first: closed for scoring
    assert ig.thought_ids([5, 6], close) == [5, 6, close]  # budget hit
    ids, att, pos = ig.left_pad([[4, 5, 6], [7]], pad)
    assert ids.tolist() == [[4, 5, 6], [pad, pad, 7]]
    assert att.tolist() == [[1, 1, 1], [0, 0, 1]] and pos.tolist() == [[0, 1, 2], [0, 0, 0]]
    assert ig.nothink_prompt("<question>a=1.?a</question><think>") == "<question>a=1.?a</question>"
    assert ig.nothink_prompt("Q: x\n<think>  ") == "Q: x"
    assert ig.nothink_prompt("no thought here") == "no thought here"


def test_batched_scoring_equals_one_sequence_at_a_time(nano_model):
    """Left padding with position ids and logits_to_keep gives each row the log-probs it has alone."""
    from midtrain.models.init import load_model

    model = load_model(nano_model).eval()
    contexts, refs = [[0, 11, 12, 13, 14], [0, 15]], [[20, 21], [22, 23, 24]]
    batched = ig.score_references(model, contexts, refs, pad_id=2)
    for i, (c, r) in enumerate(zip(contexts, refs)):
        ids = torch.tensor([c + r])
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)  # [T, V]
        want = sum(logp[len(c) - 1 + j, t].item() for j, t in enumerate(r)) / len(r)
        assert batched[i].item() == pytest.approx(want, abs=1e-4)


def test_config_errors_name_the_key():
    ok = dict(model="m", data=["d.jsonl"], out="o")
    with pytest.raises(ConfigError, match="key 'reward': task 'answer' cannot use reward 'info_gain'"):
        RLConfig.from_dict({**ok, "reward": "info_gain"})
    with pytest.raises(ConfigError, match="key 'reward': task 'answer' cannot use reward 'exact_match'"):
        RLConfig.from_dict({**ok, "reward": "exact_match"})
    with pytest.raises(ConfigError, match=r"key 'vllm\.mode'"):
        RLConfig.from_dict({**ok, "task": "suffix", "reward": "info_gain", "vllm": {"mode": "colocate"}})
    with pytest.raises(ConfigError, match=r"loss\.ema_decay"):
        RLConfig.from_dict({**ok, "task": "suffix", "reward": "info_gain", "loss": {"ema_decay": 1.5}})
    assert RLConfig.from_dict({**ok, "task": "suffix", "reward": "exact_match"}).resolved_reward() == "exact_match"


def test_sharded_parameters_are_refused(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ConfigError, match="key 'reward': info_gain .* FSDP"):
        ig.check_full_parameters()
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    with pytest.raises(ConfigError, match="ZeRO-3"):
        ig.check_full_parameters()
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    ig.check_full_parameters()  # ZeRO-2 keeps whole parameters


# -- runs on the nano model --------------------------------------------------------------------------------------
def _tasks(path: Path) -> Path:
    recs = [
        {
            "prompt": f"<question>a={i}.?a</question><think>",
            "reference": f"<answer>{i}</answer>",
            "meta": {"prefix": f"<question>a={i}.?a</question>"},
        }
        for i in range(8)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def _cfg(model, data, out, **kw) -> RLConfig:
    base = dict(
        model=str(model),
        data=[str(data)],
        out=str(out),
        task="suffix",
        reward="info_gain",
        loss=LossConfig(ema_decay=0.5),
        max_steps=2,
        per_device_batch_size=8,
        rollout=RolloutConfig(num_generations=4, max_completion_length=10),
        optim=RL_OPTIM.replace(lr=1e-3),
        save_every_steps=1,
        keep_checkpoints=0,
        precision="fp32",
    )
    base.update(kw)
    return RLConfig(**base)


def test_info_gain_run_trains_only_the_thought_and_moves_the_ema(nano_model, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    close = AutoTokenizer.from_pretrained(str(nano_model)).convert_tokens_to_ids("</think>")
    seen: dict[str, list] = {"masks": [], "ids": []}

    class Spy(rl_trainer.MidtrainGRPOTrainer):  # the class under test; record what its loss sees
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            seen["masks"].append(inputs["completion_mask"].clone())
            seen["ids"].append(inputs["completion_ids"].clone())
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    monkeypatch.setattr(rl_trainer, "MidtrainGRPOTrainer", Spy)
    build = rl_trainer.build_grpo_config

    def biased(cfg, output_dir):  # the random nano model rarely closes a thought in 10 tokens: make </think> likely
        args = build(cfg, output_dir)
        args.generation_kwargs = {"sequence_bias": {(close,): 4.0}}
        return args

    monkeypatch.setattr(rl_trainer, "build_grpo_config", biased)
    out = tmp_path / "r"
    res = run(_cfg(nano_model, _tasks(tmp_path / "t.jsonl"), out))
    assert res.metrics["steps"] == 2 and res.metrics["reward"] == "info_gain" and res.metrics["reward_errors"] == 0

    for mask, ids in zip(seen["masks"], seen["ids"]):  # [N, T] each: the loss ends at the first </think>
        for m, row in zip(mask.tolist(), ids.tolist()):
            n = sum(m)
            assert m == [1] * n + [0] * (len(m) - n)
            assert close not in row[: n - 1]  # no token after a </think> is trained
    closed = [sum(m) for mask, ids in zip(seen["masks"], seen["ids"]) for m, row in zip(mask.tolist(), ids.tolist()) if close in row]
    assert closed and min(closed) < 10  # some thoughts closed before the budget, and their loss stopped there

    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    for rec in log:  # the reward is the gain; its two terms are logged (log-probs are ≤ 0)
        assert rec["info_gain"] == pytest.approx(rec["logp_think"] - rec["logp_nothink"], abs=1e-5)
        assert rec["logp_think"] < 0 and rec["logp_nothink"] < 0
        assert rec["reward_mean"] == pytest.approx(rec["info_gain"], abs=1e-4)

    init, final = load_file(str(nano_model / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert any(not torch.equal(init[k], final[k]) for k in init)  # the policy moved
    ema1 = load_file(str(out / "checkpoints" / "checkpoint-1" / ig.EMA_FILE))
    ema2 = load_file(str(out / "checkpoints" / "checkpoint-2" / ig.EMA_FILE))
    key = "model.embed_tokens.weight"
    assert not torch.equal(ema1[key], init[key]) and not torch.equal(ema1[key], ema2[key])
    # decay 0.5 after two steps: ema2 = 0.5·ema1 + 0.5·θ2 (θ2 = the final policy)
    assert torch.allclose(ema2[key], 0.5 * ema1[key] + 0.5 * final[key], atol=1e-6)
    gen = json.loads((nano_model / "generation_config.json").read_text()) if (nano_model / "generation_config.json").exists() else {}
    saved_gen = json.loads((out / "generation_config.json").read_text())
    assert saved_gen.get("eos_token_id") == gen.get("eos_token_id", saved_gen.get("eos_token_id"))  # </think> stays no EOS
    assert close not in (
        saved_gen.get("eos_token_id") if isinstance(saved_gen.get("eos_token_id"), list) else [saved_gen.get("eos_token_id")]
    )


def test_info_gain_ema_is_restored_on_resume(nano_model, tmp_path, monkeypatch, kill_rl_at):
    data = _tasks(tmp_path / "t.jsonl")
    whole = tmp_path / "whole"
    run(_cfg(nano_model, data, whole, max_steps=3, save_every_steps=1))

    out = tmp_path / "r"
    kill_rl_at(3)
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(nano_model, data, out, max_steps=3, save_every_steps=2))
    kill_rl_at(None)

    loaded: list[dict[str, torch.Tensor]] = []
    load = ig.EMAModel.load

    def spy(self, path):
        load(self, path)
        loaded.append({k: v.clone() for k, v in self.tensors().items()})  # (on the CPU, tensors() shares storage)

    monkeypatch.setattr(ig.EMAModel, "load", spy)
    res = run(_cfg(nano_model, data, out, max_steps=3, save_every_steps=2))
    assert res.metrics["resumed_from"] == "checkpoint-2" and len(loaded) == 1
    at2 = load_file(str(whole / "checkpoints" / "checkpoint-2" / ig.EMA_FILE))
    for k, v in at2.items():  # the resumed EMA is the uninterrupted run's EMA at step 2 ...
        assert torch.equal(loaded[0][k], v)
    ema3 = load_file(str(out / "checkpoints" / "checkpoint-3" / ig.EMA_FILE))  # (the last step is always saved)
    whole3 = load_file(str(whole / "checkpoints" / "checkpoint-3" / ig.EMA_FILE))
    assert all(torch.allclose(ema3[k], whole3[k], atol=1e-6) for k in whole3)  # ... and continues as it did
    assert not torch.equal(ema3["model.embed_tokens.weight"], at2["model.embed_tokens.weight"])


# -- RLPR's reference probability (reward ref_prob) --------------------------------------------------------------
def test_reference_probability_on_hand_values():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.25, 0.25, 0.5]], [[0.1, 0.1, 0.8], [0.75, 0.125, 0.125]]]))  # [2, 2, 3]
    targets, mask = torch.tensor([[0, 1], [2, 0]]), torch.tensor([[1, 1], [0, 1]])
    got = ig.reference_probability(logits, targets, mask)
    assert torch.allclose(got, torch.tensor([(0.5 + 0.25) / 2, 0.75]), atol=1e-6)  # probabilities averaged ...
    assert got[0].item() > math.exp(ig.masked_mean_logprob(logits, targets, mask)[0].item()) + 0.02  # ... not log-probs (0.354)
    assert ig.reference_probability(logits, targets, torch.zeros(2, 2)).tolist() == [0.0, 0.0]


def test_ref_prob_reward_is_the_pure_function_on_a_manual_forward(nano_model):
    """RefProbReward on the nano model = reference_probability of one unpadded forward of prompt + thought + suffix."""
    from midtrain.models.init import load_model
    from midtrain.models.tokenizer import load_tokenizer

    tok, model = load_tokenizer(nano_model), load_model(nano_model).eval()
    close = ig.close_token_id(tok)
    scorer = ig.RefProbReward(tok, close)
    scorer.bind(model)
    prompts = ["<question>a=1.?a</question><think>", "<question>b=22.c=b+1.?c</question><think>"]
    thoughts = [tok("a=1", add_special_tokens=False)["input_ids"] + [close], tok("9", add_special_tokens=False)["input_ids"] + [close]]
    completion_ids = [thoughts[0], thoughts[1][:-1] + [tok.eos_token_id]]  # the second stopped at EOS: closed for scoring
    answer = ["<answer>1</answer>", "<answer>3</answer>"]
    got = scorer(["", ""], answer, prompts, completion_ids)
    for i in range(2):
        ctx, ref = tok(prompts[i])["input_ids"] + thoughts[i], tok(answer[i], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ctx + ref])).logits[:, len(ctx) - 1 : len(ctx) - 1 + len(ref)]  # [1, |ref|, V]
        want = ig.reference_probability(logits, torch.tensor([ref]), torch.ones(1, len(ref))).item()
        assert got[i] == pytest.approx(want, abs=1e-5)
        assert 0.0 < got[i] < 1.0
    stats = scorer.take_stats()
    assert set(stats) == {"ref_prob", "logp_think", "n"} and stats["n"] == 2.0
    assert stats["ref_prob"] == pytest.approx(sum(got), abs=1e-5) and stats["logp_think"] < 0
    assert scorer.take_stats() == {"ref_prob": 0.0, "logp_think": 0.0, "n": 0.0}


# -- the RLP baseline ablation (loss.nothink_baseline) -----------------------------------------------------------
SWAP_GROUPS = [  # (prompt, true suffix, G = 4 thoughts)
    ("<question>a=1.b=a+2.?b</question><think>", "<answer>3</answer>", ["a=1", "b=3", "", "1 2"]),
    ("<question>c=4.?c</question><think>", "<answer>4</answer>", ["c", "4 4", "c=4.", "x"]),
]


def _scorer_trainer(nano_model: Path, tmp_path: Path, scorer: ig.SuffixScorer):
    """A real MidtrainGRPOTrainer (G = 4, 8 completions per micro-batch, fp32) whose reward is ``scorer`` (not bound)."""
    from datasets import Dataset

    from midtrain.models.init import load_model
    from midtrain.train.rewards import build_reward
    from midtrain.train.rl_log import Counters

    cfg = _cfg(nano_model, tmp_path / "unused.jsonl", tmp_path / "x", max_steps=1, save_every_steps=0)
    extras = rl_trainer.RLExtras(counters=Counters(), reward=build_reward("info_gain", scorer=scorer), stop_ids=(scorer.close_id,))
    trainer = rl_trainer.MidtrainGRPOTrainer(
        extras,
        model=load_model(nano_model),
        args=rl_trainer.build_grpo_config(cfg, str(tmp_path / "ck")),
        train_dataset=Dataset.from_list([{"prompt": "q<think>", "answer": "3", "nothink": "q"}] * 8),
        processing_class=scorer.tok,
    )
    trainer.model.train()
    return trainer


def _scored_thoughts(trainer, tok, close: int):
    """TRL's scored batch of SWAP_GROUPS through the trainer's own scoring, generation scripted to the thoughts."""
    from rl_support import stale_logps

    prompts = [p for p, _, ts in SWAP_GROUPS for _ in ts]
    texts = [t for _, _, ts in SWAP_GROUPS for t in ts]
    prompt_ids = [tok(p)["input_ids"] for p in prompts]
    completion_ids = [tok(t, add_special_tokens=False)["input_ids"] + [close] for t in texts]  # each closed at </think>
    trainer._generate = lambda batch: (prompt_ids, completion_ids, None, texts, None, {}, None, [])
    rows = [{"prompt": p, "answer": a, "nothink": ig.nothink_prompt(p)} for p, a, ts in SWAP_GROUPS for _ in ts]
    batch, scored = trainer._scored(rows)
    assert not scored.failed.any()
    batch["old_per_token_logps"] = stale_logps(trainer.model, batch)  # ratios off 1, so that clipping binds
    return batch, scored.rewards[:, 0].view(len(SWAP_GROUPS), -1)  # [B, G]


def test_the_ema_baseline_cancels_from_the_advantages_and_the_gradient(nano_model, tmp_path):
    """NVlabs/RLP issue #3 through the real trainer: the no-think term is one constant per prompt, so the
    group-centred advantages, and the gradient of the loss, are the same with the EMA baseline and without it."""
    from rl_support import assert_same, loss_grads

    from midtrain.models.tokenizer import load_tokenizer

    tok = load_tokenizer(nano_model)
    close = ig.close_token_id(tok)
    with_ema, without = ig.InfoGainReward(tok, close), ig.InfoGainReward(tok, close, baseline="none")
    trainer = _scorer_trainer(nano_model, tmp_path, with_ema)
    ema = ig.attach(trainer, with_ema, 0.5, None)
    assert ema is not None and ig.attach(trainer, without, 0.5, None) is None  # none: no copy, the policy bound
    assert without.policy is with_ema.policy and without.ema is None
    with torch.no_grad():  # an EMA that has drifted from the policy, as after some steps
        g = torch.Generator().manual_seed(0)
        for p in ema.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))

    batch_ema, r_ema = _scored_thoughts(trainer, tok, close)
    trainer.extras.reward.fn = without  # the same trainer and completions, scored without the baseline
    batch_none, r_none = _scored_thoughts(trainer, tok, close)
    base = r_none - r_ema  # [B, G]: log p_EMA(s | x'), the same for every completion of a prompt
    assert torch.allclose(base, base[:, :1].expand_as(base), atol=1e-5) and bool((base < -0.1).all())
    assert (base[0, 0] - base[1, 0]).abs() > 1e-3  # (a different constant per prompt)
    assert torch.allclose(batch_ema["advantages"], batch_none["advantages"], atol=1e-5)
    assert batch_none["advantages"].abs().max() > 1e-3
    # (to rounding: the rewards differ by ~5 in fp32, so the centred advantages differ by ~1e-7, ~1e-5 of their size)
    assert_same(loss_grads(trainer, [batch_ema]), loss_grads(trainer, [batch_none]), rel=1e-4)


def test_nothink_baseline_none_run_builds_no_ema(nano_model, tmp_path, monkeypatch):
    built: list[object] = []
    init = ig.EMAModel.__init__

    def spy(self, policy, decay):
        built.append(self)
        init(self, policy, decay)

    monkeypatch.setattr(ig.EMAModel, "__init__", spy)
    out = tmp_path / "r"
    res = run(_cfg(nano_model, _tasks(tmp_path / "t.jsonl"), out, loss=LossConfig(nothink_baseline="none"), max_steps=1))
    assert res.metrics["steps"] == 1 and not built and not (out / "checkpoints" / "checkpoint-1" / ig.EMA_FILE).exists()
    rec = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert "logp_nothink" not in rec and rec["info_gain"] == pytest.approx(rec["logp_think"]) and rec["logp_think"] < 0


def test_ref_prob_run_with_the_rmt_loss(nano_model, tmp_path):
    """reward ref_prob with loss.suffix_nll_weight: the log has the reward's terms and the NLL; rewards are in [0, 1]."""
    out = tmp_path / "r"
    cfg = _cfg(nano_model, _tasks(tmp_path / "t.jsonl"), out, reward="ref_prob", loss=LossConfig(suffix_nll_weight=0.5), max_steps=1)
    res = run(cfg)
    assert res.metrics["reward"] == "ref_prob" and res.metrics["reward_errors"] == 0
    rec = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert 0.0 < rec["ref_prob"] < 1.0 and rec["reward_mean"] == pytest.approx(rec["ref_prob"], abs=1e-4)
    assert rec["logp_think"] < 0 and rec["suffix_nll"] > 0 and "info_gain" not in rec
    assert not (out / "checkpoints" / "checkpoint-1" / ig.EMA_FILE).exists()


def test_new_keys_are_checked():
    ok = dict(model="m", data=["d.jsonl"], out="o")
    with pytest.raises(ConfigError, match=r"key 'loss\.suffix_nll_weight': .* needs task suffix"):
        RLConfig.from_dict({**ok, "loss": {"suffix_nll_weight": 0.5}})
    with pytest.raises(ConfigError, match=r"loss\.suffix_nll_weight"):
        RLConfig.from_dict({**ok, "task": "suffix", "loss": {"suffix_nll_weight": -1}})
    with pytest.raises(ConfigError, match=r"loss\.nothink_baseline"):
        RLConfig.from_dict({**ok, "task": "suffix", "reward": "info_gain", "loss": {"nothink_baseline": "zero"}})
    with pytest.raises(ConfigError, match=r"key 'vllm\.mode': reward ref_prob"):
        RLConfig.from_dict({**ok, "task": "suffix", "reward": "ref_prob", "vllm": {"mode": "colocate"}})
    with pytest.raises(ConfigError, match="key 'reward': task 'answer' cannot use reward 'ref_prob'"):
        RLConfig.from_dict({**ok, "reward": "ref_prob"})
    cfg = RLConfig.from_dict({**ok, "task": "suffix", "reward": "ref_prob", "loss": {"suffix_nll_weight": 0.5}})
    assert cfg.loss.suffix_nll_weight == 0.5 and cfg.loss.nothink_baseline == "ema"

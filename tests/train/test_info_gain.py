"""``midtrain rl --task suffix --reward info_gain`` (RLP): the pure math on hand values, and short runs on the nano
model (weights move, only the thought is trained, the EMA moves and survives a resume)."""

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

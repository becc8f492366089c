"""The instrument sections of ``midtrain rl``'s config: what a run observes and constrains besides its objective.

- ``probe`` (:class:`ProbeConfig`): the live ground-truth probe of :mod:`midtrain.train.probe` (held-out synthetic
  problems sampled and process-verified every N steps), whose step-0 samples also anchor the KL proxy of
  :mod:`midtrain.train.proxies`;
- ``early_stop`` (:class:`EarlyStopConfig`): stop a run whose probe shows reward hacking, keeping the model from
  before the onset;
- ``weights`` (:class:`RLWeightsConfig`): weight-space instruments (PRISM): train only a subnetwork
  (:mod:`midtrain.train.subnetwork`) and log the changed ratio per layer (:mod:`midtrain.train.weight_watch`).

They sit apart from :mod:`midtrain.train.rl_config` (what is trained and how) since none of them changes the
objective: with every one off, the run is the same run. Each checks only its own keys; the checks that need the
whole config (a synthetic reward for the probe, the probe for early stop) are :meth:`RLConfig.check`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from midtrain.config import MAX_SEED, Config, param
from midtrain.errors import ConfigError


@dataclass
class ProbeConfig(Config):
    """The live ground-truth probe (:mod:`midtrain.train.probe`): held-out synthetic problems sampled and
    process-verified while RL trains; its step-0 samples also anchor the KL proxy (:mod:`midtrain.train.proxies`)."""

    every: int = param(
        0,
        "Probe every N optimizer steps and at step 0 (0: off; synthetic_* rewards only): one sample per probe problem, "
        "logged as probe_verified, probe_outcome, probe_hacking (right answer, wrong trace: share of all probes) and "
        "probe_first_wrong_step (failed traces: share of the gold steps right before the first wrong one).",
        ge=0,
    )
    n: int = param(128, "Probe problems (split over ranks).", ge=1)
    problems: str = param(
        "",
        "A problem file (synth generate JSONL) to probe on instead of generated problems; its first n records not in the training data.",
        path="file",
    )
    world: dict[str, Any] = param(
        {},
        "The synthetic world of generated probe problems, as `synth generate` keys (render, modulus, order, ...): the "
        "training data's; default curriculum.generate.world. Problems whose id is in the training data are replaced.",
    )
    ops: str = param("6-8", "Op counts of generated probe problems: a range '6-8' or a list '6,7,8'.")
    seed: int = param(
        1009, "Generator seed of the probe problems: not the training data's (none of the shipped configs uses it).", ge=0, le=MAX_SEED
    )
    temperature: float = param(
        1.0, "Sampling temperature of the probe (1.0: the policy itself, which the KL proxy needs; 0: greedy).", ge=0
    )
    max_new_tokens: int = param(0, "Token budget of a probe completion (0: rollout.max_completion_length).", ge=0)
    batch_size: int = param(64, "Probe prompts generated at once.", ge=1)
    kl_samples: int = param(
        32,
        "proxy_kl: the first N step-0 probe completions (rank 0's) are kept with the initial policy's token log-probs; "
        "at every logged step proxy_kl = mean over their tokens of the k3 estimate r − 1 − log r, r = π_θ/π_init, of "
        "KL(π_init‖π_θ) (no reference model; 0: off).",
        ge=0,
    )

    def check(self) -> None:
        taken = sorted({"ops", "n", "seed", "out", "preset"} & set(self.world))
        if taken:
            raise ConfigError(f"key 'world.{taken[0]}': set by the probe (use probe.ops, probe.n, probe.seed)")
        from midtrain.synth.mix import parse_ops

        parse_ops(self.ops, "ops")


@dataclass
class EarlyStopConfig(Config):
    """Stop a run that has started to hack (needs the probe): the final model is the last checkpoint before the onset."""

    hacking_rate: float = param(
        0.0,
        "Stop when probe_hacking is at least this at `patience` consecutive probes (0: off). A checkpoint is saved at "
        "every probe; the run directory's model is then the one of the last probe before the streak (step 0: the "
        "initial policy); later checkpoints stay under checkpoints/.",
        ge=0,
        le=1,
    )
    patience: int = param(2, "Consecutive probes at or above hacking_rate that stop the run.", ge=1)


@dataclass
class RLWeightsConfig(Config):
    """Weight-space instruments (PRISM): train only a subnetwork (:mod:`midtrain.train.subnetwork`) and log the
    changed ratio per layer (:mod:`midtrain.train.weight_watch`). Off by default."""

    mask: str = param(
        "",
        "Subnetwork RL: a bool-mask safetensors file (`midtrain analyze mask START PILOT --out DIR`: the entries a pilot "
        "run changed; DIR or DIR/mask.safetensors): only the entries it selects train, every other one stays "
        "bit-identical (its gradient is zeroed before clipping and AdamW; with optim.weight_decay > 0 the frozen values "
        "are also kept, up to one model copy, and restored after every step). Empty: every weight trains.",
    )
    mask_control: Literal["mask", "complement", "random"] = param(
        "mask",
        "Which entries train: mask = inside weights.mask; complement = outside it; random = per tensor, each entry with "
        "the mask's density of that tensor (drawn from seed): the control of 'this subnetwork, or any of its size?'.",
    )
    watch: list[Literal["bf16", "fp32"]] = param(
        [],
        "Log changed_<view>/<group> at every logged step: the share of the entries of embed, each layer.N, norm, "
        "lm_head and all that differ from the initial weights. bf16 = their bf16 rounding differs (keeps a bf16 copy "
        "of the initial weights: half an fp32 model copy); fp32 = their value differs (keeps an fp32 copy: one model "
        "copy). Empty: off.",
    )

    def check(self) -> None:
        if self.mask_control != "mask" and not self.mask:
            raise ConfigError(f"key 'mask_control': {self.mask_control} is a control of a mask; give weights.mask")

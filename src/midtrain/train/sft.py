"""``midtrain sft``: SFT mid-training, e.g. on thinking-augmented text (Thinking mid-training, DESIGN §1.1).

The same causal-LM stage as pretraining (:mod:`midtrain.train.lm` on :mod:`midtrain.train.engine`), starting
from a trained checkpoint with a lower learning rate. Loss on **all** tokens by default — thinking SFT learns
text and thoughts alike — or on completions only (``completion_only``). Augmented chunks (``segments`` records
from ``midtrain augment``) are rendered with their thoughts (``corpus.format=augmented``) or without
(``corpus.format=augmented_raw``, the SFT(raw) control). A ``replay`` share of the previous stage's data limits
forgetting. ``diagnose.every_steps`` runs the synthetic world's skill diagnostics as a callback. Launch::

    midtrain sft --model runs/base --corpus.files aug/sft.jsonl --corpus.format augmented --out runs/sft-think
"""

from __future__ import annotations

from dataclasses import dataclass

from midtrain.config import param
from midtrain.runs import Result
from midtrain.synth.diagnose import training_callbacks
from midtrain.train.engine import OptimConfig
from midtrain.train.lm import LMConfig, train_lm


@dataclass
class SFTConfig(LMConfig):
    """SFT mid-training: continued training from a checkpoint, lower learning rate, short warm-up."""

    optim: OptimConfig = param(OptimConfig(lr=3e-4, warmup_steps=10), "Optimizer and schedule.")


def run(cfg: SFTConfig) -> Result:
    """Run SFT mid-training (see module docstring)."""
    diagnostics = training_callbacks(cfg.diagnose)
    return train_lm(cfg, "sft", callbacks=diagnostics)

"""``midtrain pretrain``: causal-LM pretraining, from a freshly initialised tiny model or any checkpoint.

Next-token prediction on all tokens of packed documents (no cross-document attention), with a domain mixture
and token budget from the config; see :mod:`midtrain.train.lm` for the LM stage and :mod:`midtrain.train.engine`
for what every training stage shares (schedule, precision, resume, checkpoints, logs). With
``diagnose.every_steps`` the synthetic world's skill diagnostics run as a callback
(:func:`midtrain.synth.diagnose.training_callbacks`). Launch::

    midtrain model init --preset micro --tokenizer tok/ --out runs/init
    midtrain pretrain --model runs/init --corpus.files problems.jsonl --max-tokens 5000000 --out runs/base
    accelerate launch --config_file configs/accelerate/ddp.yaml -m midtrain pretrain --config my.yaml
"""

from __future__ import annotations

from dataclasses import dataclass

from midtrain.runs import Result
from midtrain.synth.diagnose import training_callbacks
from midtrain.train.lm import LMConfig, train_lm


@dataclass
class PretrainConfig(LMConfig):
    """Pretraining: loss on every token; defaults suit tiny models trained from scratch."""


def run(cfg: PretrainConfig) -> Result:
    """Pretrain a causal LM (see module docstring)."""
    diagnostics = training_callbacks(cfg.diagnose)
    return train_lm(cfg, "pretrain", callbacks=diagnostics)

"""The controlled synthetic reasoning world (DESIGN §1.3): dependency-graph problems, traces and verification.

- ``world``: graphs, the op count, the generator (``SynthConfig``, ``generate_problems``).
- ``render``: contexts, natural and compact renderings, gold traces, raw documents, the programmatic annotator.
- ``verify``: the safe parser and evaluator, process verification, rewards, summaries (one implementation for
  evaluation and RL).
- ``mix``: op presets and mixtures, context mixtures, replay mixes.
- verbs, one file each: ``generate`` (``midtrain synth generate``), ``verify``, ``stats``, ``diagnose``;
  ``summary`` aggregates verified samples for evaluation.
"""

from midtrain.synth.generate import SynthConfig, generate_problems
from midtrain.synth.mix import (
    PRESETS,
    OpDistribution,
    difficulty_mix,
    mix_records,
    parse_ops,
    replay_mix,
)
from midtrain.synth.render import Context, annotate, load_context, raw_document
from midtrain.synth.stats import StatsConfig
from midtrain.synth.verify import (
    Verification,
    VerifyConfig,
    reward,
    reward_of,
    summarize,
    verify,
)
from midtrain.synth.world import op_count
from midtrain.thoughts import render_augmented

__all__ = [
    "SynthConfig",
    "VerifyConfig",
    "StatsConfig",
    "generate_problems",
    "op_count",
    "verify",
    "reward",
    "reward_of",
    "summarize",
    "Verification",
    "annotate",
    "raw_document",
    "render_augmented",
    "Context",
    "load_context",
    "PRESETS",
    "OpDistribution",
    "parse_ops",
    "difficulty_mix",
    "replay_mix",
    "mix_records",
]

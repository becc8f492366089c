"""The stage registry: every verb of ``midtrain`` once, with where it lives and what it writes.

One table serves the command line (:mod:`midtrain.cli`), the experiment runner
(:mod:`midtrain.experiment.graph`) and the docs (a test checks that the README lists every verb). Each stage
is a function ``fn(cfg) -> Result`` whose first parameter is annotated with its :class:`~midtrain.config.Config`
class; targets are import paths, so listing the verbs (``midtrain --help``) imports no stage and no torch.

The file of a verb is named by it: ``synth generate`` lives in ``midtrain/synth/generate.py``, ``augment split``
in ``midtrain/augment/split.py``, and so on (``tokenizer train`` → ``models/tokenizer.py``, ``model init`` →
``models/init.py``, ``model import`` → ``models/import_gguf.py``, ``judge`` → ``llm/judge.py``; ``experiment run``,
``report`` and ``demo`` → ``experiment/``).
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from midtrain.config import Config

Output = Literal["dir", "file", "none"]
Compute = Literal["", "mid", "rl"]


@dataclass(frozen=True)
class Stage:
    verb: str  # "synth generate"
    target: str  # "module:function"
    help: str
    output: Output = "dir"  # what `out` names: a run directory, a single file, or nothing (prints only)
    compute: Compute = ""  # how an experiment counts its FLOPs: mid-training, RL, or not at all (rl: by task)

    def resolve(self) -> tuple[Callable[..., Any], type[Config]]:
        """The stage function and its config class (imports the stage's module)."""
        mod, fn_name = self.target.split(":")
        fn = getattr(importlib.import_module(mod), fn_name)
        hints = typing.get_type_hints(fn)
        params = [p for p in hints if p != "return"]
        return fn, hints[params[0]]

    @property
    def module(self) -> str:
        return self.target.split(":")[0]


STAGES: tuple[Stage, ...] = (
    Stage("tokenizer train", "midtrain.models.tokenizer:train_tokenizer", "Train a byte-level BPE (or char) tokenizer on local files."),
    Stage("model init", "midtrain.models.init:init_model", "Initialise a tiny Qwen2/Llama causal LM from a size preset."),
    Stage("model import", "midtrain.models.import_gguf:import_gguf", "Convert a GGUF file (or the installed SmolLM2) to a checkpoint dir."),
    Stage("synth generate", "midtrain.synth.generate:generate", "Generate synthetic dependency-graph problems (JSONL).", output="file"),
    Stage("synth verify", "midtrain.synth.verify:run", "Process-verify completions against synthetic problems.", output="none"),
    Stage("synth stats", "midtrain.synth.stats:stats", "Histograms and token-length percentiles of a problem file.", output="none"),
    Stage(
        "synth diagnose",
        "midtrain.synth.diagnose:diagnose",
        "Skill diagnostic of a checkpoint: per-skill teacher-forced accuracy, verified accuracy with and without a trace.",
    ),
    Stage(
        "synth select",
        "midtrain.synth.select:select",
        "Keep the problems at a checkpoint's edge of competence (measured pass@k > 0, low pass@1) for RL.",
    ),
    Stage(
        "synth tasks",
        "midtrain.synth.tasks:tasks",
        "RL mid-training tasks whose prompt ends inside a gold solution and whose reference is its next k steps.",
    ),
    Stage("tokenize", "midtrain.train.tokenize:run", "Tokenize a corpus once into memory-mapped token shards that training reads."),
    Stage("pretrain", "midtrain.train.pretrain:run", "Causal-LM pretraining from scratch or a checkpoint.", compute="mid"),
    Stage("sft", "midtrain.train.sft:run", "SFT mid-training on (augmented) text, loss on all tokens by default.", compute="mid"),
    Stage("rl", "midtrain.train.rl:run", "Dr. GRPO RL: answer tasks (RLVR) or suffix tasks (RL mid-training).", compute="rl"),
    Stage("augment", "midtrain.augment.augment:run", "Insert thoughts into text chunks with an annotator; validate; shard."),
    Stage("augment split", "midtrain.augment.split:split", "Split accepted augmented chunks into SFT and RL parts by chunk hash."),
    Stage("augment tasks", "midtrain.augment.tasks:build", "Build RL mid-training suffix tasks (prefix → reference) from the RL part."),
    Stage("judge", "midtrain.llm.judge:run", "Judge candidate vs reference continuations (LLM or rule judge)."),
    Stage("eval", "midtrain.eval.evaluate:run", "Evaluate a model on benchmarks or the synthetic world."),
    Stage("eval score", "midtrain.eval.score:score", "Score completions produced elsewhere against a benchmark."),
    Stage("analyze weights", "midtrain.analysis.weights:weights", "Weight-change sparsity between checkpoints."),
    Stage("analyze mask", "midtrain.analysis.mask:mask", "Bool masks of the entries changed between two checkpoints (rl --weights.mask)."),
    Stage("analyze transplant", "midtrain.analysis.transplant:transplant", "Delta transplant: checkpoint D = C + s·(B − A), streamed."),
    Stage("analyze cka", "midtrain.analysis.cka:cka", "Linear CKA of hidden states between two checkpoints."),
    Stage(
        "analyze hacking",
        "midtrain.analysis.hacking:hacking",
        "Score reward-hacking proxies (KL, entropy, length, advantages) against the live probe's hacking onset across RL runs.",
    ),
    Stage(
        "analyze thought-swap",
        "midtrain.analysis.thought_swap:thought_swap",
        "Suffix log-prob, probability and exact match after the model's own thought vs another task's: is the thought used?",
    ),
    Stage("report", "midtrain.experiment.report:run", "Markdown + HTML report with tables and plots from run dirs."),
    Stage("experiment run", "midtrain.experiment.experiment:run", "Run an experiment: arms of cached, resumable stages."),
    Stage("demo", "midtrain.experiment.demo:demo", "The controlled thinking mid-training experiment on CPU."),
)


def verbs() -> list[str]:
    return [s.verb for s in STAGES]


def stage(verb: str) -> Stage:
    """The stage of ``verb``; KeyError for an unknown verb."""
    for s in STAGES:
        if s.verb == verb:
            return s
    raise KeyError(verb)


def match(argv: list[str]) -> tuple[Stage | None, list[str]]:
    """The stage whose verb is the longest prefix of ``argv``, and the remaining arguments."""
    best: Stage | None = None
    for s in STAGES:
        words = s.verb.split()
        if argv[: len(words)] == words and (best is None or len(words) > len(best.verb.split())):
            best = s
    if best is None:
        return None, argv
    return best, argv[len(best.verb.split()) :]


__all__ = ["STAGES", "Stage", "match", "stage", "verbs"]

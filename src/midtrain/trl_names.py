"""TRL's names of midtrain's config keys, for the unknown-key error of a user who knows TRL or transformers.

Someone coming from TRL types ``learning_rate`` or ``--per_device_train_batch_size`` (the names of
transformers' ``TrainingArguments``, which TRL's configs extend). A list of ~90 valid keys or a far-fetched
"did you mean 'num_proc'" does not help them; naming the key this stage has does: "'learning_rate' is TRL's
name: midtrain calls it 'optim.lr'". A name midtrain shares but keeps in a section (``weight_decay`` in ``optim``)
gets "midtrain has it as 'optim.weight_decay'".

Each entry of :data:`TRL_NAMES` lists midtrain's candidates in order of preference, each a key or the dotted tail
of one (``lr`` matches ``optim.lr``); the first candidate the stage's config has wins, and among several keys
that end the same way the shallowest. One table thus serves every stage and survives a key moving into a
section. A name with no counterpart in midtrain has a note instead (``resume_from_checkpoint``).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

# TRL / TrainingArguments name → (midtrain's candidates, a note said after the key, or alone when none matches)
TRL_NAMES: dict[str, tuple[tuple[str, ...], str]] = {
    "learning_rate": (("lr",), ""),
    "lr_scheduler_type": (("schedule",), "cosine, linear or constant"),
    "warmup_steps": (("warmup_steps",), ""),
    "warmup_ratio": (("warmup_steps",), "a number of steps, not a ratio"),
    "weight_decay": (("weight_decay",), ""),
    "adam_beta1": (("beta1",), ""),
    "adam_beta2": (("beta2",), ""),
    "max_grad_norm": (("max_grad_norm",), ""),
    "gradient_accumulation_steps": (("grad_accum_steps",), ""),
    "per_device_train_batch_size": (("batch_size", "per_device_batch_size"), ""),
    "per_device_eval_batch_size": (("batch_size",), ""),
    "num_train_epochs": (("max_steps",), "optimizer steps, not epochs"),
    "max_steps": (("max_steps",), ""),
    "logging_steps": (("log_every_steps",), ""),
    "save_steps": (("save_every_steps",), ""),
    "save_strategy": (("save_every_steps",), "steps; save_every_minutes adds a time trigger"),
    "save_total_limit": (("keep_checkpoints",), ""),
    "seed": (("seed",), ""),
    "data_seed": (("seed",), "one seed for data order and initialisation"),
    "output_dir": (("out",), ""),
    "overwrite_output_dir": (("overwrite",), ""),
    "bf16": (("precision",), "set it to bf16"),
    "fp16": (("precision",), "fp32 or bf16; fp16 is not offered"),
    "torch_dtype": (("dtype", "precision"), ""),
    "max_seq_length": (("seq_len",), ""),
    "max_length": (("seq_len",), ""),
    "max_prompt_length": (("max_prompt_tokens", "prompts.max_tokens"), ""),
    "max_completion_length": (("max_completion_length",), ""),
    "num_generations": (("num_generations",), ""),
    "epsilon": (("epsilon_low",), "and epsilon_high for the upper side"),
    "use_vllm": (("vllm.mode", "vllm"), ""),
    "vllm_mode": (("vllm.mode", "vllm"), ""),
    "model_name_or_path": (("model",), ""),
    "dataset_name": (("corpus.files", "data"), "local files"),
    "train_file": (("corpus.files", "data"), ""),
    "dataset_text_field": (("text_field",), ""),
    "completion_only_loss": (("completion_only",), ""),
    "packing": ((), "midtrain always packs rows, and documents never attend to each other"),
    "resume_from_checkpoint": ((), "midtrain resumes by itself: run the same command on the same out"),
}
# lm-evaluation-harness's names, for `midtrain eval` (same form)
LM_EVAL_NAMES: dict[str, tuple[tuple[str, ...], str]] = {
    "num_fewshot": (("n_shots",), ""),
    "max_gen_toks": (("max_new_tokens",), ""),
}


def dotted_keys(cls: Any) -> list[str]:
    """Every key of dataclass ``cls``, a nested dataclass's as ``section.key``, shallowest first."""
    hints = typing.get_type_hints(cls)
    out: list[str] = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        out += [f"{f.name}.{k}" for k in dotted_keys(tp)] if dataclasses.is_dataclass(tp) else [f.name]
    return sorted(out, key=lambda k: k.count("."))


def section(cls: Any, path: list[str]) -> Any:
    """The dataclass at ``path`` (field names) inside dataclass ``cls``, or None if ``path`` names none."""
    for part in path:
        fields = {f.name for f in dataclasses.fields(cls)}
        tp = typing.get_type_hints(cls).get(part) if part in fields else None
        if not dataclasses.is_dataclass(tp):
            return None
        cls = tp
    return cls


def trl_hint(key: str, cls: Any) -> str | None:
    """The hint for the unknown dotted ``key`` of config class ``cls`` (its last part is looked up), or None.

    ``key`` may start with where ``cls`` sits (``optim.learning_rate`` with ``cls`` the optim section, or
    ``stages.a.args.learning_rate`` in an experiment) and may reach into a section of ``cls``
    (``optim.learning_rate`` with ``cls`` the stage's config): the key named in the hint is spelled the same way.
    """
    parts = key.split(".")
    name = parts[-1]
    owner = "TRL's" if name in TRL_NAMES else "lm-eval's"
    entry = TRL_NAMES.get(name) or LM_EVAL_NAMES.get(name)
    if entry is None:
        return None
    # the longest tail of the key's parents that is a section path inside cls; what comes before it is outside
    start = next(i for i in range(len(parts)) if section(cls, parts[i:-1]) is not None)
    inner = section(cls, parts[start:-1])
    candidates, note = entry
    keys = dotted_keys(inner)
    for cand in candidates:
        found = next((k for k in keys if k == cand or k.endswith("." + cand)), None)
        if found is None:
            continue
        target = ".".join([*parts[:-1], found])  # spelled from where the key was written
        same = found.rpartition(".")[2] == name  # midtrain's name too, only in a section
        said = f"midtrain has it as '{target}'" if same else f"'{name}' is {owner} name: midtrain calls it '{target}'"
        return f"{said} ({note})" if note else said
    return f"'{name}' is {owner} name: {note}" if note and not candidates else None


__all__ = ["TRL_NAMES", "LM_EVAL_NAMES", "dotted_keys", "section", "trl_hint"]

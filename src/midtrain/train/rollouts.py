"""RL rollouts through midtrain's KV-cache sampler: what ``midtrain rl``'s trainer generates with when it is exact.

Algorithm: TRL's GRPOTrainer generates a batch of completions in ``_generate_single_turn`` (left-pads the prompt
ids, ``model.generate`` with the trainer's ``generation_config``, cuts each row after its first id of
``trainer.eos_token_ids``). :func:`sampler_rollouts` replaces that (the trainer's override of the hook,
:class:`midtrain.train.rl_trainer.MidtrainGRPOTrainer`), when it is exact, with
:func:`midtrain.models.sampler.sample` (preallocated KV cache, GQA without K/V copies, finished rows dropped from
the batch; ~2x less generation time for the demo model's RL step): same prompt padding and positions, same
temperature → top-k → top-p sampling, the same stop ids (including the ``</think>`` id that the ``info_gain`` reward
adds to ``eos_token_ids`` and the generation config), completions up to and including the first stop id.
Anything the sampler does not reproduce goes to TRL's path unchanged: vLLM or continuous batching, images or tool
images, bf16 generation (the trainer's autocast, ``bf16=True``), FSDP/DeepSpeed (sharded weights), generation
options it does not implement (repetition penalty, min_p, ...), architectures or rope types it does not support
(:func:`midtrain.models.sampler.supported`), or ``MIDTRAIN_SAMPLER=hf`` in the environment.
"""

from __future__ import annotations

from typing import Any

import torch

from midtrain.models import sampler


def sampler_rollouts(
    trainer: Any, prompt_ids: list[list[int]], images: Any, multimodal_fields: Any, has_tool_images: bool, *, bf16: bool = False
) -> list[list[int]] | None:
    """The completion ids of ``prompt_ids`` from the sampler for ``trainer`` (a GRPOTrainer), or None when TRL's own
    path must run (``bf16``: the trainer generates under bf16 autocast, which the sampler does not reproduce)."""
    gc = trainer.generation_config
    plain = not (trainer.use_vllm or trainer.use_transformers_continuous_batching or images or multimodal_fields or has_tool_images)
    plain = plain and not (bf16 or trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled)
    if not plain or not prompt_ids:
        return None
    model = trainer.accelerator.unwrap_model(trainer.model)
    eos = gc.eos_token_id if isinstance(gc.eos_token_id, list) else [gc.eos_token_id]
    if set(eos) != set(trainer.eos_token_ids):
        return None
    width = max(len(p) for p in prompt_ids)
    pad, device = trainer._tokenizer.pad_token_id, trainer.accelerator.device
    ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompt_ids], device=device)  # [B, T] left-padded
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids], device=device)  # [B, T]
    out = sampler.sample_with_config(model, ids, mask, gc, list(trainer.eos_token_ids))
    return None if out is None else out.tokens


__all__ = ["sampler_rollouts"]

"""Batched text generation with a local Hugging Face model: left padding, KV cache, greedy or sampling.

The one in-process generation path used by evaluation, the in-process annotator/judge backend and tests, so
they cannot drift. Prompts are sorted by length before batching (less padding), generated ``batch_size`` at a
time with ``model.generate(use_cache=True)`` (without the cache CPU generation is ~15x slower, DESIGN §4), and
returned in input order. ``n`` samples per prompt are produced by repeating the prompt in the batch.

When :func:`midtrain.models.sampler.supported` accepts the model and the merged generation options (the model's
``generation_config`` updated with this call's) and there are no stop strings, the batch goes through the hand-written
KV-cache sampler instead (same tokens greedily, same distribution sampling; 1.9-2.2x faster on the demo model, bench/RESULTS.md);
``MIDTRAIN_SAMPLER=hf`` forces HF ``generate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from midtrain.models.tokenizer import leading_bos


@dataclass
class Generation:
    text: str  # decoded completion, special tokens (bos/eos/pad) removed, tags kept
    tokens: int  # number of generated tokens, up to and including EOS
    finished: bool  # stopped by EOS or a stop string rather than the token budget


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    n: int = 1,
    batch_size: int = 32,
    seed: int | None = None,
    stop: Sequence[str] = (),
    add_bos: bool = True,
    progress: Any = None,
) -> list[list[Generation]]:
    """``n`` generations for each prompt, in prompt order. ``temperature=0`` is greedy."""
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    work = [(i, j) for i in range(len(prompts)) for j in range(n)]
    lengths = {i: len(p) for i, p in enumerate(prompts)}
    work.sort(key=lambda ij: -lengths[ij[0]])
    out: list[list[Generation | None]] = [[None] * n for _ in prompts]
    model.eval()
    bos = tokenizer.bos_token if add_bos and leading_bos(tokenizer) else ""  # as the model was trained
    for start in range(0, len(work), batch_size):
        chunk = work[start : start + batch_size]
        texts = [bos + prompts[i] for i, _ in chunk]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens,
            use_cache=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if stop:
            kwargs.update(stop_strings=list(stop), tokenizer=tokenizer)
        for row, (i, j) in zip(generate_rows(model, enc, kwargs), chunk):
            n_tok = len(row)
            finished = False
            if tokenizer.eos_token_id in row:
                n_tok = row.index(tokenizer.eos_token_id) + 1
                finished = True
            else:
                while n_tok and row[n_tok - 1] == tokenizer.pad_token_id:
                    n_tok -= 1
                    finished = True
            text = tokenizer.decode(row[:n_tok], skip_special_tokens=True)
            if stop and any(s in text for s in stop):
                finished = True
            out[i][j] = Generation(text=text, tokens=n_tok, finished=finished)
        if progress is not None:
            progress(len(chunk))
    return out  # type: ignore[return-value]


def generate_rows(model: Any, enc: Any, kwargs: dict[str, Any]) -> list[list[int]]:
    """The new token ids of each row of the batch ``enc``: from the sampler when it supports the model and the
    options (``model.generation_config`` updated with ``kwargs``, as ``generate`` merges them), else from HF
    ``generate`` (then padded after EOS; callers cut at the first EOS either way)."""
    import copy

    import torch

    from midtrain.models import sampler

    gc = copy.deepcopy(model.generation_config)
    gc.update(**{k: v for k, v in kwargs.items() if k not in ("tokenizer", "use_cache")})
    out = (
        None
        if "stop_strings" in kwargs
        else sampler.sample_with_config(model, enc["input_ids"], enc["attention_mask"], gc, gc.eos_token_id)
    )
    if out is not None:
        return out.tokens
    with torch.inference_mode():
        ids = model.generate(**enc, **kwargs)  # [B, T_prompt + T_new]
    return ids[:, enc["input_ids"].shape[1] :].tolist()  # [B, T_new]

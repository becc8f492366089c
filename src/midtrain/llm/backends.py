"""Text-generation backends shared by the annotator (``midtrain augment``), the judge (``midtrain.llm.judge``) and
evaluation (``midtrain eval``).

One small protocol, :class:`TextBackend`: ``generate(prompts, *, max_new_tokens, temperature, n)`` returns ``n``
completions per prompt in prompt order, and ``agenerate`` is the same as a coroutine. With ``errors="return"`` a
prompt that failed for good yields a :class:`~midtrain.llm.base.BackendError` (with a ``kind`` to count it by, see
:mod:`midtrain.llm.base`) in its slot instead of raising, so that one bad request never stops a run of thousands;
every backend fails that way, an exception of an in-process batch being a failed item for each of its prompts.
The in-process backends also implement :class:`CompletionBackend`: ``complete`` continues raw prompts (no chat
template) with stop strings, nucleus sampling and an explicit seed, and returns each completion with its token count
and whether it finished, which is what evaluation needs. Every backend takes its config section,
:class:`~midtrain.llm.config.BackendConfig`. Implementations:

- :class:`TransformersBackend`: any local Hugging Face causal LM (loaded by :func:`midtrain.models.init.load_model`,
  which refuses missing weights), batched with KV cache through :func:`midtrain.models.generation.generate`; the
  tokenizer's chat template is applied by ``generate`` when it has one. ``agenerate`` runs the batch in a worker
  thread, one batch at a time.
- :class:`~midtrain.llm.openai.OpenAIBackend` (:mod:`midtrain.llm.openai`): any OpenAI-compatible HTTP server, chat
  or completions endpoint or ``auto`` (the first request decides), bounded concurrency, backoff retries, fail-fast
  on 401/403/3xx.
- :class:`VLLMBackend`: vLLM offline (``vllm.LLM``), imported only when constructed; a clear error otherwise.
- :class:`ProgrammaticBackend`: no model. It answers every prompt with the ``respond(prompt) -> str`` its caller
  supplies: the caller wrote the prompt and knows how to read it (the augment stage's rule annotator in
  :mod:`midtrain.augment.rules`, the judge's rule verdict :func:`midtrain.llm.judge.rule_verdict`, a test's script).
  This module knows no stage's prompt.

:func:`make_backend` builds one from a :class:`~midtrain.llm.config.BackendConfig`; ``respond`` goes to the
programmatic backend.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from midtrain.config import MAX_SEED
from midtrain.errors import ConfigError, MidtrainError
from midtrain.llm.base import Errors, as_backend_error, fail_all
from midtrain.llm.config import BackendConfig
from midtrain.llm.openai import OpenAIBackend
from midtrain.models.generation import Generation

Respond = Callable[[str], str]


# -- protocols --------------------------------------------------------------------------------------------------
@runtime_checkable
class TextBackend(Protocol):
    name: str
    stats: Counter

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        n: int = 1,
        errors: Errors = "raise",
    ) -> list[list[str]]: ...

    async def agenerate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        n: int = 1,
        errors: Errors = "raise",
    ) -> list[list[str]]: ...


@runtime_checkable
class CompletionBackend(Protocol):
    """A backend that continues raw prompts and reports token counts (the in-process ones)."""

    name: str

    def complete(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
    ) -> list[Generation]: ...


# -- in-process transformers ------------------------------------------------------------------------------------
class TransformersBackend:
    """A local HF causal LM; batches through :func:`midtrain.models.generation.generate` (KV cache).

    ``cfg.model`` is loaded unless ``model`` is given (an in-memory model, e.g. the policy being trained);
    ``tokenizer`` defaults to the checkpoint's.
    """

    def __init__(self, cfg: BackendConfig, *, model: Any = None, tokenizer: Any = None) -> None:
        from midtrain.models.init import load_model
        from midtrain.models.tokenizer import load_tokenizer

        if model is None:
            if not cfg.model:
                raise ConfigError("key 'model': backend 'transformers' needs a model checkpoint")
            self.name = f"transformers:{Path(cfg.model).name or cfg.model}"
            if tokenizer is None:
                tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
            model = load_model(cfg.model, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
        else:
            self.name = f"transformers:{type(model).__name__}"
        if tokenizer is None:
            raise ConfigError("TransformersBackend: give a tokenizer with an in-memory model")
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.seed, self.num_threads = cfg.batch_size, cfg.seed, cfg.num_threads
        self.use_template = bool(cfg.chat_template and getattr(tokenizer, "chat_template", None))
        self.stats: Counter = Counter()
        self._lock = threading.Lock()

    def format(self, prompt: str) -> str:
        if not self.use_template:
            return prompt
        return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)

    def _run(self, prompts: Sequence[str], *, n: int, seed: int | None, add_bos: bool, **kw: Any) -> list[list[Generation]]:
        from midtrain.models.generation import generate

        with self._lock:  # one batch at a time: agenerate calls from several tasks share one model
            self.stats["calls"] += 1
            if self.num_threads > 0:  # OpenMP thread counts are per calling thread (agenerate runs in a worker)
                import torch

                torch.set_num_threads(self.num_threads)
            gens = generate(
                self.model,
                self.tokenizer,
                list(prompts),
                n=n,
                batch_size=self.batch_size,
                seed=self.seed + self.stats["calls"] if seed is None else seed,  # a re-ask at temperature > 0 samples anew
                add_bos=add_bos,
                **kw,
            )
        self.stats["requests"] += len(prompts) * n
        self.stats["completion_tokens"] += sum(g.tokens for row in gens for g in row)
        return gens

    def complete(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
    ) -> list[Generation]:
        """One completion of each raw prompt (no chat template); errors raise."""
        bos = self.tokenizer.bos_token or ""
        add_bos = not (bos and prompts and prompts[0].startswith(bos))  # a prompt built with its <bos> gets no second one
        gens = self._run(
            prompts, n=1, seed=seed, add_bos=add_bos, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, stop=stop
        )
        return [row[0] for row in gens]

    def generate(
        self, prompts: Sequence[str], *, max_new_tokens: int, temperature: float = 0.0, n: int = 1, errors: Errors = "raise"
    ) -> list[list[str]]:
        try:
            # a chat template writes its own <bos> (or none): only plain prompts get the tokenizer's
            gens = self._run(
                [self.format(p) for p in prompts],
                n=n,
                seed=None,
                add_bos=not self.use_template,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
            )
        except Exception as e:  # noqa: BLE001 - one failed batch must not stop a run
            return fail_all(len(prompts), as_backend_error(e, self.name), errors)
        return [[g.text for g in row] for row in gens]

    async def agenerate(self, prompts: Sequence[str], **kw: Any) -> list[list[str]]:
        return await asyncio.to_thread(self.generate, prompts, **kw)


# -- vLLM offline -----------------------------------------------------------------------------------------------
class VLLMBackend:
    """vLLM's offline engine (GPU machines). Imported only here: a clear error if vLLM is missing.

    ``engine_kwargs`` go to ``vllm.LLM`` over the config's (``tokenizer=``, ``dtype="auto"``, ``gpu_memory_utilization=``).
    """

    def __init__(self, cfg: BackendConfig, **engine_kwargs: Any) -> None:
        try:
            import vllm
        except ImportError:
            raise MidtrainError(
                "backend 'vllm' needs vLLM, which is not installed: pip install 'midtrain[vllm]' on a GPU machine, "
                "or use backend 'openai' against a running `vllm serve`"
            ) from None
        self._vllm = vllm
        opts = {"dtype": cfg.dtype, "seed": cfg.seed, "trust_remote_code": cfg.trust_remote_code, **engine_kwargs}
        self.llm = vllm.LLM(model=cfg.model, **opts)
        self.name, self.chat, self.seed = f"vllm:{Path(cfg.model).name or cfg.model}", cfg.chat_template, cfg.seed
        self.stats: Counter = Counter()

    def _params(self, n: int, temperature: float, max_new_tokens: int, seed: int | None, **kw: Any) -> Any:
        self.stats["calls"] += 1  # a seed per call: the same prompt re-asked at temperature > 0 samples anew
        seed = (self.seed + self.stats["calls"]) % (MAX_SEED + 1) if seed is None else seed
        return self._vllm.SamplingParams(n=n, temperature=temperature, max_tokens=max_new_tokens, seed=seed, **kw)

    def complete(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
    ) -> list[Generation]:
        """One completion of each raw prompt (no chat template); errors raise. The stop string stays in the text,
        as the transformers backend keeps it."""
        sp = self._params(1, temperature, max_new_tokens, seed, top_p=top_p, stop=list(stop) or None, include_stop_str_in_output=True)
        outs = self.llm.generate(list(prompts), sp, use_tqdm=False)
        self.stats["requests"] += len(prompts)
        gens = [
            Generation(text=o.outputs[0].text, tokens=len(o.outputs[0].token_ids), finished=o.outputs[0].finish_reason == "stop")
            for o in outs
        ]
        self.stats["completion_tokens"] += sum(g.tokens for g in gens)
        return gens

    def generate(
        self, prompts: Sequence[str], *, max_new_tokens: int, temperature: float = 0.0, n: int = 1, errors: Errors = "raise"
    ) -> list[list[str]]:
        sp = self._params(n, temperature, max_new_tokens, None)
        try:
            if self.chat:
                outs = self.llm.chat([[{"role": "user", "content": p}] for p in prompts], sp, use_tqdm=False)
            else:
                outs = self.llm.generate(list(prompts), sp, use_tqdm=False)
        except Exception as e:  # noqa: BLE001
            return fail_all(len(prompts), as_backend_error(e, self.name), errors)
        self.stats["requests"] += len(prompts) * n
        self.stats["completion_tokens"] += sum(len(o.token_ids) for out in outs for o in out.outputs)
        return [[o.text for o in out.outputs] for out in outs]

    async def agenerate(self, prompts: Sequence[str], **kw: Any) -> list[list[str]]:
        return await asyncio.to_thread(self.generate, prompts, **kw)


# -- programmatic (no model) ------------------------------------------------------------------------------------
class ProgrammaticBackend:
    """No model: every prompt is answered by the caller's ``respond(prompt)``, which may raise to fail that prompt."""

    def __init__(self, respond: Respond, *, name: str = "programmatic") -> None:
        self.respond, self.name = respond, name
        self.stats: Counter = Counter()

    def generate(
        self, prompts: Sequence[str], *, max_new_tokens: int = 0, temperature: float = 0.0, n: int = 1, errors: Errors = "raise"
    ) -> list[list[str]]:
        out: list[Any] = []
        for p in prompts:
            self.stats["requests"] += n
            try:
                out.append([self.respond(p) for _ in range(n)])
            except Exception as e:  # noqa: BLE001 - a scripted failure is a failed prompt
                err = as_backend_error(e, self.name)
                if errors == "raise":
                    raise err from e
                out.append(err)
        return out

    async def agenerate(self, prompts: Sequence[str], **kw: Any) -> list[list[str]]:
        return self.generate(prompts, **kw)


def make_backend(cfg: BackendConfig, *, respond: Respond | None = None) -> TextBackend:
    """The backend a config describes (models are loaded here); ``respond`` answers the prompts of a programmatic one."""
    if cfg.backend == "transformers":
        return TransformersBackend(cfg)
    if cfg.backend == "openai":
        return OpenAIBackend(cfg)
    if cfg.backend == "vllm":
        return VLLMBackend(cfg)
    if respond is None:
        raise ConfigError("key 'backend': 'programmatic' has no rules for this stage's prompts; choose transformers, openai or vllm")
    return ProgrammaticBackend(respond)


__all__ = [
    "BackendConfig",
    "CompletionBackend",
    "TextBackend",
    "TransformersBackend",
    "OpenAIBackend",
    "VLLMBackend",
    "ProgrammaticBackend",
    "Respond",
    "make_backend",
]

"""Text-generation backends shared by the annotator (``midtrain augment``) and the judge (``midtrain.llm.judge``).

One small protocol, :class:`TextBackend`: ``generate(prompts, *, max_new_tokens, temperature, n)`` returns ``n``
completions per prompt in prompt order, and ``agenerate`` is the same as a coroutine. With ``errors="return"`` a
prompt that failed for good yields a :class:`BackendError` (with a ``kind`` to count it by, see
:mod:`midtrain.llm.base`) in its slot instead of raising, so that one bad request never stops a run of thousands;
every backend fails that way, an exception of an in-process batch being a failed item for each of its prompts.
Implementations:

- :class:`TransformersBackend`: any local Hugging Face causal LM, batched with KV cache through
  :func:`midtrain.models.generation.generate`; the tokenizer's chat template is applied when it has one.
  ``agenerate`` runs the batch in a worker thread, one batch at a time.
- :class:`OpenAIBackend` (:mod:`midtrain.llm.openai`): any OpenAI-compatible HTTP server, chat or completions
  endpoint or ``auto`` (the first request decides), bounded concurrency, backoff retries, fail-fast on 401/403/3xx.
  Base URL from the config, else ``$MIDTRAIN_API_BASE`` / ``$OPENAI_BASE_URL``; the key from the environment
  variable named by ``api_key_env`` (never from a config file); ``seed`` and ``extra_body`` are sent.
- :class:`VLLMBackend`: vLLM offline (``vllm.LLM``), imported only when constructed; a clear error otherwise.
- :class:`ProgrammaticBackend`: no model. It answers the shipped annotator prompt with a rule-based annotation
  (thoughts at evenly spaced sentence ends), the shipped insert-mode prompt with one deterministic thought about
  the text so far (:func:`programmatic_thought`), the shipped judge prompt with a token-F1 verdict (F1 ≥ 0.5), or anything with a
  user-supplied ``respond(prompt) -> str``; synthetic problems are annotated by ``midtrain.synth.annotate``.

:func:`make_backend` builds one from a :class:`BackendConfig`. Prompt templates ship as package data
(``midtrain/prompts/*.txt``), loaded, checked and filled by :mod:`midtrain.llm.prompts` (re-exported here);
:func:`escape` keeps a value placed inside a tag of a prompt from closing it. The rule-based judge answer
(:func:`programmatic_verdict`, token F1 from :mod:`midtrain.metrics`) lives here, below :mod:`midtrain.llm.judge`,
which builds on this module (never the other way round).
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from midtrain.config import MAX_SEED, Config, check_http_url, param
from midtrain.errors import ConfigError, MidtrainError
from midtrain.llm.base import BackendError, Errors, as_backend_error, fail_all, run_sync
from midtrain.llm.openai import OpenAIBackend
from midtrain.llm.prompts import escape, fill_template, load_prompt, require_placeholders, unescape
from midtrain.metrics import token_f1
from midtrain.thoughts import THINK_CLOSE, THINK_OPEN

TEXT_BEGIN = "=== BEGIN TEXT ==="
TEXT_END = "=== END TEXT ==="
INSERT_BEGIN = "=== BEGIN TEXT SO FAR ==="  # the insert-mode thought prompt (prompts/insert.txt)
INSERT_END = "=== END TEXT SO FAR ==="


# -- protocol ---------------------------------------------------------------------------------------------------
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


@dataclass
class BackendConfig(Config):
    backend: Literal["transformers", "openai", "vllm", "programmatic"] = param(
        "programmatic",
        "transformers: local HF model in-process; openai: OpenAI-compatible HTTP server; vllm: "
        "vLLM offline; programmatic: rule-based, no model (tests, synthetic problems).",
    )
    model: str = param("", "Checkpoint dir or hub id (transformers, vllm); the served model name (openai).")
    base_url: str = param("", "Server URL such as http://127.0.0.1:8000/v1 (openai); empty: $MIDTRAIN_API_BASE or $OPENAI_BASE_URL.")
    api_key_env: str = param("OPENAI_API_KEY", "Name of the environment variable holding the API key (openai).")
    api: Literal["auto", "chat", "completions"] = param(
        "auto",
        "Endpoint (openai): chat = /chat/completions (the prompt as a user message, the server applies the chat template); "
        "completions = /completions (raw prompt); auto = the first request decides once: chat if /chat/completions "
        "answers, completions if it fails (a model without a chat template) and /completions answers.",
    )
    extra_body: dict[str, Any] = param(
        {},
        'Fields merged into every request body (openai), e.g. {"chat_template_kwargs": {"enable_thinking": false}} to turn off a judge\'s thinking.',
    )
    max_concurrency: int = param(16, "Maximum HTTP requests in flight (openai).", ge=1)
    timeout_s: float = param(120.0, "Timeout of one HTTP request (openai).", gt=0)
    max_retries: int = param(5, "Retries of one request on 429/5xx/timeouts/connection errors (openai).", ge=0)
    backoff_s: float = param(1.0, "Base of the exponential backoff between retries (openai).", ge=0)
    max_backoff_s: float = param(60.0, "Cap of one backoff sleep (openai).", ge=0)
    batch_size: int = param(16, "Prompts per generate call (transformers).", ge=1)
    dtype: Literal["float32", "bfloat16"] = param("float32", "Weights dtype (transformers, vllm); never fp16 on CPU.")
    chat_template: bool = param(True, "Apply the tokenizer's chat template when it has one (transformers, vllm).")
    trust_remote_code: bool = param(False, "Allow custom model code from the checkpoint (transformers, vllm).")
    num_threads: int = param(
        0,
        "torch CPU threads of this process (transformers); 0: torch's default. 1 avoids OpenMP spin-wait slowdowns on a shared machine.",
        ge=0,
    )
    seed: int = param(
        0,
        "Sampling seed (transformers, vllm; openai: sent as 'seed', shifted per re-ask of a prompt at temperature > 0 so a retry samples anew).",
        ge=0,
        le=MAX_SEED,
    )

    def check(self) -> None:
        if self.backend in ("transformers", "vllm") and not self.model:
            raise ConfigError(f"key 'model': backend '{self.backend}' needs a model checkpoint")
        if self.base_url:
            check_http_url(self.base_url, "base_url")
        if self.api_key_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env):  # never echo it: it may be the key
            raise ConfigError("key 'api_key_env': expected the name of an environment variable (e.g. OPENAI_API_KEY), not a key")


# -- in-process transformers ------------------------------------------------------------------------------------
class TransformersBackend:
    """A local HF causal LM; batches through :func:`midtrain.models.generation.generate` (KV cache)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        batch_size: int = 16,
        dtype: str = "float32",
        chat_template: bool = True,
        trust_remote_code: bool = False,
        seed: int = 0,
        num_threads: int = 0,
    ) -> None:
        from midtrain.models.init import load_model
        from midtrain.models.tokenizer import load_tokenizer

        if isinstance(model, (str, Path)):
            self.name = f"transformers:{Path(model).name or model}"
            tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model, trust_remote_code=trust_remote_code)
            model = load_model(model, dtype=dtype, trust_remote_code=trust_remote_code)
        else:
            self.name = f"transformers:{type(model).__name__}"
        if tokenizer is None:
            raise ConfigError("TransformersBackend: give a tokenizer with an in-memory model")
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.seed, self.num_threads = batch_size, seed, num_threads
        self.use_template = bool(chat_template and getattr(tokenizer, "chat_template", None))
        self.stats: Counter = Counter()
        self._lock = threading.Lock()

    def format(self, prompt: str) -> str:
        if not self.use_template:
            return prompt
        return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)

    def generate(
        self, prompts: Sequence[str], *, max_new_tokens: int, temperature: float = 0.0, n: int = 1, errors: Errors = "raise"
    ) -> list[list[str]]:
        from midtrain.models.generation import generate

        with self._lock:
            self.stats["calls"] += 1
            if self.num_threads > 0:  # OpenMP thread counts are per calling thread (agenerate runs in a worker)
                import torch

                torch.set_num_threads(self.num_threads)
            try:
                gens = generate(
                    self.model,
                    self.tokenizer,
                    [self.format(p) for p in prompts],
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    n=n,
                    batch_size=self.batch_size,
                    seed=self.seed + self.stats["calls"],
                    add_bos=not self.use_template,
                )
            except Exception as e:  # noqa: BLE001 - one failed batch must not stop a run
                return fail_all(len(prompts), as_backend_error(e, self.name), errors)
        self.stats["requests"] += len(prompts) * n
        self.stats["completion_tokens"] += sum(g.tokens for row in gens for g in row)
        return [[g.text for g in row] for row in gens]

    async def agenerate(self, prompts: Sequence[str], **kw: Any) -> list[list[str]]:
        return await asyncio.to_thread(self.generate, prompts, **kw)


# -- vLLM offline -----------------------------------------------------------------------------------------------
class VLLMBackend:
    """vLLM's offline engine (GPU machines). Imported only here: a clear error if vLLM is missing."""

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "bfloat16",
        chat_template: bool = True,
        trust_remote_code: bool = False,
        seed: int = 0,
        **engine_kwargs: Any,
    ) -> None:
        try:
            import vllm
        except ImportError:
            raise MidtrainError(
                "backend 'vllm' needs vLLM, which is not installed: pip install 'midtrain[vllm]' on a GPU machine, "
                "or use backend 'openai' against a running `vllm serve`"
            ) from None
        self._vllm = vllm
        self.llm = vllm.LLM(model=model, dtype=dtype, seed=seed, trust_remote_code=trust_remote_code, **engine_kwargs)
        self.name, self.chat, self.seed = f"vllm:{Path(model).name or model}", chat_template, seed
        self.stats: Counter = Counter()

    def generate(
        self, prompts: Sequence[str], *, max_new_tokens: int, temperature: float = 0.0, n: int = 1, errors: Errors = "raise"
    ) -> list[list[str]]:
        self.stats["calls"] += 1  # a seed per call: the same prompt re-asked at temperature > 0 samples anew
        seed = (self.seed + self.stats["calls"]) % (MAX_SEED + 1)
        sp = self._vllm.SamplingParams(n=n, temperature=temperature, max_tokens=max_new_tokens, seed=seed)
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
def extract_between(prompt: str, begin: str, end: str) -> str | None:
    """Text between the first ``begin`` line and the last ``end`` line of a prompt, or None."""
    i, j = prompt.find(begin + "\n"), prompt.rfind("\n" + end)
    if i < 0 or j < i + len(begin):
        return None
    return prompt[i + len(begin) + 1 : j]


def programmatic_annotation(text: str, max_thoughts: int = 4) -> str:
    """Rule-based annotation: up to ``max_thoughts`` thoughts at evenly spaced sentence ends."""
    from midtrain.augment.chunking import sentences

    sents = sentences(text)
    k = max(1, min(max_thoughts, len(sents)))
    after = sorted({max(1, round((j + 1) * len(sents) / k)) for j in range(k)})  # sentence counts before a thought
    out, done = [], 0
    for m in after:
        out.append("".join(sents[done:m]))
        words = "".join(sents[:m]).split()[-6:]
        out.append(f'{THINK_OPEN}So far: "{" ".join(words)}". The text should go on from this point.{THINK_CLOSE}')
        done = m
    out.append("".join(sents[done:]))
    return "".join(out)


def programmatic_thought(text_so_far: str) -> str:
    """Rule-based answer to the insert-mode prompt: one thought naming the last words read (deterministic)."""
    words = " ".join(text_so_far.split()[-6:])
    return f'Having read up to "{words}", I expect the next sentences to build on this point.'


def programmatic_verdict(prompt: str) -> str | None:
    """The verdict line of the shipped judge prompt answered by rule: YES iff token F1 of candidate and reference
    (unescaped from their tags) is at least 0.5; None when the prompt has no ``<candidate>``/``<reference>`` pair."""
    m_c = re.search(r"<candidate>\n?(.*?)\n?</candidate>", prompt, re.S)
    m_r = re.search(r"<reference>\n?(.*?)\n?</reference>", prompt, re.S)
    if not (m_c and m_r):
        return None
    return "VERDICT: YES" if token_f1(unescape(m_c.group(1)), unescape(m_r.group(1))) >= 0.5 else "VERDICT: NO"


class ProgrammaticBackend:
    """No model: a scripted ``respond(prompt)``, or rule-based answers to the shipped annotator/judge prompts."""

    def __init__(self, respond: Callable[[str], str] | None = None, *, max_thoughts: int = 4) -> None:
        self.respond, self.max_thoughts = respond, max_thoughts
        self.name = "programmatic"
        self.stats: Counter = Counter()

    def answer(self, prompt: str) -> str:
        if self.respond is not None:
            return self.respond(prompt)
        so_far = extract_between(prompt, INSERT_BEGIN, INSERT_END)
        if so_far is not None:
            return programmatic_thought(so_far)
        text = extract_between(prompt, TEXT_BEGIN, TEXT_END)
        if text is not None:
            return programmatic_annotation(text, self.max_thoughts)
        verdict = programmatic_verdict(prompt)
        return verdict if verdict is not None else ""

    def annotate_text(self, text: str) -> str:
        return programmatic_annotation(text, self.max_thoughts)

    @staticmethod
    def annotate_record(problem: dict[str, Any]) -> dict[str, Any]:
        """A synthetic problem (with ``graph``) → its augmented record, by ``midtrain.synth.annotate``."""
        try:
            from midtrain.synth import annotate
        except ImportError as e:
            raise MidtrainError(f"synthetic problems need midtrain.synth.annotate, which is not available ({e})") from None
        return annotate(problem)

    def generate(
        self, prompts: Sequence[str], *, max_new_tokens: int = 0, temperature: float = 0.0, n: int = 1, errors: Errors = "raise"
    ) -> list[list[str]]:
        out: list[Any] = []
        for p in prompts:
            self.stats["requests"] += n
            try:
                out.append([self.answer(p) for _ in range(n)])
            except Exception as e:  # noqa: BLE001 - a scripted failure is a failed prompt
                err = as_backend_error(e, self.name)
                if errors == "raise":
                    raise err from e
                out.append(err)
        return out

    async def agenerate(self, prompts: Sequence[str], **kw: Any) -> list[list[str]]:
        return self.generate(prompts, **kw)


def make_backend(cfg: BackendConfig, *, respond: Callable[[str], str] | None = None) -> TextBackend:
    """The backend a config describes (models are loaded here)."""
    if cfg.backend == "transformers":
        return TransformersBackend(
            cfg.model,
            batch_size=cfg.batch_size,
            dtype=cfg.dtype,
            chat_template=cfg.chat_template,
            trust_remote_code=cfg.trust_remote_code,
            seed=cfg.seed,
            num_threads=cfg.num_threads,
        )
    if cfg.backend == "openai":
        return OpenAIBackend(
            cfg.model,
            base_url=cfg.base_url,
            api_key_env=cfg.api_key_env,
            api=cfg.api,
            max_concurrency=cfg.max_concurrency,
            timeout_s=cfg.timeout_s,
            max_retries=cfg.max_retries,
            backoff_s=cfg.backoff_s,
            max_backoff_s=cfg.max_backoff_s,
            seed=cfg.seed,
            extra_body=cfg.extra_body,
        )
    if cfg.backend == "vllm":
        return VLLMBackend(
            cfg.model, dtype=cfg.dtype, chat_template=cfg.chat_template, trust_remote_code=cfg.trust_remote_code, seed=cfg.seed
        )
    return ProgrammaticBackend(respond)


__all__ = [
    "BackendConfig",
    "BackendError",
    "TextBackend",
    "TransformersBackend",
    "OpenAIBackend",
    "VLLMBackend",
    "ProgrammaticBackend",
    "make_backend",
    "load_prompt",
    "fill_template",
    "run_sync",
    "TEXT_BEGIN",
    "TEXT_END",
    "INSERT_BEGIN",
    "INSERT_END",
    "programmatic_thought",
    "programmatic_annotation",
    "programmatic_verdict",
    "extract_between",
    "require_placeholders",
    "escape",
    "unescape",
]

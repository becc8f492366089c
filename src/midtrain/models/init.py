"""``midtrain model init``: a tiny Llama or Qwen2 causal LM from a size preset, and loading any causal LM.

Algorithm: the Hugging Face model class of ``arch`` built from a preset (hidden size, layers, heads, KV heads,
MLP width), randomly initialised under a seed, with the embedding size set by the tokenizer's vocabulary; saved
as safetensors with its tokenizer, so ``AutoModelForCausalLM.from_pretrained(DIR)`` loads it offline.
:func:`load_model` loads any local checkpoint directory or hub id, the one loader of every stage, and refuses what
would load wrong (missing or mis-shaped weights, pickles, another kind of model); ``trust_remote_code`` stays off
unless the caller turns it on.

Launch: ``midtrain model init --preset micro --tokenizer runs/tok --out runs/init``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from midtrain.config import MAX_SEED, Config, param
from midtrain.console import log, seed_everything
from midtrain.errors import ConfigError, MidtrainError
from midtrain.fileio import ordinary_permissions
from midtrain.models.paths import require_model_path
from midtrain.models.tokenizer import load_tokenizer
from midtrain.runs import Result, open_run


@dataclass(frozen=True)
class Preset:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    tie_embeddings: bool = True


# Sizes in the comments are for a 512-token vocabulary with tied embeddings.
PRESETS: dict[str, Preset] = {
    "nano": Preset(96, 4, 4, 2, 256),  # ~0.44M
    "micro": Preset(128, 4, 4, 2, 384),  # ~0.8M (the char-level probe size of DESIGN §4)
    "tiny": Preset(256, 4, 8, 4, 688),  # ~3.2M (the bare-loop benchmark size of DESIGN §4)
    "small": Preset(384, 6, 6, 2, 1024),  # ~9M
    "medium": Preset(512, 8, 8, 2, 1536),  # ~23M
    "interplay-100m": Preset(768, 12, 12, 2, 3072, tie_embeddings=False),  # Interplay's Qwen2-style 100M
}


@dataclass
class ModelInitConfig(Config):
    preset: str = param("micro", f"Size preset: {', '.join(PRESETS)}.")
    tokenizer: str = param("", "Tokenizer directory (its vocabulary size sets the embedding size).", path="dir")
    out: str = param("", "Output checkpoint directory.", path="dir")
    arch: Literal["llama", "qwen2"] = param("llama", "Architecture of the Hugging Face model class.")
    max_position_embeddings: int = param(1024, "Maximum sequence length (RoPE positions).", ge=1, le=1 << 22)
    rope_theta: float = param(10000.0, "RoPE base frequency.", gt=0)
    seed: int = param(0, "Seed of the random initialisation.", ge=0, le=MAX_SEED)
    overwrite: bool = param(False, "Replace an existing output directory holding a different run.")

    def check(self) -> None:
        if self.preset not in PRESETS:
            import difflib

            close = difflib.get_close_matches(self.preset, list(PRESETS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"key 'preset': unknown preset '{self.preset}'{hint}; choose from {', '.join(PRESETS)}")
        if not self.tokenizer:
            raise ConfigError("key 'tokenizer': give a tokenizer directory")
        if not self.out:
            raise ConfigError("key 'out': give an output directory")


def model_config(
    preset: str, vocab_size: int, arch: str = "llama", max_position_embeddings: int = 1024, rope_theta: float = 10000.0, **ids: Any
):
    """A transformers config for a preset (no weights)."""
    from transformers import LlamaConfig, Qwen2Config

    p = PRESETS[preset]
    common = dict(
        vocab_size=vocab_size,
        hidden_size=p.hidden,
        intermediate_size=p.intermediate,
        num_hidden_layers=p.layers,
        num_attention_heads=p.heads,
        num_key_value_heads=p.kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=p.tie_embeddings,
        rms_norm_eps=1e-6,
        **ids,
    )
    if arch == "qwen2":
        return Qwen2Config(rope_theta=rope_theta, **common)
    return LlamaConfig(rope_theta=rope_theta, **common)


def init_model(cfg: ModelInitConfig) -> Result:
    """Randomly initialise a model from a preset and save it with its tokenizer."""
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(cfg.tokenizer)  # fails before the out dir exists
    with open_run(cfg.out, "model_init", cfg, {"tokenizer": cfg.tokenizer}, overwrite=cfg.overwrite, seed=cfg.seed) as run:
        if run.cached:
            return Result.of(run)
        seed_everything(cfg.seed)
        quiet_transformers()
        mcfg = model_config(
            cfg.preset,
            len(tok),
            cfg.arch,
            cfg.max_position_embeddings,
            cfg.rope_theta,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        model = AutoModelForCausalLM.from_config(mcfg)
        try:
            model.save_pretrained(str(run.path), safe_serialization=True)
        except Exception as e:  # a full disk surfaces as safetensors' own error type
            raise MidtrainError(f"{run.path}: cannot write the checkpoint ({str(e).splitlines()[0][:200]})") from None
        ordinary_permissions(run.path)  # safetensors writes its files 0600
        tok.save_pretrained(str(run.path))
        n = sum(p.numel() for p in model.parameters())
        run.finish({"parameters": n, "preset": cfg.preset, "arch": cfg.arch, "vocab_size": len(tok)})
        log(f"model init: {cfg.arch} '{cfg.preset}' with {n / 1e6:.2f}M parameters → {run.path}")
        return Result.of(run)


def quiet_transformers() -> None:
    """No per-file progress bars from transformers ("Loading weights", "Writing model shards"): our logs say it."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")  # architectures that generate text


def load_model_config(path: str | Path, *, trust_remote_code: bool = False) -> Any:
    """The transformers config of a checkpoint (local directory or Hub id), or a one-line :class:`MidtrainError`.

    A local-looking path that does not exist fails here at once, never after Hub retries
    (:func:`midtrain.models.paths.require_model_path`).
    """
    from transformers import AutoConfig

    require_model_path(path)
    try:
        return AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        raise MidtrainError(f"cannot load a model from '{path}': {(str(e).strip().splitlines() or [type(e).__name__])[0]}") from None


def check_causal_lm(conf: Any, path: str | Path) -> None:
    """A :class:`MidtrainError` unless ``conf`` describes a causal language model (one that generates text)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if "AutoModelForCausalLM" in (getattr(conf, "auto_map", None) or {}):  # custom code (trust_remote_code) says so itself
        return
    archs = list(getattr(conf, "architectures", None) or [])
    causal = conf.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not getattr(conf, "is_encoder_decoder", False)
    if not causal or (archs and not any(a.endswith(CAUSAL_SUFFIXES) for a in archs)):
        kind = archs[0] if archs else conf.model_type
        raise MidtrainError(f"model '{path}' is a {kind} ({conf.model_type}) checkpoint, not a causal language model")


def check_model_dir(path: str | Path) -> Any:
    """The config of a local causal-LM checkpoint directory (a stage that trains it accepts no Hub id), or a
    one-line :class:`MidtrainError` saying what is wrong; reads no weights, so stages call it before their run."""
    if not (Path(path) / "config.json").is_file():
        raise MidtrainError(f"model '{path}': not a checkpoint directory (no config.json)")
    conf = load_model_config(path)
    check_causal_lm(conf, path)
    return conf


def load_model(path: str | Path, *, dtype: str = "float32", trust_remote_code: bool = False, expect_arch: str | None = None) -> Any:
    """Load a causal LM from a local checkpoint dir or Hub id (offline use needs a local dir): the one loader of
    every stage that reads a model (training, RL, eval, diagnostics, backends, analysis).

    Refused, each with a one-line :class:`MidtrainError` naming the checkpoint: a local-looking path that does not
    exist; a config of another architecture than ``expect_arch`` or of a model that does not generate text; a
    truncated or malformed safetensors file; a pickled ``pytorch_model.bin`` that ``torch.load(weights_only=True)``
    refuses (it holds more than tensors; nothing in it is executed); and weights that are missing or mis-shaped for
    the config. transformers would initialise those at random with only a warning, and a "trained" model that is
    partly noise is the worst kind of silent error.
    """
    import pickle
    import warnings

    import torch
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    conf = load_model_config(path, trust_remote_code=trust_remote_code)
    if expect_arch and conf.model_type != expect_arch:
        raise MidtrainError(f"'{path}' is a {conf.model_type} checkpoint, expected {expect_arch}")
    check_causal_lm(conf, path)
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of a .bin before refusing it
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            model, info = AutoModelForCausalLM.from_pretrained(
                str(path), dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code, output_loading_info=True
            )
    except pickle.UnpicklingError:
        raise MidtrainError(
            f"'{path}': refused to load the pickled weights: they hold more than tensors (torch weights_only); "
            "convert trusted weights to safetensors"
        ) from None
    except Exception as e:  # a damaged or hostile checkpoint: safetensors, shape and OS errors alike name the path
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise MidtrainError(f"model '{path}': weights do not load as a {conf.model_type} model ({first})") from None
    refuse_missing_weights(conf, info, path)
    return model


def refuse_missing_weights(conf: Any, info: dict[str, Any], path: str | Path) -> None:
    """A :class:`MidtrainError` when ``from_pretrained``'s loading info lists missing or mis-shaped tensors (a
    tied ``lm_head`` is not missing: it is the embedding)."""
    tied = bool(getattr(conf, "tie_word_embeddings", False) or getattr(conf.get_text_config(), "tie_word_embeddings", False))
    missing = [k for k in info.get("missing_keys", []) if not (tied and k.startswith("lm_head"))]
    bad = missing + [str(k) for k in info.get("mismatched_keys", [])]
    if bad:
        raise MidtrainError(
            f"model '{path}': the weights do not match its {conf.model_type} config ({len(bad)} missing or mis-shaped "
            f"tensors, e.g. {bad[0]}); is it a checkpoint of another architecture?"
        )


__all__ = [
    "PRESETS",
    "Preset",
    "ModelInitConfig",
    "check_causal_lm",
    "check_model_dir",
    "init_model",
    "load_model",
    "load_model_config",
    "model_config",
    "quiet_transformers",
]

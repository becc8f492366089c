"""Model references: a local checkpoint directory or a Hugging Face Hub id, told apart before anything is loaded.

transformers treats any string that is not an existing directory as a Hub id, so a typo in a local path becomes a
minute of Hub retries and then "couldn't connect to huggingface.co". A reference **looks local** when it starts
with ``./``, ``../``, ``/`` or ``~``, or when it has a directory part that exists (``runs/sfy`` next to ``runs/``);
such a reference that does not exist is a one-line :class:`~midtrain.errors.MidtrainError` at once
(:func:`require_model_path`). Anything else (``Qwen/Qwen3-8B``, ``gpt2``) goes to the Hub as before.
"""

from __future__ import annotations

import os
from pathlib import Path

from midtrain.errors import MidtrainError

LOCAL_PREFIXES = ("./", "../", "/", "~", ".\\", "..\\")


def looks_local(ref: str | Path) -> bool:
    """Whether ``ref`` names a local path rather than a Hub id (see the module docstring)."""
    if isinstance(ref, Path):
        return True
    if ref in (".", "..") or ref.startswith(LOCAL_PREFIXES) or os.path.isabs(ref):
        return True
    parent = Path(ref).parent
    return parent != Path(".") and parent.is_dir()  # a bare name ("gpt2") has no directory part to check


def require_model_path(ref: str | Path, what: str = "model") -> None:
    """A :class:`MidtrainError` naming ``ref`` when it looks local and does not exist; nothing for a Hub id."""
    if looks_local(ref) and not Path(ref).expanduser().exists():
        raise MidtrainError(f"{what} '{ref}': no such file or directory (a local path, so the Hugging Face Hub is not asked)")


__all__ = ["LOCAL_PREFIXES", "looks_local", "require_model_path"]

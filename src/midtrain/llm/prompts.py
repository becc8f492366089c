"""Prompt templates of the annotator, the judge and the RL tasks: loading, checking, filling, escaping.

Templates ship as package data (``midtrain/prompts/*.txt``) or come from a user's ``.txt`` file. A placeholder is
``{name}`` (a Python identifier) that is not part of LaTeX or code: braces right after a letter, a backslash
command, ``^``, ``_`` or another ``}`` (``\\boxed{x}``, ``x^{n}``, ``\\frac{a}{b}``) and non-identifiers
(``{"a": 1}``, ``{}``) are text. :func:`check_template` refuses, at parse time, a template that lacks a required
placeholder or has one that nothing fills (a typo such as ``{candiate}`` would otherwise reach the model
verbatim); :func:`fill_template` replaces only the given names, in one pass, so that placeholders inside values are
never expanded; :func:`escape` keeps a value placed inside a tag of a prompt from closing it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

from midtrain.errors import ConfigError

JUDGE_PLACEHOLDERS = ("candidate", "reference")
PLACEHOLDER = re.compile(r"(?<![\w\\^_}])\{([A-Za-z_]\w*)\}")


def load_prompt(name_or_path: str, key: str = "prompt") -> str:
    """A shipped template by name (``augment``, ``judge``, ``suffix_task``) or a template file path; errors name
    the config ``key``."""
    p = Path(name_or_path)
    if "/" in name_or_path or p.suffix:
        if p.is_dir():
            raise ConfigError(f"key '{key}': prompt template {name_or_path} is a directory, expected a .txt file")
        if not p.is_file():
            raise ConfigError(f"key '{key}': prompt template file not found: {name_or_path}")
        try:
            return p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"key '{key}': prompt template {name_or_path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        except OSError as e:
            raise ConfigError(f"key '{key}': prompt template {name_or_path}: {e.strerror or e}") from None
    try:
        return resources.files("midtrain").joinpath("prompts", f"{name_or_path}.txt").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"key '{key}': unknown shipped prompt '{name_or_path}' (give a .txt path)") from None


def placeholders(template: str) -> list[str]:
    """The placeholder names of ``template`` in order of first use (see the module docstring)."""
    return list(dict.fromkeys(PLACEHOLDER.findall(template)))


def check_template(template: str, key: str, *, required: Sequence[str], allowed: Iterable[str] = ()) -> None:
    """ConfigError naming ``key`` if a ``required`` placeholder is missing or one outside ``required`` and
    ``allowed`` is present."""
    require_placeholders(template, required, key)
    known = set(required) | set(allowed)
    unknown = [n for n in placeholders(template) if n not in known]
    if unknown:
        names = ", ".join("{" + n + "}" for n in unknown)
        valid = ", ".join("{" + n + "}" for n in sorted(known))
        raise ConfigError(f"key '{key}': the prompt template has the unknown placeholder(s) {names} (known: {valid})")


def require_placeholders(template: str, names: Sequence[str], key: str) -> None:
    missing = [n for n in names if "{" + n + "}" not in template]
    if missing:
        raise ConfigError(f"key '{key}': the prompt template lacks the placeholder(s) {', '.join('{' + m + '}' for m in missing)}")


def fill_template(template: str, **values: str) -> str:
    """Replace ``{key}`` for the given keys in one pass (values are never re-scanned)."""
    pattern = re.compile(r"\{(" + "|".join(map(re.escape, values)) + r")\}")
    return pattern.sub(lambda m: values[m.group(1)], template)


def escape(text: str) -> str:
    """Escape ``& < >`` so that text placed inside a tag of a prompt can never close it (undone by :func:`unescape`)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


__all__ = [
    "JUDGE_PLACEHOLDERS",
    "check_template",
    "escape",
    "fill_template",
    "load_prompt",
    "placeholders",
    "require_placeholders",
    "unescape",
]

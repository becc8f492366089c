"""Typed stage configs: dataclasses whose field docs become ``--help``.

Every stage has one config class deriving from :class:`Config`. A field is declared with :func:`param`, which
stores its documentation next to its default::

    @dataclass
    class TrainConfig(Config):
        lr: float = param(3e-4, "Peak learning rate.")
        schedule: Literal["cosine", "linear"] = param("cosine", "Learning-rate decay after warm-up.")

Values come, in increasing precedence, from the defaults, a YAML file (``--config x.yaml``), and command-line
overrides (``--lr 1e-3`` or dotted ``optim.lr=1e-3``). Loading is strict: an unknown key is an error naming the
key and its closest valid spelling; a value of the wrong type names the key and the expected type; ``Literal``
modes are checked at parse time, never later. ``Config.check()`` holds cross-field rules.

Declared rules run whenever a config is built from data, before ``check()`` (:func:`check_fields`): floats must
be finite, ``param(8, "...", ge=1)`` bounds a number (each element of a list or mapping), an integer field holds at
most :data:`MAX_INT` (the int32 range) unless it declares its own ``le``/``lt`` (a count above it is a typo or an
attack, and would overflow a tensor index or hang a loop), ``path="file"|"dir"`` refuses a path that exists as the
other kind (existence is the stage's check: experiments plan stages whose inputs
do not exist yet). YAML goes through :func:`midtrain.yamlio.load_yaml` (duplicate keys and alias bombs are errors; YAML 1.2 numbers).
:meth:`Config.to_dict` and :func:`to_yaml` mask URL passwords (run keys, ``midtrain.json``, ``config.yaml``);
``to_dict(redact=False)`` is the faithful copy; :func:`redact_text` cleans error text that gets stored.

A key that moved stays known for one purpose: ``RENAMED = {"lr": "optim.lr"}`` on a config class makes the old key,
in a YAML file, a flag or a dotted override, a one-line error naming the new one ("key 'lr' is now 'optim.lr'")
instead of a bare "unknown key". The old key may have been a section (``judge_backend`` → ``judge.backend``: its
sub-keys are named too) or may now name a section that replaced a plain value (``vllm: colocate`` → ``vllm.mode``).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import math
import re
import types
import typing
from collections.abc import Iterable, Iterator
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, get_args, get_origin

import yaml

from midtrain.errors import ConfigError
from midtrain.trl_names import trl_hint
from midtrain.yamlio import load_yaml

C = TypeVar("C", bound="Config")


PathKind = Literal["file", "dir"]


@dataclass(frozen=True)
class Bounds:
    """A numeric range of a field: ``ge``/``gt``/``le``/``lt`` (None: unbounded on that side)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def holds(self, x: float) -> bool:
        return not (
            (self.ge is not None and x < self.ge)
            or (self.gt is not None and x <= self.gt)
            or (self.le is not None and x > self.le)
            or (self.lt is not None and x >= self.lt)
        )

    def text(self) -> str:
        lo = f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}" if self.gt is not None else ""
        hi = f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})" if self.lt is not None else ""
        if lo and hi:
            return f"in {lo}, {hi}"
        return f">{'=' * (lo[0] == '[')} {lo[1:]}" if lo else f"<{'=' * (hi[-1] == ']')} {hi[:-1]}"


def _num(x: float) -> str:
    if isinstance(x, int):  # (an int bound, 2**53 included, exactly)
        return str(x)
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def param(
    default: Any = MISSING,
    doc: str = "",
    *,
    positional: bool = False,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    path: PathKind | None = None,
    **kwargs: Any,
) -> Any:
    """A documented dataclass field. Mutable defaults (lists, dicts, configs) are copied per instance.

    ``positional=True`` makes the CLI take the field as a positional argument (a list field takes several).
    ``ge``/``gt``/``le``/``lt`` bound a number, ``path`` says what an existing path must be (``file``/``dir``):
    checked by :func:`check_fields` and shown in ``--help``.
    """
    bounds = Bounds(ge, gt, le, lt) if (ge, gt, le, lt) != (None, None, None, None) else None
    metadata = {"doc": doc, "positional": positional, "bounds": bounds, "path": path}
    if default is MISSING:
        return field(metadata=metadata, **kwargs)
    if isinstance(default, (list, dict, set)) or dataclasses.is_dataclass(default):
        return field(default_factory=functools.partial(copy.deepcopy, default), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


MAX_SEED = 2**32 - 1  # ``param(0, "Seed.", ge=0, le=MAX_SEED)``: what NumPy, torch and vLLM all accept
MAX_INT = 2**31 - 1  # the bound of every int field without its own ``le``/``lt``: steps, sizes, counts fit an int32


@dataclass
class Config:
    """Base class of every stage config."""

    # Old key → new key (dotted, relative to this class) of keys that moved; see the module docstring.
    RENAMED: ClassVar[dict[str, str]] = {}

    def check(self) -> None:
        """Cross-field validation; raise ConfigError naming the key. Subclasses extend it."""

    def validate(self, prefix: str = "", source: str = "") -> None:
        """The declared field rules (:func:`check_fields`), then :meth:`check`: what parsing runs on a config.

        In a section (``prefix`` ``annotator.``) the keys that ``check()`` names get the prefix.
        """
        check_fields(self, prefix, source)
        try:
            self.check()
        except ConfigError as e:
            if not prefix:
                raise
            raise ConfigError(_KEY_IN_ERROR.sub(lambda m: _prefixed(m, prefix), str(e), count=1)) from None

    # -- conversion -------------------------------------------------------------------------------------------
    def to_dict(self, *, redact: bool = True) -> dict[str, Any]:
        """Plain values; URL passwords masked (:func:`redact_secrets`) unless ``redact=False`` (a faithful copy)."""
        data = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return redact_secrets(data) if redact else data

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], *, prefix: str = "", source: str = "", check: bool = True) -> C:
        return _build(cls, data, prefix, source, check)

    def replace(self: C, **changes: Any) -> C:
        """A validated copy with some top-level or dotted fields changed."""
        data = self.to_dict(redact=False)
        for key, value in changes.items():
            set_dotted(data, key, value, type(self))
        return type(self).from_dict(data)

    @classmethod
    def field_docs(cls) -> dict[str, tuple[Any, str, Any]]:
        """Flattened ``{dotted.key: (type, doc, default)}`` over nested configs."""
        out: dict[str, tuple[Any, str, Any]] = {}
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            doc = f.metadata.get("doc", "")
            if f.metadata.get("bounds") is not None:
                doc = f"{doc} Must be {f.metadata['bounds'].text()}.".lstrip()
            default = _default_of(f)
            if _is_config(tp):
                for k, (sub_tp, sub_doc, sub_default) in tp.field_docs().items():
                    if isinstance(default, Config):  # the section's own default (RL's optim.lr 1e-6), not its class's
                        sub_default = _dotted_get(default, k, sub_default)
                    out[f"{f.name}.{k}"] = (sub_tp, sub_doc, sub_default)
            else:
                out[f.name] = (tp, doc, default)
        for old, new in cls.RENAMED.items():  # listed so that the command line takes the old flag to name the new key
            if new in out:  # (a renamed section has no flag of its own; its dotted keys fail in load_config)
                out[old] = (out[new][0], f"Renamed: use {new}.", MISSING)
        return out


_KEY_IN_ERROR = re.compile(r"\b(keys? ')([^']+)'")


def _prefixed(m: re.Match[str], prefix: str) -> str:
    key = m.group(2)
    return m.group(0) if key.startswith(prefix) else f"{m.group(1)}{prefix}{key}'"


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _dotted_get(obj: Any, key: str, fallback: Any) -> Any:
    for part in key.split("."):
        obj = getattr(obj, part, MISSING)
        if obj is MISSING:
            return fallback
    return obj


def _is_config(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Config)


def field_defaults(cls: type[Config]) -> dict[str, Any]:
    """The plain default value of every field of ``cls`` that has one (a nested config as its dict)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not MISSING:
            out[f.name] = _plain(f.default)
        elif f.default_factory is not MISSING:
            out[f.name] = _plain(f.default_factory())
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict(redact=False)  # the caller redacts the whole
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def type_name(tp: Any) -> str:
    """Human-readable name of a type annotation, e.g. ``one of 'cosine', 'linear'`` or ``list[int]``."""
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        inner = " or ".join(type_name(a) for a in args)
        return f"{inner} or null" if len(args) < len(get_args(tp)) else inner
    if origin in (list, tuple):
        elems = get_args(tp)
        return f"list[{type_name(elems[0])}]" if elems else "list"
    if origin is dict:
        k, v = get_args(tp) or (str, Any)
        return f"dict[{type_name(k)}, {type_name(v)}]"
    if _is_config(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, key: str, source: str = "", check: bool = True) -> Any:
    """Check ``value`` against annotation ``tp``; return it converted (int→float, nested configs built)."""
    where = f" in {source}" if source else ""
    bad = ConfigError(f"key '{key}'{where}: expected {type_name(tp)}, got {value!r}")
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise bad
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key, source, check)
            except ConfigError:
                continue
        raise bad
    if origin in (list, tuple):
        (inner,) = get_args(tp)[:1] or (Any,)
        if not isinstance(value, (list, tuple)):
            raise bad
        return [coerce(v, inner, f"{key}[{i}]", source, check) for i, v in enumerate(value)]
    if origin is dict:
        kt, vt = get_args(tp) or (str, Any)
        if not isinstance(value, dict):
            raise bad
        return {coerce(k, kt, key, source, check): coerce(v, vt, f"{key}.{k}", source, check) for k, v in value.items()}
    if _is_config(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise bad
        return _build(tp, value, key + ".", source, check)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise bad


def renamed_key_error(cls: type[Config], key: str, prefix: str = "", source: str = "") -> ConfigError | None:
    """The error for ``key`` (relative to ``cls``, dotted or not) if it or a section above it is one of
    ``cls.RENAMED``, else None."""
    parts = key.split(".")
    heads = (".".join(parts[:i]) for i in range(len(parts), 0, -1))
    head = next((h for h in heads if h in cls.RENAMED), None)
    if head is None:
        return None
    new = cls.RENAMED[head] + key[len(head) :]
    where = f" in {source}" if source else ""
    return ConfigError(f"key '{prefix}{key}'{where} is now '{prefix}{new}'")


def unknown_key_error(key: str, valid: list[str], source: str = "", cls: type[Config] | None = None) -> ConfigError:
    """The error for an unknown ``key``: midtrain's key if ``key`` is TRL's name of one of ``cls`` (relative to
    ``cls``, which may carry a prefix; :mod:`midtrain.trl_names`), else the closest valid spelling or the valid keys."""
    where = f" in {source}" if source else ""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = (trl_hint(key, cls) if cls is not None else None) or (
        f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(sorted(valid))}"
    )
    return ConfigError(f"unknown key '{key}'{where} ({hint})")


def _build(cls: type[C], data: dict[str, Any], prefix: str, source: str, check: bool = True) -> C:
    if not isinstance(data, dict):
        raise ConfigError(f"{source or 'config'}: expected a mapping at '{prefix.rstrip('.') or '<root>'}'")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key).replace("-", "_")
        renamed = renamed_key_error(cls, key, prefix, source)
        if key not in fields or (renamed and _is_config(hints[key]) and not isinstance(value, (dict, Config))):
            # (the second case: an old plain value where a section now stands, `vllm: colocate` for `vllm.mode`)
            raise renamed or unknown_key_error(prefix + key, [prefix + k for k in fields], source, cls)
        default = _default_of(fields[key])
        if isinstance(default, Config) and isinstance(value, dict):
            # a partial section keeps the field's own defaults (RL's optim: lr 1e-6, weight_decay 0, beta2 0.999),
            # as the command line and --help do, not its class's (pretrain's lr 1e-3, weight_decay 0.1, beta2 0.95)
            value = _over(default.to_dict(redact=False), value)
        kwargs[key] = coerce(value, hints[key], prefix + key, source, check)
    for name, f in fields.items():
        if name not in kwargs and _default_of(f) is MISSING:
            raise ConfigError(f"missing required key '{prefix}{name}'" + (f" in {source}" if source else ""))
    obj = cls(**kwargs)
    if check:
        obj.validate(prefix, source)
    return obj


def _over(base: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``given`` laid over ``base``, mapping by mapping (keys spelled with ``-`` or ``_``)."""
    out = dict(base)
    for k, v in given.items():
        k = str(k).replace("-", "_")
        out[k] = _over(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def set_dotted(data: dict[str, Any], key: str, value: Any, cls: type[Config]) -> None:
    """Set ``a.b.c = value`` in a nested dict, checking every level of the key against ``cls``."""
    parts = key.replace("-", "_").split(".")
    node, tp = data, cls
    for i, part in enumerate(parts):
        dotted = ".".join(parts[: i + 1])
        fields = {f.name: f for f in dataclasses.fields(tp)}
        if part not in fields:
            prefix = ".".join(parts[:i])
            renamed = renamed_key_error(tp, ".".join(parts[i:]), prefix + "." if prefix else "")
            raise renamed or unknown_key_error(dotted, [f"{prefix}.{k}" if prefix else k for k in fields], cls=tp)
        if i == len(parts) - 1:
            node[part] = value
            return
        sub = typing.get_type_hints(tp)[part]
        if get_origin(sub) is dict and i == len(parts) - 2:  # one entry of a mapping field: vars.n=3
            node.setdefault(part, {})
            node[part] = {**node[part], parts[-1]: value}
            return
        if not _is_config(sub):
            raise ConfigError(f"key '{dotted}' is a {type_name(sub)}, not a section: cannot set '{key}'")
        node = node.setdefault(part, {})
        tp = sub


# -- declared field rules --------------------------------------------------------------------------------------
def _leaves(key: str, value: Any) -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of a field value: itself, or every element of a list or mapping."""
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _leaves(f"{key}[{i}]", v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(f"{key}.{k}", v)
    else:
        yield key, value


def check_path_kind(key: str, value: str, kind: PathKind, where: str = "") -> None:
    """ConfigError if ``value`` holds a NUL byte or exists as the wrong kind of path (``file`` vs ``dir``)."""
    if "\x00" in value:
        raise ConfigError(f"key '{key}'{where}: the path contains a NUL byte")
    try:  # (an unreadable parent is left to the stage's own check)
        is_dir, is_other = Path(value).is_dir(), Path(value).exists() and not Path(value).is_dir()
    except (OSError, ValueError):
        return
    if (kind == "file" and is_dir) or (kind == "dir" and is_other):
        raise ConfigError(
            f"key '{key}'{where}: {value} is a {'directory' if is_dir else 'file'}, expected a {kind.replace('dir', 'directory')}"
        )


def check_fields(cfg: Config, prefix: str = "", source: str = "") -> None:
    """The rules declared with :func:`param`, on every field of ``cfg`` and its sections: finite floats,
    ``ge``/``gt``/``le``/``lt`` bounds, path kinds; a ConfigError names the dotted key (and ``source``)."""
    where = f" in {source}" if source else ""
    if type(cfg) not in _INT_FIELDS:
        _INT_FIELDS[type(cfg)] = frozenset(n for n, tp in typing.get_type_hints(type(cfg)).items() if _holds_int(tp))
    ints = _INT_FIELDS[type(cfg)]
    for f in dataclasses.fields(cfg):
        bounds, kind = f.metadata.get("bounds"), f.metadata.get("path")
        capped = f.name in ints and (bounds is None or (bounds.le is None and bounds.lt is None))
        for key, x in _leaves(prefix + f.name, getattr(cfg, f.name)):
            if isinstance(x, Config):
                check_fields(x, key + ".", source)
            elif isinstance(x, float) and not math.isfinite(x):
                raise ConfigError(f"key '{key}'{where}: must be finite (not NaN or infinite), got {x!r}")
            elif bounds is not None and isinstance(x, (int, float)) and not isinstance(x, bool) and not bounds.holds(x):
                raise ConfigError(f"key '{key}'{where}: must be {bounds.text()}, got {x!r}")
            elif capped and isinstance(x, int) and not isinstance(x, bool) and not -MAX_INT - 1 <= x <= MAX_INT:
                limit = f"<= {MAX_INT}" if x > 0 else f">= {-MAX_INT - 1}"
                raise ConfigError(f"key '{key}'{where}: must be {limit} (midtrain counts in 32 bits), got {x}")
            elif kind is not None and isinstance(x, str) and x:
                check_path_kind(key, x, kind, where)


_INT_FIELDS: dict[type, frozenset[str]] = {}  # per config class: its int fields (not ``Any`` mappings: vars)


def _holds_int(tp: Any) -> bool:
    """Whether annotation ``tp`` holds integers: ``int``, ``int | None``, ``list[int]``, ``dict[str, int]``."""
    args = get_args(tp)
    if get_origin(tp) in (typing.Union, types.UnionType):
        return any(_holds_int(a) for a in args)
    return tp is int or (get_origin(tp) in (list, tuple, dict) and bool(args) and _holds_int(args[-1]))


def check_http_url(url: str, key: str) -> None:
    """ConfigError naming ``key`` unless ``url`` is an ``http://`` or ``https://`` URL with a host (no spaces)."""
    from urllib.parse import urlsplit

    try:  # .port raises ValueError on a port that is not a number
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 0) >= 0 and not re.search(r"\s", url)
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"key '{key}': expected an http:// or https:// URL with a host, got {redact_url(url)!r}")


# -- credentials ------------------------------------------------------------------------------------------------
REDACTED = "***"
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@?#]*):[^\s/?#]+@")
_QUERY_SECRET = re.compile(r"(?i)([?&](?:api[_-]?key|key|token|access[_-]?token|secret|password|passwd|sig|signature)=)[^&#\s]+")
_SECRET_VALUE = re.compile(
    r"""(?i)(["']?\b(?:proxy-authorization|authorization|x-api-key|api[_-]?key|access[_-]?token|password)\b["']?\s*[:=]\s*["']?)"""
    r"""(?:(?:bearer|basic|token)\s+)?[^\s"',;}&]+"""
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{4,}")
MIN_SECRET_CHARS = 6  # shorter "secrets" are not replaced verbatim (they would mask ordinary words)


def redact_url(text: str) -> str:
    """``text`` with URL passwords (``scheme://user:***@host``) and secret query values (``?api_key=***``) masked."""
    return _QUERY_SECRET.sub(r"\1" + REDACTED, _URL_PASSWORD.sub(r"\1:" + REDACTED + "@", text))


def redact_secrets(obj: Any) -> Any:
    """A copy of plain data (dicts, lists, strings) with :func:`redact_url` applied to every string with a URL."""
    if isinstance(obj, str):
        return redact_url(obj) if "://" in obj else obj
    if isinstance(obj, list):
        return [redact_secrets(v) for v in obj]
    if isinstance(obj, dict):
        return {k: redact_secrets(v) for k, v in obj.items()}
    return obj


def redact_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Error text safe to store: the given secret strings, ``Authorization``/API-key values, bearer tokens and
    URL passwords masked."""
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_CHARS:
            text = text.replace(secret, REDACTED)
    text = _SECRET_VALUE.sub(r"\1" + REDACTED, text)
    text = _BEARER.sub(r"\1 " + REDACTED, text)
    return redact_url(text)


def parse_override_value(raw: str, tp: Any) -> Any:
    """A command-line string → a Python value for annotation ``tp`` (YAML scalars; comma lists for lists)."""
    if tp is str:
        return raw
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType) and str in get_args(tp) and raw not in ("null", "~"):
        return raw
    if origin in (list, tuple) and not raw.strip().startswith("["):
        (inner,) = get_args(tp)[:1] or (Any,)
        items = [s for s in raw.split(",") if s != ""]
        return [parse_override_value(s.strip(), inner) for s in items]
    if origin is Literal:
        return raw if raw in get_args(tp) else load_yaml(raw)
    try:
        return load_yaml(raw)
    except (yaml.YAMLError, RecursionError):
        return raw


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = load_yaml(p.read_text(encoding="utf-8"))
    except RecursionError:
        raise ConfigError(f"{p}: invalid YAML (nested too deeply)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}{line}: invalid YAML ({getattr(e, 'problem', e)})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys to values")
    return data


def load_config(
    cls: type[C],
    path: str | Path | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
) -> C:
    """Defaults ← YAML file ← overrides (``{"optim.lr": 1e-3}`` or ``["optim.lr=1e-3"]``), validated."""
    data: dict[str, Any] = read_yaml(path) if path else {}
    source = str(path) if path else ""
    base = cls.from_dict(data, source=source, check=False).to_dict(redact=False)  # key/type errors name the file
    docs = cls.field_docs()
    items: list[tuple[str, Any]] = []
    if isinstance(overrides, dict):
        items = list(overrides.items())
    elif overrides:
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override '{item}' must look like key=value")
            k, v = item.split("=", 1)
            k = k.strip().replace("-", "_")
            if k not in docs:
                raise renamed_key_error(cls, k) or unknown_key_error(k, list(docs), cls=cls)
            items.append((k, parse_override_value(v, docs[k][0])))
    for k, v in items:
        set_dotted(base, k, v, cls)
    return cls.from_dict(base)


def to_yaml(cfg: Config, *, redact: bool = True) -> str:
    """The config as YAML (``config.yaml``, ``--dry-run``); URL passwords masked unless ``redact=False``."""
    return yaml.safe_dump(cfg.to_dict(redact=redact), sort_keys=False, allow_unicode=True)

"""Typed stage configs: dataclasses whose field docs become ``--help``.

Every stage has one config class deriving from :class:`Config`. A field is declared with :func:`param`, which
stores its documentation next to its default::

    @dataclass
    class TrainConfig(Config):
        lr: float = param(3e-4, "Peak learning rate.")
        schedule: Literal["cosine", "linear"] = param("cosine", "Learning-rate decay after warm-up.")

Values come, in increasing precedence, from the defaults, a YAML file (``--config x.yaml``), and command-line
overrides (``--lr 1e-3`` or dotted ``train.lr=1e-3``). Loading is strict: an unknown key is an error naming the
key and its closest valid spelling; a value of the wrong type names the key and the expected type; ``Literal``
modes are checked at parse time, never later. ``Config.check()`` holds cross-field rules.

A key that moved stays known for one purpose: ``RENAMED = {"lr": "optim.lr"}`` on a config class makes the old key,
in a YAML file, a flag or a dotted override, a one-line error naming the new one ("key 'lr' is now 'optim.lr'")
instead of a bare "unknown key".
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import types
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, get_args, get_origin

import yaml

from midtrain.errors import ConfigError

C = TypeVar("C", bound="Config")


def param(default: Any = MISSING, doc: str = "", *, positional: bool = False, **kwargs: Any) -> Any:
    """A documented dataclass field. Mutable defaults (lists, dicts, configs) are copied per instance.

    ``positional=True`` makes the CLI take the field as a positional argument (a list field takes several).
    """
    metadata = {"doc": doc, "positional": positional}
    if default is MISSING:
        return field(metadata=metadata, **kwargs)
    if isinstance(default, (list, dict, set)) or dataclasses.is_dataclass(default):
        return field(default_factory=functools.partial(copy.deepcopy, default), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


@dataclass
class Config:
    """Base class of every stage config."""

    # Old key → new key (dotted, relative to this class) of keys that moved; see the module docstring.
    RENAMED: ClassVar[dict[str, str]] = {}

    def check(self) -> None:
        """Cross-field validation; raise ConfigError naming the key. Subclasses extend it."""

    # -- conversion -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], *, prefix: str = "", source: str = "", check: bool = True) -> C:
        return _build(cls, data, prefix, source, check)

    def replace(self: C, **changes: Any) -> C:
        """A validated copy with some top-level or dotted fields changed."""
        data = self.to_dict()
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
            default = _default_of(f)
            if _is_config(tp):
                for k, (sub_tp, sub_doc, sub_default) in tp.field_docs().items():
                    if isinstance(default, Config):  # the section's own default (RL's optim.lr 1e-6), not its class's
                        sub_default = _dotted_get(default, k, sub_default)
                    out[f"{f.name}.{k}"] = (sub_tp, sub_doc, sub_default)
            else:
                out[f.name] = (tp, doc, default)
        for old, new in cls.RENAMED.items():  # listed so that the command line takes the old flag to name the new key
            out[old] = (out[new][0], f"Renamed: use {new}.", MISSING)
        return out


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


def _plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
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
    """The error for ``key`` (relative to ``cls``) if it is one of ``cls.RENAMED``, else None."""
    new = cls.RENAMED.get(key)
    if new is None:
        return None
    where = f" in {source}" if source else ""
    return ConfigError(f"key '{prefix}{key}'{where} is now '{prefix}{new}'")


def unknown_key_error(key: str, valid: list[str], source: str = "") -> ConfigError:
    where = f" in {source}" if source else ""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (valid keys: {', '.join(sorted(valid))})"
    return ConfigError(f"unknown key '{key}'{where}{hint}")


def _build(cls: type[C], data: dict[str, Any], prefix: str, source: str, check: bool = True) -> C:
    if not isinstance(data, dict):
        raise ConfigError(f"{source or 'config'}: expected a mapping at '{prefix.rstrip('.') or '<root>'}'")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key).replace("-", "_")
        if key not in fields:
            raise renamed_key_error(cls, key, prefix, source) or unknown_key_error(prefix + key, [prefix + k for k in fields], source)
        kwargs[key] = coerce(value, hints[key], prefix + key, source, check)
    for name, f in fields.items():
        if name not in kwargs and _default_of(f) is MISSING:
            raise ConfigError(f"missing required key '{prefix}{name}'" + (f" in {source}" if source else ""))
    obj = cls(**kwargs)
    if check:
        obj.check()
    return obj


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
            raise renamed or unknown_key_error(dotted, [f"{prefix}.{k}" if prefix else k for k in fields])
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
        return raw if raw in get_args(tp) else yaml.safe_load(raw)
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
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
    """Defaults ← YAML file ← overrides (``{"train.lr": 1e-3}`` or ``["train.lr=1e-3"]``), validated."""
    data: dict[str, Any] = read_yaml(path) if path else {}
    source = str(path) if path else ""
    base = cls.from_dict(data, source=source, check=False).to_dict()  # key/type errors name the file
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
                raise unknown_key_error(k, list(docs))
            items.append((k, parse_override_value(v, docs[k][0])))
    for k, v in items:
        set_dotted(base, k, v, cls)
    return cls.from_dict(base)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)

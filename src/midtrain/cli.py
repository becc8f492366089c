"""The ``midtrain`` command: one verb per stage, each mapped to that stage's ``run(cfg)``.

    midtrain VERB [SUBVERB] [--config x.yaml] [--field value ...] [section.key=value ...] [--dry-run] [--json]

Every config field is a flag (``--vocab-size 512``; nested fields as ``--optim.lr 1e-3``) and can also be given as
a dotted override (``optim.lr=1e-3``). Precedence: defaults < ``--config`` file < flags and overrides.
``--dry-run`` prints the resolved config as YAML and exits. ``--json`` prints the stage's result as JSON on
stdout. A negative number may follow a flag (``--optim.lr -1e-3``, ``--seed -1``). An unknown flag or key that is
TRL's name of one of the verb's keys (``--learning_rate``) is an error naming midtrain's key (:mod:`midtrain.trl_names`).

Errors in the input are one line on stderr and exit code 2 (:func:`main` is the one boundary): the project's own
errors, argparse's usage errors, OS errors (``error: PATH: Permission denied``, a full disk, a read-only output
directory) and the errors of damaged or hostile files raised by the libraries that read them (a truncated
safetensors file, a pickle that torch's ``weights_only`` refuses, malformed JSON). Any other exception is a bug
and keeps its traceback; ``MIDTRAIN_DEBUG=1`` shows the traceback of input errors too. Ctrl-C exits with 130.

Verbs come from :mod:`midtrain.stages` (import paths), so ``midtrain --help`` does not import torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import re
import sys
import types
import typing
from typing import Any, Literal, get_args, get_origin

from midtrain.config import (
    Config,
    load_config,
    parse_override_value,
    to_yaml,
    type_name,
)
from midtrain.errors import ConfigError, MidtrainError
from midtrain.stages import STAGES, Stage, match
from midtrain.trl_names import trl_hint

OVERRIDE = re.compile(r"^[A-Za-z_][\w.\-]*=")
NEGATIVE = re.compile(r"^-(\d|\.\d|inf|nan)", re.IGNORECASE)  # a value, not a flag: -1, -1e-3, -.5, -inf


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (a :class:`ConfigError`, exit 2) instead of the usage block.

    Abbreviations are off: with argparse's default, ``--max-step`` silently runs as ``--max-steps``, so a typo
    becomes a different run instead of an error.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        raise ConfigError(f"{self.prog}: {message} (see --help)")


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _is_list(tp: Any) -> bool:
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return len(args) == 1 and _is_list(args[0])
    return get_origin(tp) in (list, tuple)


def _base(tp: Any) -> Any:
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def build_parser(verb: Stage, cls: type[Config]) -> argparse.ArgumentParser:
    fn_doc = (sys.modules[verb.module].__doc__ or "").strip()
    parser = ArgumentParser(
        prog=f"midtrain {verb.verb}",
        description=verb.help + ("\n\n" + fn_doc if fn_doc else ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Any key can also be set as a dotted override: key=value (e.g. {help_example(cls)}).",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML file with config values (flags override it).")
    if getattr(cls, "CONFIG_POSITIONAL", False):  # `midtrain experiment run CONFIG`
        parser.add_argument("_pos_config", metavar="CONFIG", nargs="?", default=None, help="Same as --config FILE.")
    parser.add_argument("--dry-run", action="store_true", help="Print the resolved config as YAML and exit.")
    parser.add_argument("--json", action="store_true", help="Print the result as JSON on stdout.")
    hints = typing.get_type_hints(cls)
    positional = [f for f in dataclasses.fields(cls) if f.metadata.get("positional")]
    for f in positional:
        many = _is_list(hints[f.name])
        parser.add_argument(
            f"_pos_{f.name}",
            metavar=f.name.upper(),
            nargs="*" if many else "?",
            default=None,
            help=f.metadata.get("doc", ""),
        )
    for key, (tp, doc, default) in cls.field_docs().items():
        base = _base(tp)
        shown = "" if default is dataclasses.MISSING else f" (default: {default!r})"
        kind = f" [{type_name(tp)}]"
        kw: dict[str, Any] = dict(dest=key, default=argparse.SUPPRESS, help=(doc + kind + shown).replace("%", "%%"))
        if key in cls.RENAMED:  # accepted only to name the new key in the error; not shown in --help
            kw["help"] = argparse.SUPPRESS
        if base is bool:
            parser.add_argument(_flag(key), action=argparse.BooleanOptionalAction, **kw)
        elif _is_list(tp):
            parser.add_argument(_flag(key), nargs="+", metavar="V", **kw)
        else:
            metavar = "{" + ",".join(map(str, get_args(base))) + "}" if get_origin(base) is Literal else "V"
            parser.add_argument(_flag(key), metavar=metavar, **kw)
    return parser


def help_example(cls: type[Config]) -> str:
    """A ``key=value`` override of ``cls`` for the foot of ``--help``, the key at its default: a number in a
    section if there is one (it shows the dotted form), else a number, else a word, else a switch."""
    positional = {f.name for f in dataclasses.fields(cls) if f.metadata.get("positional")}
    docs = {k: d for k, (_, _, d) in cls.field_docs().items() if k not in positional and k not in cls.RENAMED}
    numbers = [k for k, d in docs.items() if isinstance(d, (int, float)) and not isinstance(d, bool)]
    words = [k for k, d in docs.items() if isinstance(d, str) and d]
    switches = [k for k, d in docs.items() if isinstance(d, bool)]
    others = sorted((k for k, d in docs.items() if d is not dataclasses.MISSING), key=lambda k: not docs[k])  # set ones first
    key = next(iter([k for k in numbers if "." in k] + numbers + words + switches + others))
    value = docs[key]
    return f"{key}={value if isinstance(value, str) else json.dumps(value)}"


def foreign_flag_error(unknown: list[str], cls: type[Config]) -> ConfigError | None:
    """The error for an unknown flag that is TRL's name of one of ``cls``'s keys (``--learning_rate``), else None."""
    for arg in unknown:
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0].replace("-", "_")
            hint = trl_hint(name, cls)
            if hint:
                return ConfigError(f"unknown flag '{arg.split('=', 1)[0]}' ({hint})")
    return None


def join_negative_values(argv: list[str], flags: set[str]) -> list[str]:
    """``--flag -1e-3`` → ``--flag=-1e-3`` for flags that take one value, so argparse reads the number as the value
    (it takes ``-1e-3`` for an option and ``-1`` only because no option looks like a number)."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in flags and NEGATIVE.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def value_flags(cls: type[Config]) -> set[str]:
    """The flags of ``cls`` that take exactly one value (not booleans, not lists), and ``--config``."""
    flags = {"--config"}
    for key, (tp, _, _) in cls.field_docs().items():
        if _base(tp) is not bool and not _is_list(tp):
            flags.add(_flag(key))
    return flags


def parse(verb: Stage, cls: type[Config], argv: list[str]) -> tuple[Config, argparse.Namespace]:
    dotted = [a for a in argv if OVERRIDE.match(a)]
    rest = join_negative_values([a for a in argv if not OVERRIDE.match(a)], value_flags(cls))
    parser = build_parser(verb, cls)
    ns, unknown = parser.parse_known_args(rest)
    if unknown:
        raise foreign_flag_error(unknown, cls) or parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if getattr(ns, "_pos_config", None):
        if ns.config:
            raise ConfigError("give the config file once: CONFIG or --config FILE")
        ns.config = ns._pos_config
    docs = cls.field_docs()
    overrides: dict[str, Any] = {}
    for key, (tp, _, _) in docs.items():
        if key in vars(ns):
            raw = getattr(ns, key)
            if isinstance(raw, list):
                inner = get_args(_base(tp))[0] if get_args(_base(tp)) else str
                overrides[key] = [v for r in raw for v in parse_override_value(r, types.GenericAlias(list, (inner,)))]
            elif isinstance(raw, bool):
                overrides[key] = raw
            else:
                overrides[key] = parse_override_value(raw, tp)
    for f in dataclasses.fields(cls):
        if f.metadata.get("positional"):
            val = getattr(ns, f"_pos_{f.name}")
            if val not in (None, []):
                overrides[f.name] = val
    for item in dotted:
        k, v = item.split("=", 1)
        k = k.replace("-", "_")
        head = k.rsplit(".", 1)[0]
        if k not in docs and head in docs and get_origin(docs[head][0]) is dict:  # one entry: vars.n=3
            overrides[k] = parse_override_value(v, (get_args(docs[head][0]) or (str, Any))[1])
            continue
        if k not in docs:
            from midtrain.config import renamed_key_error, unknown_key_error

            raise renamed_key_error(cls, k) or unknown_key_error(k, list(docs), cls=cls)
        overrides[k] = parse_override_value(v, docs[k][0])
    if ns.config and getattr(cls, "CONFIG_POSITIONAL", False) and "config_path" not in overrides:
        overrides["config_path"] = str(ns.config)  # relative paths inside an experiment resolve from its file
    return load_config(cls, ns.config, overrides), ns


def _print_verbs() -> None:
    print("usage: midtrain VERB [options]  (midtrain VERB --help for the verb's config)\n")
    print("Install reasoning in language models during mid-training.\n\nverbs:")
    width = max(len(s.verb) for s in STAGES)
    for s in STAGES:
        print(f"  {s.verb:<{width}}  {s.help}")


def _to_jsonable(result: Any) -> Any:
    if result is None:
        return None
    if hasattr(result, "to_dict"):
        return result.to_dict()
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return dataclasses.asdict(result)
    return result


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        _print_verbs()
        return 0
    if argv[0] == "--version":
        from importlib.metadata import version

        print(version("midtrain"))
        return 0
    verb, rest = match(argv)
    if verb is None:
        groups = sorted({s.verb.split()[0] for s in STAGES})
        import difflib

        close = difflib.get_close_matches(argv[0], groups, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        sub = [s.verb for s in STAGES if s.verb.split()[0] == argv[0]]
        if sub:
            print(f"error: '{argv[0]}' needs a sub-verb: {', '.join(sub)}", file=sys.stderr)
        else:
            print(f"error: unknown verb '{argv[0]}'{hint}; run 'midtrain --help'", file=sys.stderr)
        return 2
    try:
        fn, cls = verb.resolve()
        cfg, ns = parse(verb, cls, rest)
        if ns.dry_run:
            sys.stdout.write(to_yaml(cfg))
            return 0
        result = fn(cfg)
        _leave_process_group()
        if os.environ.get("RANK", "0") != "0":  # under a distributed launcher only rank 0 reports
            return 0
        if ns.json:
            print(json.dumps(_to_jsonable(result), indent=2, default=str))
        elif hasattr(result, "summary"):
            print(result.summary())
        return 0
    except MidtrainError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        line = input_error(e)
        if line is None or os.environ.get("MIDTRAIN_DEBUG"):
            raise  # a bug: the traceback is what a report needs
        print(f"error: {line}", file=sys.stderr)
        return 2


def input_error(e: BaseException) -> str | None:
    """The one-line message of an error caused by the input or the machine (not by a bug), else None.

    OS errors (permission denied, read-only or full file system, missing paths) name their path; the errors of
    damaged or hostile files are recognised by type, without importing the libraries that raise them.
    """
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if isinstance(e, OSError):
        what = e.strerror or first
        return f"{e.filename}: {what}" if e.filename else what
    if isinstance(e, pickle.UnpicklingError):
        return f"refused to unpickle a file: {first}"
    if isinstance(e, json.JSONDecodeError):
        return f"malformed JSON: {e.msg} (line {e.lineno} column {e.colno})"
    safetensors = sys.modules.get("safetensors")
    if safetensors is not None and isinstance(e, getattr(safetensors, "SafetensorError", ())):
        return f"not a readable safetensors file: {first}"
    return None


def _leave_process_group() -> None:
    """After a successful distributed stage: wait for every rank, then close the process group.

    A rank that exits while another still writes the checkpoint tears gloo down under it (seen as SIGABRT,
    "terminate called without an active exception", in 2-process CPU runs).
    """
    torch = sys.modules.get("torch")
    if torch is None or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


__all__ = ["main", "build_parser", "parse", "input_error", "join_negative_values"]

if __name__ == "__main__":
    sys.exit(main())

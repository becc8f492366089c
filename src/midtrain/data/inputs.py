"""Input specs: what a corpus argument names, resolved to concrete sources in a deterministic order.

An *input spec* (:func:`expand_input`) is a file, a glob (``corpus/*.parquet``, ``**`` allowed), a directory of
shards (``.jsonl``/``.jsonl.gz``/``.parquet``/``.txt`` files found recursively; a hub-layout dir whose README.md
front matter has ``configs:`` uses the default config's ``train`` ``data_files``, as the hub does), a
``save_to_disk`` directory, or a hub dataset id ``org/name`` (streamed through ``datasets.load_dataset``; refused
with ``HF_HUB_OFFLINE=1``).

Hub ``data_files`` are repository-relative, so a README entry that is absolute, climbs with ``..`` or matches a
file that resolves (symlinks followed) outside the directory is refused, naming the README and the entry: a
dataset directory never makes training read files it does not hold.

:func:`input_files` names the local files whose content identifies a spec in a run key (a glob: the files it
matches, so the key follows their content, not the pattern).
"""

from __future__ import annotations

import glob as globlib
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

from midtrain.errors import DataError

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")
TEXT_SUFFIXES = (".txt", ".md", ".tex", ".py")
SHARD_SUFFIXES = (*JSONL_SUFFIXES, ".parquet", ".txt")  # what a directory of shards is made of
GLOB_CHARS = frozenset("*?[")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# Split names in hub-layout file paths (``data/train-00000-of-00004.parquet``): a shard dir without README
# configs that has train files next to test/validation files is read for its train files only, as the hub does.
TRAIN_SPLIT = re.compile(r"(^|[/_.-])train([/_.-]|$)")
OTHER_SPLIT = re.compile(r"(^|[/_.-])(test|validation|valid|dev|eval)([/_.-]|$)")
UNSUPPORTED = "unsupported file type (use .jsonl, .jsonl.gz, .parquet, .txt or a datasets dir)"


def is_saved_dataset(path: Path) -> bool:
    """A directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def hub_offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def is_hub_id(spec: str) -> bool:
    """``org/name`` that is no local path: not an existing path, no data file suffix, no existing first part."""
    if not HUB_ID.fullmatch(spec) or Path(spec).exists() or Path(spec.split("/")[0]).exists():
        return False
    return not spec.lower().endswith((*SHARD_SUFFIXES, *TEXT_SUFFIXES, ".json", ".csv", ".gz"))


def expand_input(spec: str) -> list[str]:
    """The concrete sources of one input spec, in a deterministic sorted order (see the module docstring).

    A file → ``[file]``; a glob → its matching files (none: DataError naming the pattern); a ``save_to_disk``
    dir → ``[dir]``; any other directory → its shard files; a hub id → ``[spec]`` (DataError when offline).
    """
    spec = str(spec)
    p = Path(spec)
    if p.is_file():
        return [spec]
    if p.is_dir():
        return [spec] if is_saved_dataset(p) else shard_dir_files(p)
    if GLOB_CHARS & set(spec):
        found = sorted(f for f in globlib.glob(spec, recursive=True) if Path(f).is_file() or is_saved_dataset(Path(f)))
        if not found:
            raise DataError(f"no files match {spec}")
        return found
    if is_hub_id(spec):
        if hub_offline():
            raise DataError(
                f"{spec}: no such local path, and reading the hub dataset '{spec}' needs the network but HF_HUB_OFFLINE is "
                f"set; download it first (huggingface-cli download --repo-type dataset {spec} --local-dir DIR) and pass "
                "DIR, a glob of its files or the files themselves"
            )
        return [spec]
    raise DataError(f"file not found: {spec}")


def shard_dir_files(d: Path) -> list[str]:
    """The data files of a directory of shards: README ``configs`` (default config, split train), else all shards."""
    if (d / "midtrain.json").is_file():  # its log.jsonl and shards are no corpus; augment output: read_records
        raise DataError(f"{d}: a midtrain run directory, not a corpus; pass its data files (e.g. '{d}/shards/*.jsonl')")
    patterns = readme_data_files(d)
    if patterns is not None:
        files: list[str] = []
        for pattern in patterns:
            files += readme_matches(d, pattern)
        return sorted(dict.fromkeys(files))
    rel = sorted(
        q.relative_to(d).as_posix()
        for q in d.rglob("*")
        if q.is_file() and q.name.lower().endswith(SHARD_SUFFIXES) and not any(s.startswith(".") for s in q.relative_to(d).parts)
    )
    if any(TRAIN_SPLIT.search(r) for r in rel) and any(OTHER_SPLIT.search(r) for r in rel):
        rel = [r for r in rel if TRAIN_SPLIT.search(r)]
    if not rel:
        raise DataError(
            f"{d}: no data files ({', '.join(SHARD_SUFFIXES)}) in this directory, and not a datasets directory saved with save_to_disk"
        )
    return [str(d / r) for r in rel]


def readme_matches(d: Path, pattern: str) -> list[str]:
    """The files of ``d`` that README ``data_files`` entry ``pattern`` matches; an entry that is absolute, climbs
    with ``..``, matches nothing, or matches a file resolving outside ``d`` (a symlink) is a DataError naming it."""
    readme = d / "README.md"
    # The hub resolves data_files inside the dataset repository; checking the pattern's own form first gives the
    # clear message even when the file it names does not exist (or exists only outside).
    if os.path.isabs(pattern) or PurePosixPath(pattern).is_absolute() or ".." in PurePosixPath(pattern.replace("\\", "/")).parts:
        raise DataError(f"{readme}: data_files entry '{pattern}' points outside {d} (entries are relative to the dataset directory)")
    root = d.resolve()
    matched = []
    for f in globlib.glob(pattern, root_dir=d, recursive=True):
        q = d / f
        if not q.is_file():
            continue
        if not q.resolve().is_relative_to(root):  # a symlink to a file elsewhere
            raise DataError(f"{readme}: data_files entry '{pattern}' matches {q}, which resolves outside {d}")
        matched.append(str(q))
    if not matched:
        raise DataError(f"{readme}: data_files pattern '{pattern}' matches no file in {d}")
    return matched


def readme_data_files(d: Path) -> list[str] | None:
    """The ``train`` ``data_files`` patterns of the default config in ``d/README.md``'s YAML front matter, if any."""
    import yaml

    readme = d / "README.md"
    if not readme.is_file():
        return None
    m = re.match(r"---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(\r?\n|$)", readme.read_text(encoding="utf-8", errors="replace"), re.S)
    if not m:
        return None
    try:
        meta = yaml.safe_load(m.group(1))
    except yaml.YAMLError as e:
        raise DataError(f"{readme}: the front matter is not valid YAML ({e})") from None
    configs = meta.get("configs") if isinstance(meta, dict) else None
    if not configs:
        return None
    if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        raise DataError(f"{readme}: 'configs' must be a list of mappings")
    default = next((c for c in configs if c.get("default")), None)
    default = default or next((c for c in configs if c.get("config_name") == "default"), configs[0])
    found = train_patterns(default.get("data_files"))
    if not found:
        raise DataError(f"{readme}: config '{default.get('config_name', 'default')}' has no data_files for split 'train'")
    return found


def train_patterns(data_files: Any) -> list[str]:
    """The split-``train`` patterns of a hub ``data_files`` value (a string, a list, ``[{split, path}]`` or a dict)."""

    def strings(x: Any) -> list[str]:
        return [x] if isinstance(x, str) else [s for s in x if isinstance(s, str)] if isinstance(x, list) else []

    if isinstance(data_files, dict):
        return strings(data_files.get("train"))
    if isinstance(data_files, list) and any(isinstance(e, dict) for e in data_files):
        return [s for e in data_files if isinstance(e, dict) and e.get("split", "train") == "train" for s in strings(e.get("path"))]
    return strings(data_files)


def input_files(name: str, spec: str | Path) -> dict[str, str]:
    """The local paths whose content identifies input ``spec`` in a run key, named after ``name``.

    An existing file or directory is itself (a directory's files are all hashed); a glob is each file it matches
    (``name[k]``), so the key follows the resolved files' contents, not the pattern; a hub id has no local
    content (the config names it).
    """
    s = str(spec)
    if Path(s).exists():
        return {name: s}
    sources = expand_input(s)
    if sources == [s]:  # a hub id
        return {}
    return {f"{name}[{k}]": f for k, f in enumerate(sources)}

"""Run directories: the self-describing hand-off between stages.

A stage writes everything into one output directory::

    out/
      config.yaml      the resolved config (exactly what ran)
      midtrain.json    stage, status, run key, parents, input hashes, versions, git commit, seed, metrics
      COMPLETE         completion marker, written last (atomically) when the stage finished

The **run key** is a SHA-256 over (stage, resolved config minus bookkeeping fields, content hashes of the
inputs). Opening a run (:func:`open_run`) decides what to do:

- empty or missing directory → a fresh run;
- finished with the same key → a **cache hit**: nothing runs, the stored metrics are returned, and nothing is
  written, not even the lock file (:func:`finished_meta`), so a finished run on read-only storage is a cache hit;
- finished (or started) with another key → refused with the keys that differ, unless ``overwrite``; but a run
  made by an older midtrain whose config lacks only options added since, each now at its default, or holds keys
  that have since moved (a config's ``RENAMED``), is this run (:func:`resolve_key`: it keeps its stored key, so
  upgrading neither re-runs nor refuses it);
- started with the same key but not finished → resumed (the stage picks up its own checkpoints);
- a non-empty directory that is not a run → refused unless ``overwrite``.

If a fresh run fails before it wrote anything worth keeping, its directory is removed so that no half-written
output is left behind; a stage that saves resumable checkpoints calls :meth:`Run.keep` to prevent that.
All metadata files are written atomically, and a fresh run directory appears by one ``rename`` with its
midtrain.json already inside, so a kill -9 never leaves an unrecognisable directory.

**One writer per run directory.** :func:`open_run` holds an exclusive advisory lock (``flock`` on the hidden
sibling ``.NAME.lock``, :class:`midtrain.locks.PathLock`) from before it looks at the directory until the stage
returns (a cache hit excepted: it writes nothing, so it takes no lock), so a second process given the same ``out``
fails at once (:class:`~midtrain.errors.RunDirError` naming the holder's pid) and touches nothing, instead of
"resuming" a live run. The kernel releases the lock when its holder dies (kill -9 included), so a dead holder's
run is simply resumed; the pid in the file only names the holder in the message. Cooperating writers
(``augment --shard-index`` on several machines) share the lock.

Every metadata file is written through :mod:`midtrain.fileio` (the package's one atomic writer).
"""

from __future__ import annotations

import copy
import errno
import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

from midtrain.config import Config, field_defaults, to_yaml
from midtrain.console import fmt_num, log
from midtrain.errors import MidtrainError, RunDirError
from midtrain.fileio import atomic_write_json, atomic_write_text, read_json
from midtrain.locks import PathLock, held_exclusively, pid_alive

META = "midtrain.json"
MARKER = "COMPLETE"
CONFIG = "config.yaml"
# Fields that say *where* or *how verbosely* to run, not *what*: they do not enter the run key.
BOOKKEEPING = {
    "out",
    "overwrite",
    "log_every_steps",
    "progress",
    "progress_every_s",
    "num_workers",
    "num_proc",
    "threads",
    "chunk_elements",
    "report_to",
    # how often a training run saves resumable state changes nothing it computes (a resume is exact)
    "save_every_steps",
    "save_every_minutes",
    "keep_checkpoints",
}
# Files above this size are fingerprinted by size + their first and last 4 MiB instead of a full hash, so that
# opening a run on a 70B checkpoint does not read 140 GB (an in-place edit of the middle would go unnoticed).
FULL_HASH_MAX_BYTES = 256 << 20


# -- metadata ---------------------------------------------------------------------------------------------------
def read_meta(path: str | Path) -> dict[str, Any]:
    """A ``midtrain.json``: a JSON object, else a :class:`RunDirError` naming the file."""
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise RunDirError(f"{path}: not a midtrain.json (a JSON object was expected)")
    return meta


# -- hashing ----------------------------------------------------------------------------------------------------
def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    size = os.path.getsize(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size > FULL_HASH_MAX_BYTES:
            h.update(f"size:{size}".encode())
            h.update(f.read(4 << 20))
            f.seek(size - (4 << 20))
            h.update(f.read(4 << 20))
            return "fp:" + h.hexdigest()
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def content_hash(path: str | Path) -> str:
    """Hash of a file, or of a directory: a finished run dir is identified by its run key, else all files."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    if (p / MARKER).is_file() and (p / META).is_file():
        return "run:" + str(read_meta(p / META).get("run_key"))
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(str(f.relative_to(p)).encode())
            h.update(sha256_file(f).encode())
        return h.hexdigest()
    raise RunDirError(f"input not found: {p}")


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def run_key(stage: str, cfg: Config, inputs: dict[str, str]) -> str:
    conf = {k: v for k, v in cfg.to_dict().items() if k not in BOOKKEEPING}
    return stable_hash({"stage": stage, "config": conf, "inputs": inputs})


def resolve_key(out: str | Path, stage: str, cfg: Config, inputs: dict[str, str]) -> str:
    """The key ``cfg`` has in run directory ``out``: :func:`run_key`, or the stored run's own key when that run is
    this one made by an older midtrain (same stage and inputs; the configs differ only by options added since,
    each at its default, which by convention keeps the old behaviour).

    Why not simply leave defaults out of the key: then changing a default would silently reuse runs made with the
    old one. Keeping the stored key, rather than rewriting it, keeps the input hashes of every run downstream.
    """
    key = run_key(stage, cfg, inputs)
    meta = Path(out) / META
    try:
        old = read_meta(meta) if meta.is_file() else {}
    except MidtrainError:
        return key  # classify_dir reports the damaged file
    if old.get("run_key") in (None, key) or old.get("stage") != stage or old.get("inputs") != inputs:
        return key
    stored = in_current_layout(type(cfg), old.get("config", {}))
    changed = _changed_keys(stored, cfg.to_dict(), field_defaults(type(cfg)))
    return key if changed else str(old["run_key"])


def in_current_layout(cls: type[Config], stored: dict[str, Any]) -> dict[str, Any]:
    """A stored config of ``cls`` with every key that moved since (``RENAMED`` of ``cls`` and of its sections) at
    its new place, so that a run made before a key moved into a section is still this run."""
    data = copy.deepcopy(stored)
    hints = typing.get_type_hints(cls)

    def is_section(name: str) -> bool:
        return isinstance(hints.get(name), type) and issubclass(hints[name], Config)

    # A plain value where a section now stands moves first (``vllm: colocate`` → ``vllm.mode``), so that the
    # section is a mapping again before other old keys move into it (``vllm_server_url`` → ``vllm.server_url``).
    moves = sorted(cls.RENAMED.items(), key=lambda kv: not (is_section(kv[0]) and not isinstance(data.get(kv[0]), dict)))
    for old, new in moves:
        if old not in data or (old in hints and not (is_section(old) and not isinstance(data[old], dict))):
            continue  # absent, or still a key of its own
        *parents, leaf = new.split(".")
        value, node = data.pop(old), data
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node.setdefault(leaf, value)
    for name in hints:
        if is_section(name) and isinstance(data.get(name), dict):
            data[name] = in_current_layout(hints[name], data[name])
    return data


# -- provenance -------------------------------------------------------------------------------------------------
def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("midtrain", "torch", "transformers", "trl", "datasets", "accelerate", "tokenizers"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


# -- runs -------------------------------------------------------------------------------------------------------
@dataclass
class Run:
    """An open run directory. ``cached`` runs did nothing; their ``metrics`` are the stored ones."""

    path: Path
    stage: str
    key: str
    meta: dict[str, Any]
    cached: bool = False
    resumed: bool = False
    created: bool = False
    _keep: bool = field(default=False, repr=False)
    lock: PathLock | None = field(default=None, repr=False)  # held by open_run for the run's lifetime
    _keep_if: Callable[[], bool] | None = field(default=None, repr=False)

    @property
    def metrics(self) -> dict[str, Any]:
        return self.meta.get("metrics", {})

    def keep(self) -> None:
        """Keep this directory even if the stage fails from now on (it holds resumable state)."""
        self._keep = True

    def keep_when(self, holds_state: Callable[[], bool]) -> None:
        """Keep this directory on failure if ``holds_state()``, asked then, says it holds resumable state
        (for stages whose state is written by other processes, e.g. shard workers)."""
        self._keep_if = holds_state

    def update(self, **fields: Any) -> None:
        self.meta.update(fields)
        atomic_write_json(self.path / META, self.meta)

    def finish(self, metrics: dict[str, Any] | None = None) -> None:
        self.meta["metrics"] = {**self.meta.get("metrics", {}), **(metrics or {})}
        self.meta["status"] = "complete"
        self.meta["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.meta["seconds"] = round(time.time() - self.meta.get("_t0", time.time()), 3)
        self.meta.pop("_t0", None)
        atomic_write_json(self.path / META, self.meta)
        atomic_write_text(self.path / MARKER, self.key + "\n")


def _diff_keys(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out


def _changed_keys(stored: dict[str, Any], now: dict[str, Any], defaults: dict[str, Any]) -> list[str]:
    """Dotted config keys that differ between a stored run and ``now``, less bookkeeping fields and options the
    stored config lacks that sit at their ``defaults`` (added since the run was made)."""
    return [k for k in _diff_keys(stored, now) if k.split(".")[0] not in BOOKKEEPING and not _added_at_default(k, stored, now, defaults)]


def _added_at_default(dotted: str, stored: dict[str, Any], now: dict[str, Any], defaults: dict[str, Any]) -> bool:
    """Key ``dotted`` is missing from ``stored`` and sits at its default in ``now``."""
    *parents, leaf = dotted.split(".")
    for part in parents:
        stored, now, defaults = stored.get(part, {}), now.get(part, {}), defaults.get(part, {})
        if not all(isinstance(d, dict) for d in (stored, now, defaults)):
            return False
    return leaf not in stored and leaf in now and leaf in defaults and now[leaf] == defaults[leaf]


def parents_of(inputs: Mapping[str, str | Path]) -> list[dict[str, Any]]:
    out = []
    for name, p in inputs.items():
        meta = Path(p) / META
        if meta.is_file():
            m = read_meta(meta)
            out.append({"input": name, "path": str(Path(p).resolve()), "stage": m.get("stage"), "run_key": m.get("run_key")})
    return out


@contextmanager
def open_run(
    out: str | Path,
    stage: str,
    cfg: Config,
    inputs: Mapping[str, str | Path] | None = None,
    *,
    overwrite: bool = False,
    seed: int | None = None,
    shared: bool = False,
) -> Iterator[Run]:
    """Open (create, resume or cache-hit) the run directory ``out``; see the module docstring.

    Use as ``with open_run(...) as run: if run.cached: return ...; ...; run.finish(metrics)``. The directory's
    lock is held until the block ends; a second writer gets a :class:`RunDirError` naming the holder. A cache hit
    takes no lock and writes nothing (:func:`finished_meta`).
    ``shared``: cooperating writers (each writing its own part, under its own finer lock) may hold it together.
    """
    out = Path(out)
    inputs = inputs or {}
    hashes = {name: content_hash(p) for name, p in inputs.items()}
    key = resolve_key(out, stage, cfg, hashes)
    if (done := finished_meta(out, stage, key)) is not None and not held_exclusively(out):  # reads only, writes nothing
        log(f"[cache hit] {stage}: {out} already holds this run (same config and inputs); nothing to do")
        yield Run(out, stage, key, done, cached=True)
        return
    with PathLock(out, "run directory", shared=shared) as lock:
        key = resolve_key(out, stage, cfg, hashes)  # again under the lock: the directory may have changed meanwhile
        state, meta = _settle(out, stage, key, cfg, hashes, inputs, overwrite=overwrite, seed=seed, shared=shared)
        if state == "cached":
            log(f"[cache hit] {stage}: {out} already holds this run (same config and inputs); nothing to do")
            yield Run(out, stage, key, meta, cached=True, lock=lock)
            return
        run = Run(out, stage, key, meta, resumed=state == "resume", created=state == "fresh", lock=lock)
        try:
            yield run
        except BaseException:
            _after_failure(run)
            raise


def _settle(
    out: Path,
    stage: str,
    key: str,
    cfg: Config,
    hashes: dict[str, str],
    inputs: Mapping[str, str | Path],
    *,
    overwrite: bool,
    seed: int | None,
    shared: bool,
) -> tuple[RunState, dict[str, Any]]:
    """Classify ``out`` (under its lock) and make it ready: ``(state, midtrain.json)`` of the run to do.

    A fresh directory appears by one rename; a writer sharing the lock that loses that race to another one
    classifies again (and finds the run the other one created).
    """
    for _ in range(2 if shared else 1):
        state, old = classify_dir(
            out, stage, key, cfg.to_dict(), hashes, overwrite=overwrite, defaults=field_defaults(type(cfg)), cls=type(cfg)
        )
        if state == "cached":
            return state, old
        if state == "resume":
            log(f"[resume] {stage}: continuing the unfinished run in {out}")
            meta = {**old, "resumed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "_t0": time.time()}
            atomic_write_json(out / META, meta)
            return state, meta
        meta = {**fresh_meta(stage, key, cfg, hashes, inputs, seed), "_t0": time.time()}
        try:  # a fresh directory is removed again if the stage fails before keep()
            _create_run_dir(out, meta, to_yaml(cfg), exclusive=not shared)
        except OSError as e:
            if not shared or e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            continue  # another writer sharing the lock created it first
        return state, meta
    raise RunDirError(f"{out}: another process created this run directory while this one was creating it")


RunState = Literal["fresh", "cached", "resume"]


def finished_meta(out: Path, stage: str, key: str) -> dict[str, Any] | None:
    """The midtrain.json of ``out`` when it holds a finished ``stage`` run with key ``key``, else None; reads only.

    Why a cache hit needs no lock: a finished run is never written again. A writer that holds the lock finds the
    same cache hit, and one with another key and ``--overwrite`` renames the whole directory away in one step, so a
    reader sees the finished run or none. :func:`open_run` still defers to a writer at work
    (:func:`midtrain.locks.held_exclusively`, which only reads), so that the writer is named as before. Taking the
    lock would create ``.NAME.lock`` beside the run, which fails on a read-only mount where a finished run must
    still be a cache hit.
    """
    if not ((out / MARKER).is_file() and (out / META).is_file()):
        return None
    try:
        meta = read_meta(out / META)
    except MidtrainError:
        return None  # damaged: the locked path classifies it and names the file
    return meta if meta.get("run_key") == key and meta.get("stage") == stage else None


def classify_dir(
    out: Path,
    stage: str,
    key: str,
    conf: dict[str, Any],
    hashes: dict[str, str],
    *,
    overwrite: bool = False,
    defaults: dict[str, Any] | None = None,
    cls: type[Config] | None = None,
) -> tuple[RunState, dict[str, Any]]:
    """What opening ``out`` for run ``key`` means, with the stored metadata (empty for a fresh run).

    A directory that holds something else is refused with the reason (the config keys that differ, less options
    added since the run was made that sit at their ``defaults``), or removed when ``overwrite``.
    """
    if out.exists() and not out.is_dir():
        raise RunDirError(f"output path {out} exists and is not a directory")
    if not (out.is_dir() and any(out.iterdir())):
        return "fresh", {}
    if not (out / META).is_file():
        if not overwrite:
            raise RunDirError(f"{out} is not empty and is not a midtrain run directory (use --overwrite)")
        _clear_dir(out)
        return "fresh", {}
    try:
        old = read_meta(out / META)
    except MidtrainError as e:  # a damaged midtrain.json
        if not overwrite:
            raise RunDirError(f"{e}; use --overwrite to replace {out}") from None
        _clear_dir(out)
        return "fresh", {}
    done = (out / MARKER).is_file()
    if old.get("run_key") == key and old.get("stage") == stage:
        return ("cached" if done else "resume"), old
    if overwrite:
        _clear_dir(out)
        return "fresh", {}
    stored = in_current_layout(cls, old.get("config", {})) if cls is not None else old.get("config", {})
    changed = _changed_keys(stored, conf, defaults or {})  # moved keys (cls.RENAMED) are not changes
    if old.get("stage") != stage:
        changed = [f"stage ({old.get('stage')} → {stage})"]
    elif old.get("inputs") != hashes:
        before = old.get("inputs", {})
        changed += [f"input '{k}'" for k in sorted(set(hashes) | set(before)) if hashes.get(k) != before.get(k)]
    raise RunDirError(
        f"{out} holds a {'finished' if done else 'started'} '{old.get('stage')}' run with a different config or "
        f"inputs (changed: {', '.join(changed) or 'bookkeeping'}); use --overwrite to replace it"
    )


def fresh_meta(
    stage: str, key: str, cfg: Config, hashes: dict[str, str], inputs: Mapping[str, str | Path], seed: int | None
) -> dict[str, Any]:
    """The midtrain.json of a run that starts now."""
    return {
        "stage": stage,
        "status": "running",
        "run_key": key,
        "config": cfg.to_dict(),
        "inputs": hashes,
        "parents": parents_of(inputs),
        "seed": seed,
        "versions": versions(),
        "git_commit": git_commit(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "metrics": {},
    }


def _after_failure(run: Run) -> None:
    """The stage raised: remove a fresh directory that holds nothing worth keeping, else mark the run failed.

    A directory shared with other writers is removed only when none is left.
    """
    keep = run._keep or (run._keep_if is not None and run._keep_if())
    alone = run.lock is None or run.lock.sole_holder()
    if run.created and not keep and not (run.path / MARKER).exists() and alone:
        _remove_dir(run.path)
        return
    run.meta.pop("_t0", None)
    run.meta["status"] = "failed"
    if (run.path / META).exists():
        atomic_write_json(run.path / META, run.meta)


def _create_run_dir(out: Path, meta: dict[str, Any], config_yaml: str, *, exclusive: bool = True) -> None:
    """Make ``out`` appear with its midtrain.json and config.yaml already inside (one ``rename``).

    A process killed at any instant leaves either no run directory or a recognisable one, never a directory
    that later opens refuse as "not a midtrain run"; a killed creation leaves a hidden ``.NAME.creating-PID``
    sibling, removed by the next open (every one when this process holds the lock alone, else those of dead pids).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(_staging(out, "*").name):
        if exclusive or not pid_alive(stale.name.rsplit("-", 1)[-1]):
            shutil.rmtree(stale, ignore_errors=True)
    staging = _staging(out)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        atomic_write_json(staging / META, meta)
        atomic_write_text(staging / CONFIG, config_yaml)
        if out.is_dir():
            out.rmdir()  # empty (checked by the caller)
        os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _clear_dir(out: Path) -> None:
    """Remove ``out`` for ``--overwrite``: renamed away first, so a directory that cannot be removed (read-only,
    immutable) is an error naming it with nothing deleted, and a kill mid-way leaves no half-deleted run."""
    doomed = _staging(out)
    try:
        os.rename(out, doomed)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(out)) from None
    shutil.rmtree(doomed, ignore_errors=True)


def _remove_dir(path: Path) -> None:
    """Remove a run directory so that an interrupted removal never leaves a half-deleted run behind."""
    doomed = _staging(path)  # the name a later open cleans up if this process dies mid-way
    try:
        os.rename(path, doomed)  # atomic: from here on ``path`` is simply absent
    except OSError:
        doomed = path
    shutil.rmtree(doomed, ignore_errors=True)


def _staging(out: Path, pid: int | str | None = None) -> Path:
    """The hidden sibling where ``out`` is assembled (and taken apart) by process ``pid`` (default: this one)."""
    return out.parent / f".{out.name}.creating-{os.getpid() if pid is None else pid}"


def is_complete(path: str | Path) -> bool:
    return (Path(path) / MARKER).is_file()


@dataclass
class Result:
    """What a stage returns: where it wrote, whether it was a cache hit, and its metrics."""

    stage: str
    out: str
    cached: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, run: Run) -> Self:
        return cls(stage=run.stage, out=str(run.path), cached=run.cached, metrics=dict(run.metrics))

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "out": self.out, "cached": self.cached, "metrics": self.metrics}

    def summary(self) -> str:
        head = f"{self.stage}: {'cache hit, ' if self.cached else ''}{self.out}"
        scalars = [f"{k}={fmt_num(v, '.4g')}" for k, v in self.metrics.items() if isinstance(v, (int, float, str, bool))]
        return head + ("\n  " + "  ".join(scalars) if scalars else "")

"""File IO of the floor: atomic writes, ordinary permissions, and JSON reads that name the file.

:func:`atomic_file` (temporary sibling, fsync, ordinary permissions, ``os.replace``) is the package's one atomic
writer: :func:`atomic_write_bytes`/:func:`atomic_write_text`/:func:`atomic_write_json` here, records
(:func:`midtrain.data.jsonl.write_jsonl`), Parquet shards, checkpoints' side files and plots all use it. A writer
killed mid-write leaves its temporary file (``.NAME.PID.XXXX.tmp``); the next write of the same file removes the
temporaries of dead processes (:func:`remove_stale_temps`), so a crash never leaves a torn file under the final
name and temporaries do not pile up.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from midtrain.errors import DataError
from midtrain.locks import pid_alive


def _umask_mode() -> int:
    """The permission bits an ordinary ``open(..., "w")`` would give (mkstemp makes files 0600)."""
    mask = os.umask(0)  # the only way to read the umask is to set it; restored at once
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file object whose content replaces ``path`` atomically when the block ends without an error.

    The bytes go to a hidden temporary sibling (same directory, hence same filesystem, so ``os.replace`` is one
    atomic rename), are fsynced, get the permissions an ordinary ``open`` would give, and are renamed over
    ``path``: a reader, or a ``kill -9`` at any instant, sees the old file or the new one, never a torn one. On an
    exception the temporary file is removed and ``path`` is untouched. The temporary's name carries this
    process's pid, so that the next write of ``path`` removes what a killed writer left (:func:`remove_stale_temps`).
    An OS error without a file name (a full disk) is raised again naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # name the file we were asked to write, not its temporary
        raise OSError(e.errno, e.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Remove the temporary siblings of ``path`` (``.NAME.PID.XXXX.tmp``) whose writer process is dead."""
    path = Path(path)
    prefix = f".{path.name}."
    removed: list[Path] = []
    try:
        names = [n for n in os.listdir(path.parent) if n.startswith(prefix) and n.endswith(".tmp")]
    except OSError:
        return removed
    for name in names:
        pid = name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and not pid_alive(pid):
            (path.parent / name).unlink(missing_ok=True)
            removed.append(path.parent / name)
    return removed


def ordinary_permissions(directory: str | Path, pattern: str = "*.safetensors") -> None:
    """Give the files matching ``pattern`` in ``directory`` the permissions an ordinary ``open`` would.

    safetensors writes its files with mode 0600 whatever the umask (it creates them like a temporary file), so a
    checkpoint saved by ``save_pretrained`` is unreadable by the group that reads the rest of the run directory.
    """
    for f in Path(directory).glob(pattern):
        if f.is_file():
            os.chmod(f, _umask_mode())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    """A JSON file; malformed content is a :class:`DataError` naming the file and line."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None

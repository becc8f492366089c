"""Advisory locks on output paths: one writer per run directory or output file, dead holders taken over.

:class:`PathLock` holds ``flock`` on a hidden sibling of the guarded path (``.NAME.lock``, :func:`lock_file`), so
that it guards a run directory before the directory exists, while it is renamed into place and while it is
replaced. Only the kernel's lock decides who writes: it is released when its holder exits or dies (kill -9
included), so a dead holder's lock is simply taken; the pid (and host) written into the file only names the holder
in the error message, never decides anything. :func:`midtrain.runs.open_run` holds one for every run directory;
``synth generate`` for its output file; ``experiment run`` and ``demo`` for their output directories;
:class:`midtrain.shards.ShardLock` is one per shard.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from pathlib import Path
from typing import Any, Self

from midtrain.console import log
from midtrain.errors import RunDirError

# flock errors meaning "this filesystem has no flock": the run goes on unlocked, with a warning.
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def lock_file(path: str | Path) -> Path:
    """The sibling whose flock guards ``path``: ``.NAME.lock`` in the same directory."""
    p = Path(os.path.abspath(path))
    return p.parent / f".{p.name}.lock"


class PathLock:
    """An advisory ``flock`` guarding one output path (a run directory, an output file) while it is written.

    The lock is taken on a sibling file (:func:`lock_file`, or ``lockfile``), not found or created inside the
    guarded path, so it guards a directory before it exists, while it is renamed into place and while it is
    replaced (``--overwrite``). Only the kernel's lock decides: it is released when the holder exits or is killed,
    so a dead holder's lock is taken over; the holder's pid, written into the file, only names it in the error.
    Exclusive by default; ``shared`` holders (cooperating writers of one directory) exclude exclusive ones only.
    With ``remove`` the last holder deletes the file on release; a process that locked a file deleted or replaced
    meanwhile sees another inode at the path and tries again, so two processes never both hold the lock.
    """

    def __init__(
        self,
        path: str | Path,
        what: str = "run directory",
        *,
        shared: bool = False,
        lockfile: str | Path | None = None,
        remove: bool = True,
    ) -> None:
        self.path, self.what, self.shared, self.remove = Path(path), what, shared, remove
        self.lockfile = Path(lockfile) if lockfile is not None else lock_file(path)
        self._fd: int | None = None
        self._made: list[Path] = []

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> Self:
        """Take the lock or raise :class:`RunDirError` naming the holder; OS errors name the guarded path."""
        for _ in range(100):
            try:
                self._make_parents()
                fd = os.open(self.lockfile, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
            except FileNotFoundError:  # a releasing holder removed the (empty) parent it had made meanwhile
                continue
            except OSError as e:  # name the path the user gave, not our lock file
                if self.lockfile.parent.exists() and not self.lockfile.parent.is_dir():
                    raise RunDirError(f"{self.path}: {self.lockfile.parent} is not a directory") from None
                raise OSError(e.errno, e.strerror, str(self.path)) from None
            self._lock(fd)
            if self._current(fd):
                if not self.shared:  # alone: earlier holders' lines are stale
                    os.ftruncate(fd, 0)
                os.write(fd, _line())  # appended (O_APPEND): shared holders each add theirs
                self._fd = fd
                return self
            os.close(fd)
        raise RunDirError(f"{self.path}: cannot lock {self.lockfile} (it keeps being replaced)")

    def _make_parents(self) -> None:
        """Create the lock file's missing parent directories, remembered so that release removes them if empty."""
        missing, d = [], self.lockfile.parent
        while not d.exists() and d != d.parent:
            missing.append(d)
            d = d.parent
        self.lockfile.parent.mkdir(parents=True, exist_ok=True)
        self._made = missing or self._made  # deepest first

    def _lock(self, fd: int) -> None:
        """flock ``fd`` (closed and a RunDirError naming the holder when someone holds it); a filesystem without
        flock gets a warning and no lock."""
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.holder(fd)
            os.close(fd)
            raise RunDirError(self.busy_message(holder)) from None
        except OSError as e:
            if e.errno not in _NO_FLOCK:
                os.close(fd)
                raise
            log(f"warning: {self.lockfile}: the filesystem refuses flock ({e.strerror}); writing {self.path} unlocked")

    def _current(self, fd: int) -> bool:
        """Whether the locked file is still the one at ``lockfile`` (a releasing holder may have deleted it)."""
        try:
            st = os.stat(self.lockfile)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    @staticmethod
    def holder(fd: int) -> str:
        """The holder named in the lock file: "1234", "1234 on host" for another machine, or "unknown".

        The last line whose process is alive (or on another machine); stale lines of dead holders are skipped.
        """
        lines: list[str] = []
        for _ in range(20):  # the holder writes its line right after taking the lock
            lines = os.pread(fd, 4096, 0).decode("utf-8", "replace").splitlines()
            if lines:
                break
            time.sleep(0.01)
        here = socket.gethostname()
        for line in reversed(lines):
            pid, _, host = line.strip().partition(" ")
            if pid.isdigit() and host not in ("", here):
                return f"{pid} on {host}"
            if pid.isdigit() and pid_alive(pid):
                return pid
        return "unknown"

    def busy_message(self, holder: str) -> str:
        return f"{self.path}: another midtrain process (pid {holder}) is writing this {self.what}"

    def sole_holder(self) -> bool:
        """Whether this process holds the lock and no other does (a shared holder tries to make it exclusive)."""
        if self._fd is None:
            return False
        if self.shared and not _try_exclusive(self._fd):
            _try_lock(self._fd, fcntl.LOCK_SH)  # Linux drops the shared lock when the conversion fails
            return False
        self.shared = False
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            last = not self.shared or _try_exclusive(fd)
            if last and self.remove and self._current(fd):
                self.lockfile.unlink(missing_ok=True)  # while still locked: see the class docstring
                for d in self._made:  # a failed stage leaves no empty directories either
                    try:
                        d.rmdir()
                    except OSError:
                        break
            elif not last:  # others still hold it: take our line out of the file
                rest = [ln for ln in os.pread(fd, 1 << 16, 0).splitlines(keepends=True) if ln != _line()]
                os.ftruncate(fd, 0)
                os.write(fd, b"".join(rest))
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def held_exclusively(path: str | Path) -> bool:
    """Whether some process holds ``path``'s lock exclusively (a writer at work); creates and writes nothing.

    The probe opens an existing lock file read-only and asks for a shared lock without waiting. No lock file means
    no holder: a holder creates the file before it locks it and removes it before it unlocks.
    """
    try:
        fd = os.open(lock_file(path), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False  # a filesystem without flock: nobody can hold it
    finally:
        os.close(fd)  # also drops the probe's shared lock
    return False


def _line() -> bytes:
    """This process's line in a lock file."""
    return f"{os.getpid()} {socket.gethostname()}\n".encode()


def _try_lock(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _try_exclusive(fd: int) -> bool:
    return _try_lock(fd, fcntl.LOCK_EX)


def pid_alive(pid: int | str) -> bool:
    """Whether process ``pid`` exists on this machine (False for a non-number)."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


__all__ = ["PathLock", "held_exclusively", "lock_file", "pid_alive"]

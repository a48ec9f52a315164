"""Directories a process writes: one writer at a time, created only when needed.

A directory that a keras-tfm process writes (a run, an export, a prepared
corpus) holds a lock file while it does, naming the process (pid, host,
command). A second process refuses to write there and says who holds it;
a lock whose process is gone (same host, pid no longer running) is stale
and taken over. Validation happens before anything is created, and a
directory created for a run that then fails on bad input is removed again,
so a mistake leaves nothing behind.
"""

import contextlib
import errno
import json
import os
import shutil
import socket
import sys
import time

from keras_tfm.errors import UserError

LOCK_FILE = ".keras-tfm.lock"


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DirectoryLock:
    """An exclusive lock on a directory for the life of a `with` block.

    Args:
        path: the lock file's path.
        what: how messages name the locked thing, e.g. "run directory".
        flag: the flag a user changes to pick another location.
    """

    def __init__(self, path, what="run directory", flag="--output-dir"):
        self.path = path
        self.what = what
        self.flag = flag
        self.held = False

    def _holder(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def acquire(self):
        payload = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                             0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    # Being written this instant, or damaged: a fresh file
                    # belongs to a live writer; an old one to a dead one.
                    try:
                        age = time.time() - os.path.getmtime(self.path)
                    except OSError:
                        continue
                    if age < 10:
                        holder = {"pid": "?", "host": "?", "started": "now"}
                    else:
                        self._remove_stale()
                        continue
                same_host = holder.get("host") == socket.gethostname()
                pid = holder.get("pid")
                if same_host and isinstance(pid, int) and not _process_alive(
                    pid
                ):
                    self._remove_stale()
                    continue
                directory = os.path.dirname(self.path) or "."
                raise UserError(
                    f"the {self.what} '{directory}' is in use by another "
                    f"keras-tfm process (pid {pid} on {holder.get('host')}, "
                    f"since {holder.get('started')}): wait for it to finish "
                    f"or pass another {self.flag}; if that process is gone, "
                    f"delete '{self.path}'."
                ) from None
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(payload, f)
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return self
        raise UserError(
            f"could not lock '{self.path}': another process keeps "
            "replacing it; try again."
        )

    def _remove_stale(self):
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)

    def release(self):
        if not self.held:
            return
        holder = self._holder()
        if holder is None or holder.get("pid") == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)
        self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def check_output_directory(path, flag="--output-dir"):
    """Raises `UserError` if `path` cannot be (or become) a directory that
    this process may write. Creates nothing."""
    if not path:
        raise UserError(f"{flag} is empty: pass a directory.")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(
            f"{flag} '{path}' is a file, not a directory: pass a directory."
        )
    ancestor = os.path.abspath(path)
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise UserError(
            f"{flag} '{path}' lies under '{ancestor}', which is a file: "
            "pass a directory path."
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(
            f"{flag} '{path}': '{ancestor}' is not writable: pass a "
            "directory you can write."
        )


def make_directory(path, flag="--output-dir"):
    """Creates `path` (and parents); returns the topmost directory created
    (to remove it again if the run fails on bad input), or `None`."""
    check_output_directory(path, flag)
    top, current = None, os.path.abspath(path)
    while not os.path.exists(current):
        top = current
        current = os.path.dirname(current)
    try:
        os.makedirs(path, exist_ok=True)
        # Some file systems (/proc, read-only mounts) refuse only the write.
        probe = os.path.join(path, ".keras-tfm-probe")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        if top is not None:
            shutil.rmtree(top, ignore_errors=True)
        reason = os.strerror(e.errno) if e.errno else str(e)
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            reason += " (choose a directory you can write)"
        raise UserError(f"cannot write {flag} '{path}': {reason}.") from None
    return top


def remove_if_only_lock(top):
    """Removes a directory tree created by `make_directory` if it holds
    nothing but (possibly) the lock file: a run that failed before writing
    anything leaves no trace."""
    if top is None or not os.path.isdir(top):
        return
    for root, _, names in os.walk(top):
        if any(name != LOCK_FILE for name in names):
            return
    shutil.rmtree(top, ignore_errors=True)


def remove_run_files(run_dir, names):
    """Removes the named files and directories of a run, nothing else."""
    for name in names:
        path = os.path.join(run_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)

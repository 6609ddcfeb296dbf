"""A run folder's safety: one process at a time, no run overwritten by accident, no file left half-written.

:func:`open_run` is called before any work: it refuses a folder that holds a run unless the run is resumed or
explicitly overwritten, takes a lock file (``.lock``, holding the owner's pid) so that a second process into the
same folder fails at once, and removes temporary files that a killed process left behind. Every file a run
writes goes through :func:`write_atomic`: written to a temporary file in the same folder, flushed to disk, then
renamed over the old one, so a kill at any moment leaves either the old or the new file.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import RunError

RUN_FILES = ("checkpoint.pt", "log.jsonl", "recipe.json", "eval.json")
RUN_FOLDERS = ("report", "tensorboard")
LOCK = ".lock"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Replace ``path`` by ``data`` atomically and durably (temporary file, fsync, rename, fsync of the folder)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise RunError(_os_message(err, path)) from err
    _fsync_dir(path.parent)


def _os_message(err: OSError, path: Path) -> str:
    import errno

    if err.errno == errno.ENOSPC:
        return f"no space left on the device to write {path}; free some disk space, then continue with --resume"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {path} ({err.strerror}); choose a writable --out folder"
    return f"cannot write {path}: {err.strerror or err}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class RunLock:
    """The lock on a run folder, released by :meth:`release` (or as a context manager)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and _alive(holder) and holder != os.getpid():
                    raise RunError(
                        f"{folder} is in use by process {holder} (lock file {self.path}); wait for it to finish, "
                        "or train into another --out folder"
                    ) from None
                self.path.unlink(missing_ok=True)  # a stale lock: its process is gone
                continue
            except OSError as err:
                raise RunError(_os_message(err, self.path)) from err
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            return
        raise RunError(f"could not take the lock {self.path}; remove it if no process is training into {folder}")

    def _holder(self) -> int | None:
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self._holder() == os.getpid():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def describe(folder: Path) -> str:
    """What the folder holds, for messages: the checkpoint's step, or the files found."""
    log = folder / "log.jsonl"
    if log.exists():
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        try:
            return f"a run logged up to step {json.loads(lines[-1])['step']}" if lines else "an empty run log"
        except (ValueError, KeyError, TypeError):
            pass
    found = [name for name in RUN_FILES if (folder / name).exists()]
    return f"a run ({', '.join(found)})"


def holds_run(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).exists() for name in RUN_FILES)


def open_run(folder: Path, *, resume: bool, overwrite: bool) -> RunLock:
    """Check and lock ``folder`` for a run; see the module docstring. Returns the lock to release at the end."""
    if resume and overwrite:
        raise RunError("--resume continues the run in the folder and --overwrite discards it: pass one of them")
    if folder.exists() and not folder.is_dir():
        raise RunError(f"--out {folder} is a file, not a folder; choose a folder for the run")
    if holds_run(folder) and not (resume or overwrite):
        raise RunError(
            f"{folder} holds {describe(folder)}; pass --resume to continue it, --overwrite to discard it and start "
            "again, or choose another --out folder"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(_os_message(err, folder)) from err
    lock = RunLock(folder)
    for orphan in folder.glob(".*.tmp*"):  # temporary files of a process killed while writing
        orphan.unlink(missing_ok=True)
    if overwrite:
        for name in RUN_FILES:
            (folder / name).unlink(missing_ok=True)
        for name in RUN_FOLDERS:
            shutil.rmtree(folder / name, ignore_errors=True)
    return lock


def read_log(folder: Path) -> list[dict[str, Any]]:
    """``log.jsonl`` as records; a torn or garbled line (a kill mid-write, before writes were atomic) is dropped."""
    path = folder / "log.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records

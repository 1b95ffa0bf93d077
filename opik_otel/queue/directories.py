"""Process directories of a disk queue: creating one's own, claiming a dead process's,
deleting a drained one. Each is locked with ``flock`` by the process that holds it.

Everything is opened relative to a directory descriptor with ``O_NOFOLLOW``, so nothing
planted under the queue's directory is followed out of it.
"""

import os
import re
import secrets
import stat
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, List, Optional, Tuple

from .base import LOGGER
from .location import NOFOLLOW, PrivateDirectory, open_private_level, ownership_problem

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: open_queue uses memory there
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
_NEW_LOCK_NAME = ".lock.new"  # the lock file until it is locked
STAGING_PREFIX = ".new-"
TMP_PREFIX = ".tmp-"
is_process_dir_name = re.compile(r"p\d+-[0-9a-f]+").fullmatch
record_name_match = re.compile(r"\d{20}-\d{10}-\d{12}-(\d{1,12})\.rec").fullmatch
CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# O_NONBLOCK: opening a FIFO planted under a file's name must not hang the sender.
NONBLOCK = getattr(os, "O_NONBLOCK", 0)
DIRECTORY_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | NOFOLLOW | CLOEXEC
# A staging directory this old without a lock file was left by a process that died while
# creating it (a live one renames it within microseconds).
_STALE_STAGING_SECONDS = 60.0


@dataclass
class HeldDir:
    """A process directory whose lock this process holds: its own or a claimed one."""

    name: str
    fd: int
    lock_fd: int
    own: bool
    # (file name, file size, items), oldest first.
    records: Deque[Tuple[str, int, int]] = field(default_factory=deque)


def disk_queue_supported() -> bool:
    """Whether this platform has what the disk queue relies on (flock, ``dir_fd``)."""
    return fcntl is not None and NOFOLLOW != 0 and os.open in os.supports_dir_fd and hasattr(os, "fchmod")


def create_process_dir(root: PrivateDirectory, pid: int) -> HeldDir:
    """A new, locked directory for this process; raises ``OSError`` or ``UnsafeDirectory``.

    Built under a staging name and renamed, so that every visible process directory
    already has a lock file, held by its owner from the first moment. The lock file too
    is locked under another name and renamed: another process tidying up staging
    directories of dead processes must never find it unlocked.
    """
    name = f"p{pid}-{secrets.token_hex(4)}"
    staging = STAGING_PREFIX + name
    dir_fd = lock_fd = -1
    try:
        dir_fd = open_private_level(root.fd, staging, os.path.join(root.path, staging))
        lock_fd = os.open(_NEW_LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC, 0o600, dir_fd=dir_fd)
        os.fchmod(lock_fd, 0o600)
        if not try_lock(lock_fd):
            raise OSError("could not lock a directory it just created")
        os.rename(_NEW_LOCK_NAME, LOCK_NAME, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.rename(staging, name, src_dir_fd=root.fd, dst_dir_fd=root.fd)
    except BaseException:
        close_quietly(lock_fd)
        close_quietly(dir_fd)
        remove_tree_quietly(root.fd, staging)
        raise
    return HeldDir(name=name, fd=dir_fd, lock_fd=lock_fd, own=True)


def claim_process_dir(root: PrivateDirectory, name: str) -> Optional[HeldDir]:
    """Take the directory ``name`` of a dead process, with its records; ``None`` when
    its owner lives, someone else claimed it, or it is not the user's own."""
    try:
        dir_fd = os.open(name, DIRECTORY_FLAGS, dir_fd=root.fd)
    except OSError:
        return None  # gone meanwhile, or not a plain directory
    lock_fd = -1
    try:
        problem = ownership_problem(os.fstat(dir_fd))
        if problem:
            LOGGER.warning("Not sending the Opik queue records in %s: it is %s", os.path.join(root.path, name), problem)
            raise _Skip()
        # Never O_CREAT: a missing lock file means the directory is being deleted.
        lock_fd = os.open(LOCK_NAME, os.O_RDWR | NOFOLLOW | CLOEXEC | NONBLOCK, dir_fd=dir_fd)
        if not stat.S_ISREG(os.fstat(lock_fd).st_mode) or not try_lock(lock_fd):
            raise _Skip()  # its owner (or another claimer) is alive
        # The previous holder may have drained and deleted the directory between our
        # open and our lock: then the file we locked is no longer linked.
        if os.fstat(lock_fd).st_nlink == 0:
            raise _Skip()
        records = _load_records(dir_fd)
    except (OSError, _Skip):
        close_quietly(lock_fd)
        close_quietly(dir_fd)
        return None
    held = HeldDir(name=name, fd=dir_fd, lock_fd=lock_fd, own=False, records=deque(records))
    if not records:
        delete_process_dir(root.fd, held)
        return None
    return held


def delete_process_dir(root_fd: int, held: HeldDir) -> None:
    """Remove a drained process directory whose lock we hold, then release it."""
    try:
        for name in os.listdir(held.fd):
            if name.startswith(TMP_PREFIX) or record_name_match(name):
                unlink_quietly(name, held.fd)
        # The lock file goes first, so nobody can open and lock it once we let go.
        unlink_quietly(LOCK_NAME, held.fd)
        os.rmdir(held.name, dir_fd=root_fd)
    except OSError as error:
        LOGGER.debug("Could not remove Opik queue directory %s: %s", held.name, error)
    finally:
        release(held)


def release(held: HeldDir) -> None:
    """Close a held directory's descriptors (releasing its lock, unless forked copies
    of the same open file still hold it)."""
    close_quietly(held.lock_fd)
    close_quietly(held.fd)


def remove_abandoned_staging(root_fd: int, name: str) -> None:
    """Delete a staging directory whose creator died before renaming it."""
    try:
        dir_fd = os.open(name, DIRECTORY_FLAGS, dir_fd=root_fd)
    except OSError:
        return
    try:
        try:
            lock_fd = os.open(LOCK_NAME, os.O_RDWR | NOFOLLOW | CLOEXEC | NONBLOCK, dir_fd=dir_fd)
        except FileNotFoundError:
            if time.time() - os.fstat(dir_fd).st_mtime > _STALE_STAGING_SECONDS:
                remove_tree_quietly(root_fd, name)
            return
        try:
            if try_lock(lock_fd) and os.fstat(lock_fd).st_nlink > 0:
                remove_tree_quietly(root_fd, name)
        finally:
            close_quietly(lock_fd)
    except OSError:
        return
    finally:
        close_quietly(dir_fd)


def try_lock(fd: int) -> bool:
    """Take the exclusive flock on ``fd`` without waiting."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def remove_tree_quietly(root_fd: int, name: str) -> None:
    """Delete the flat directory ``name`` and its files, ignoring errors."""
    try:
        dir_fd = os.open(name, DIRECTORY_FLAGS, dir_fd=root_fd)
    except OSError:
        return
    try:
        for entry in os.listdir(dir_fd):
            unlink_quietly(entry, dir_fd)
        os.rmdir(name, dir_fd=root_fd)
    except OSError:
        pass
    finally:
        close_quietly(dir_fd)


def unlink_quietly(name: str, dir_fd: int) -> None:
    """Delete ``name`` under ``dir_fd`` if it is there."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def close_quietly(fd: int) -> None:
    """Close ``fd`` unless it is ``-1`` (never opened) or already closed."""
    if fd < 0:
        return
    try:
        os.close(fd)
    except OSError:
        pass


class _Skip(Exception):
    """A directory that is not to be claimed (alive, or not ours)."""


def _load_records(dir_fd: int) -> List[Tuple[str, int, int]]:
    records = []
    for name in os.listdir(dir_fd):
        if name.startswith(TMP_PREFIX):
            unlink_quietly(name, dir_fd)  # a write its dead owner never finished
            continue
        match = record_name_match(name)
        if match:
            try:
                size = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
            records.append((name, size, int(match.group(1))))
    records.sort()
    return records

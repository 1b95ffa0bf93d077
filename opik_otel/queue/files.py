"""Reading and writing one record file of a disk queue, trusting nothing it finds."""

import os
import stat
from typing import Optional, Tuple

from .directories import CLOEXEC, NONBLOCK, unlink_quietly
from .location import NOFOLLOW, ownership_problem
from .records import MAX_HEADER_BYTES

# The quarantine keeps the newest records set aside, for a person to look at.
QUARANTINE_KEEP = 100

_READ_FLAGS = os.O_RDONLY | NOFOLLOW | CLOEXEC | NONBLOCK


def read_record_file(dir_fd: int, name: str, max_bytes: int) -> Tuple[bytes, Optional[str]]:
    """The bytes of record file ``name``, or why it is not to be trusted.

    Raises ``FileNotFoundError`` when it is gone. A symlink, FIFO or device, a file of
    another user or writable by others, or one larger than the queue could have written
    is refused without reading it.
    """
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as error:
        return b"", f"could not be opened safely ({error.strerror})"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return b"", "not a regular file"
        problem = ownership_problem(info)
        if problem:
            return b"", f"the file is {problem}"
        if info.st_size > max_bytes + MAX_HEADER_BYTES:
            return b"", f"{info.st_size} bytes, larger than the queue could ever hold"
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks), None
    finally:
        os.close(fd)


def write_all(fd: int, header: bytes, body: bytes) -> None:
    """Write ``header`` then ``body`` (one system call when the kernel takes it all)."""
    written = os.writev(fd, [header, body])
    if written < len(header):
        _write_rest(fd, memoryview(header)[written:])
        written = len(header)
    _write_rest(fd, memoryview(body)[written - len(header) :])


def trim_quarantine(quarantine_fd: int) -> None:
    """Keep only the newest :data:`QUARANTINE_KEEP` files (names start with the time)."""
    names = sorted(os.listdir(quarantine_fd))
    for name in names[: max(0, len(names) - QUARANTINE_KEEP)]:
        unlink_quietly(name, quarantine_fd)


def _write_rest(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]

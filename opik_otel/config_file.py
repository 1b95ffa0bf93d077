"""Reading the ``[opik]`` section of an Opik config file, safely.

The path comes from the environment (``OPIK_CONFIG_PATH``) or the home directory, so it
may name anything: a FIFO (opening it for reading would block until a writer comes), a
device (``/dev/zero`` never ends), a directory, a huge file. Only a regular file of at
most :data:`MAX_CONFIG_FILE_BYTES` is read: the file is opened without blocking and
checked with ``fstat`` on the open descriptor (no race with a swapped path) before a
single byte is read. Anything else is ignored with one warning naming the path, as an
unreadable or malformed file is: the config file is optional input, and the Opik
SDK's other sources (arguments, ``OPIK_*`` variables) still apply.
"""

import configparser
import errno
import os
import stat
from typing import Dict, Optional

from ._logging import get_logger

LOGGER = get_logger(__name__)

SECTION = "opik"
# A real config file holds a handful of short lines.
MAX_CONFIG_FILE_BYTES = 64 * 1024
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


def read_config_section(path: Optional[str], *, explicit: bool) -> Dict[str, str]:
    """Return the ``[opik]`` section of the INI file at ``path``, or ``{}`` with a warning.

    A missing default file is normal; a missing file the user pointed at is worth a
    warning. Parse errors are reported by type and line only, because configparser's own
    messages quote the offending line, which may hold the API key.
    """
    if path is None:
        return {}
    text = _read_regular_file(path, explicit=explicit)
    if text is None:
        return {}
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=path)
    except configparser.Error as error:
        line = getattr(error, "lineno", None)
        where = f" near line {line}" if line is not None else ""
        LOGGER.warning(
            "Opik config file %s is not a valid INI file (%s%s); ignoring it. Fix it or rerun `opik configure`.",
            path,
            type(error).__name__,
            where,
        )
        return {}
    if not parser.has_section(SECTION):
        return {}
    return dict(parser.items(SECTION))


def _read_regular_file(path: str, *, explicit: bool) -> Optional[str]:
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        if explicit:
            LOGGER.warning("Opik config file %s does not exist; ignoring it (check OPIK_CONFIG_PATH).", path)
        return None
    except (OSError, ValueError) as error:
        # ValueError covers paths with NUL characters.
        LOGGER.warning("Opik config file %s cannot be read (%s); ignoring it.", path, _reason(error))
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            LOGGER.warning(
                "Opik config file %s is not a regular file (%s); ignoring it. Point OPIK_CONFIG_PATH at the "
                "file `opik configure` wrote.",
                path,
                _kind(info.st_mode),
            )
            return None
        data = _read_at_most(fd, MAX_CONFIG_FILE_BYTES + 1)
        if len(data) > MAX_CONFIG_FILE_BYTES:
            LOGGER.warning(
                "Opik config file %s is larger than %d bytes, which no Opik config file is; ignoring it.",
                path,
                MAX_CONFIG_FILE_BYTES,
            )
            return None
        return data.decode("utf-8")
    except (OSError, ValueError) as error:
        # ValueError covers undecodable bytes.
        LOGGER.warning("Opik config file %s cannot be read (%s); ignoring it.", path, _reason(error))
        return None
    finally:
        os.close(fd)


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks = []
    size = 0
    while size < limit:
        chunk = os.read(fd, min(65536, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a file"


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.errno is not None:
        return errno.errorcode.get(error.errno, type(error).__name__)
    return type(error).__name__

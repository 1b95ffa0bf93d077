"""Where a disk queue lives: a directory private to its user, opened without trusting
anything another local user could have planted on the way.

Default: ``$XDG_CACHE_HOME/opik_otel/spool/<key>`` (or ``~/.cache/...``), else
``<temp>/opik_otel-<uid>/spool/<key>``. Every level this package owns is created 0700
whatever the umask, opened with ``O_NOFOLLOW`` relative to its parent's descriptor (so a
symlink swapped in between two steps is never followed), and refused when it exists but
is not owned by the user or is writable by group or others.
"""

import hashlib
import os
import stat
import tempfile
from dataclasses import dataclass
from typing import List, Mapping, Optional, Sequence

_DIRECTORY_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class UnsafeDirectory(Exception):
    """An existing directory that another user could have planted or can write to."""


@dataclass(frozen=True)
class Location:
    """A directory to open: ``base`` (trusted as it is, or checked when ``check_base``;
    created when missing if ``create_base``) and the ``levels`` below it that this
    package creates and owns."""

    base: str
    levels: Sequence[str]
    check_base: bool
    create_base: bool

    @property
    def path(self) -> str:
        return os.path.join(self.base, *self.levels)


@dataclass(frozen=True)
class PrivateDirectory:
    """An open, verified directory: ``fd`` stays valid whatever happens to ``path``."""

    fd: int
    path: str


def directory_name(destination_key: str) -> str:
    """A short file name standing for one destination."""
    return hashlib.sha256(destination_key.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def default_locations(
    destination_key: str, environ: Mapping[str, str], home: str, temp: str, uid: int
) -> List[Location]:
    """The default places for a destination's queue, best first."""
    name = directory_name(destination_key)
    cache = environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says a relative value is to be ignored.
    if not os.path.isabs(cache):
        cache = os.path.join(home, ".cache") if os.path.isabs(home) else ""
    locations = []
    if cache:
        locations.append(Location(cache, ("opik_otel", "spool", name), check_base=True, create_base=True))
    locations.append(Location(temp, (f"opik_otel-{uid}", "spool", name), check_base=False, create_base=False))
    return locations


def explicit_location(directory: str, destination_key: str) -> Location:
    """The queue's place under a directory the user chose."""
    path = os.path.abspath(directory)
    parent, leaf = os.path.split(path)
    return Location(parent, (leaf, directory_name(destination_key)), check_base=False, create_base=True)


def open_location(location: Location) -> PrivateDirectory:
    """Open (creating what is missing) ``location``; raise :class:`UnsafeDirectory` or ``OSError``."""
    if location.create_base:
        _make_missing(location.base)
    fd = os.open(location.base, _DIRECTORY_FLAGS)
    try:
        if location.check_base:
            _check_owned(os.fstat(fd), location.base)
        for level in location.levels:
            child = open_private_level(fd, level, os.path.join(location.base, level))
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return PrivateDirectory(fd=fd, path=location.path)


def fresh_private_directory(temp: str, uid: int) -> PrivateDirectory:
    """A new, empty private directory (nobody else can have planted it)."""
    path = tempfile.mkdtemp(prefix=f"opik_otel-{uid}-", dir=temp)
    parent, leaf = os.path.split(path)
    return open_location(Location(parent, (leaf,), check_base=False, create_base=False))


def open_private_level(parent_fd: int, name: str, path: str) -> int:
    """Create (0700) or open the directory ``name`` under ``parent_fd``, never through a
    symlink; refuse one that is not the user's own or is writable by others."""
    try:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
    except FileExistsError:
        pass
    info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeDirectory(f"{path} is a symbolic link")
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeDirectory(f"{path} is not a directory")
    try:
        fd = os.open(name, _DIRECTORY_FLAGS | NOFOLLOW, dir_fd=parent_fd)
    except OSError as error:
        raise UnsafeDirectory(f"{path} could not be opened safely ({error.strerror})") from error
    try:
        info = os.fstat(fd)
        _check_owned(info, path)
        if stat.S_IMODE(info.st_mode) != 0o700:
            # Our own directory: make it exactly owner-only (mkdir's mode went through the umask).
            os.fchmod(fd, 0o700)
            if stat.S_IMODE(os.fstat(fd).st_mode) != 0o700:
                raise UnsafeDirectory(f"{path} cannot be made private (mode 0700)")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _make_missing(path: str) -> None:
    """Create the missing directories of ``path``, each 0700 whatever the umask (unlike
    ``os.makedirs``, whose intermediate directories get the umask's mode)."""
    missing = []
    while not os.path.isdir(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        missing.append(path)
        path = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue
        os.chmod(directory, 0o700)


def ownership_problem(info: os.stat_result) -> Optional[str]:
    """Why a file or directory with ``info`` cannot be trusted, or ``None``."""
    uid = os.geteuid()
    if info.st_uid != uid:
        return f"owned by uid {info.st_uid}, not {uid}"
    if info.st_mode & 0o022:
        return f"writable by group or others (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def _check_owned(info: os.stat_result, path: str) -> None:
    problem = ownership_problem(info)
    if problem:
        raise UnsafeDirectory(f"{path} is {problem}")

"""A bounded on-disk FIFO of requests that could not be sent to Opik yet.

When Opik is down the exporter appends each failed request here and replays the spool, oldest
first, once Opik answers again, also after a restart of the application.

Layout under ``directory`` (mode 0o700, files 0o600)::

    p<pid>-<random>/             one per live process; only that process writes into it
        .lock                    flock()ed by the owner for as long as it lives
        <ns time>-<pid>-<counter>.rec

A process creates its subdirectory lazily on its first append (after a fork the child notices the
new pid and makes its own). A subdirectory whose lock can be taken belongs to a process that is
gone: the first live process that takes the lock has claimed it, replays its records in time
order together with its own, and deletes it once drained. The held flock *is* the claim: it is
exclusive between processes (and between spools within one process), dies with its holder so a
claim by a process that crashes is released automatically, and, unlike ``os.kill(pid, 0)``, is not
fooled by pid reuse; so no directory is renamed.

Record file: one line ``OPIKSPOOL1 {"kind", "headers", "length", "crc32"}`` then the body bytes.
A file that does not parse, or whose length or CRC do not match, is deleted with a warning.

``Authorization`` (and ``Proxy-Authorization``, ``Cookie``, and any header whose name marks it as
secret, such as ``X-Api-Key``) headers are never written to disk: the exporter must add its current
credentials again when it replays an entry.

The size cap applies per process, to the records it holds (its own plus claimed ones).
"""

import json
import os
import re
import secrets
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Dict, List, Mapping, Optional, Tuple, Union

from opik_otel._logging import get_logger
from opik_otel.config import is_secret_header

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    # Without flock a process cannot tell whether another one is alive, so it never claims
    # other directories: spooling still works within a process, replay across restarts does not.
    fcntl = None  # type: ignore[assignment]

LOGGER = get_logger(__name__)

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_CLAIM_INTERVAL_SECONDS = 5.0

# Header names (lower case) dropped before a record touches the disk: credentials must not
# outlive the process in a file, and the key may have been rotated by the time of replay.
UNSPOOLED_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})

_MAGIC = b"OPIKSPOOL1 "
_LOCK_NAME = ".lock"
_RECORD_SUFFIX = ".rec"
_TMP_PREFIX = ".tmp-"
_STAGING_PREFIX = ".new-"
_PROCESS_DIR = re.compile(r"p\d+-[0-9a-f]+").fullmatch
_RECORD_NAME = re.compile(r"\d{20}-\d{10}-\d{12}\.rec").fullmatch
_DROP_WARNING_INTERVAL_SECONDS = 60.0
# A staging directory this old without a lock file was left by a process that died while
# creating it (a live one renames it within microseconds).
_STALE_STAGING_SECONDS = 60.0


@dataclass(frozen=True)
class SpoolEntry:
    """One spooled request, as returned by :meth:`DiskSpool.peek_oldest`.

    ``headers`` never contain ``Authorization``; ``id`` identifies the record for
    :meth:`DiskSpool.remove`.
    """

    kind: str
    headers: Mapping[str, str]
    body: bytes
    id: str


@dataclass
class _HeldDir:
    """A process directory this process holds the lock of: its own or a claimed one."""

    name: str
    path: str
    lock_fd: int
    own: bool
    # (file name, file size), oldest first; only the holder adds or removes records.
    records: Deque[Tuple[str, int]] = field(default_factory=deque)


@dataclass
class _ProcessState:
    """Everything that belongs to one process; replaced wholesale in a forked child."""

    pid: int
    lock: threading.RLock = field(default_factory=threading.RLock)
    own: Optional[_HeldDir] = None
    claimed: Dict[str, _HeldDir] = field(default_factory=dict)
    total_bytes: int = 0
    dropped_records: int = 0
    dropped_bytes: int = 0
    last_timestamp: int = 0
    counter: int = 0
    next_claim_at: float = 0.0
    next_drop_warning_at: float = 0.0

    def held(self) -> List[_HeldDir]:
        dirs = list(self.claimed.values())
        if self.own is not None:
            dirs.append(self.own)
        return dirs


class DiskSpool:
    """Bounded, crash- and restart-safe FIFO of ``(kind, headers, body)`` request records.

    Thread-safe; safe to share across ``fork`` and between processes using the same
    ``directory``. I/O problems are logged and reported through return values, never raised.
    Counters (:attr:`dropped_records`, :attr:`dropped_bytes`) are per process.

    Args:
        directory: root of the spool; created with mode 0o700 on first use.
        max_bytes: cap on the bytes of record files this process holds; the oldest records are
            dropped to make room.
        fsync: flush every record (and its directory entry) to stable storage before
            :meth:`append` returns; off by default because it costs milliseconds per record.
        claim_interval: how often, in seconds, to look for directories left by dead processes.
    """

    def __init__(
        self,
        directory: Union[str, "os.PathLike[str]"],
        max_bytes: int = DEFAULT_MAX_BYTES,
        *,
        fsync: bool = False,
        claim_interval: float = DEFAULT_CLAIM_INTERVAL_SECONDS,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._root = os.path.abspath(os.fspath(directory))
        self._max_bytes = max_bytes
        self._fsync = fsync
        self._claim_interval = claim_interval
        # No I/O here: the directory is created by whichever process first needs it.
        self._state = _ProcessState(pid=os.getpid())
        self._fork_guards: Dict[int, threading.Lock] = {}

    # --- public API ----------------------------------------------------------------------------

    @property
    def directory(self) -> str:
        """The spool's root directory."""
        return self._root

    @property
    def max_bytes(self) -> int:
        """The size cap, in bytes of record files."""
        return self._max_bytes

    def append(self, kind: str, body: bytes, headers: Optional[Mapping[str, str]] = None) -> bool:
        """Store a request at the tail; return whether it was stored.

        ``Authorization``-like headers are left out (see :data:`UNSPOOLED_HEADERS`). Older records
        are dropped when the cap would be exceeded; a record larger than the cap on its own is
        dropped instead. Raises ``TypeError`` only for arguments of the wrong type.
        """
        if not isinstance(kind, str):
            raise TypeError("kind must be a str")
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise TypeError("body must be bytes")
        body = bytes(body)
        header_line = _encode_header(kind, _spoolable_headers(headers), body)
        record_size = len(header_line) + len(body)
        state = self._current_state()
        with state.lock:
            self._maybe_claim(state)
            if record_size > self._max_bytes:
                self._count_dropped(state, 1, record_size)
                LOGGER.warning(
                    "A request of %d bytes is larger than the whole Opik spool (%d bytes) and "
                    "was dropped",
                    record_size,
                    self._max_bytes,
                )
                return False
            for _ in range(2):
                own = self._own_dir(state)
                if own is None:
                    break
                try:
                    self._write_record(state, own, header_line, body, record_size)
                    return True
                except FileNotFoundError:
                    # Someone removed our directory from under us: start a fresh one once.
                    self._forget_own(state)
                except OSError as error:
                    LOGGER.warning("Could not write to the Opik spool at %s: %s", self._root, error)
                    break
            self._count_dropped(state, 1, record_size)
            return False

    def peek_oldest(self) -> Optional[SpoolEntry]:
        """The oldest stored request, without removing it; ``None`` when the spool is empty.

        Records left by dead processes are replayed in time order with this process's own.
        Corrupt records are deleted (with a warning) and skipped. Calling it twice without
        :meth:`remove` returns the same entry.
        """
        state = self._current_state()
        with state.lock:
            self._maybe_claim(state)
            while True:
                held = _oldest_dir(state)
                if held is None:
                    return None
                name, size = held.records[0]
                path = os.path.join(held.path, name)
                try:
                    with open(path, "rb") as file:
                        data = file.read()
                except FileNotFoundError:
                    self._forget_record(state, held, name, size)
                    continue
                except OSError as error:
                    LOGGER.warning("Could not read Opik spool record %s: %s", path, error)
                    data = b""
                decoded = _decode_record(data)
                if decoded is None:
                    LOGGER.warning(
                        "Deleted a corrupt or partial record in the Opik spool at %s", held.path
                    )
                    _unlink_quietly(path)
                    self._count_dropped(state, 1, size)
                    self._forget_record(state, held, name, size)
                    continue
                kind, headers, body = decoded
                return SpoolEntry(kind=kind, headers=headers, body=body, id=f"{held.name}/{name}")

    def remove(self, entry: SpoolEntry) -> bool:
        """Delete ``entry`` after it was delivered; ``False`` if this process does not hold it.

        Entries peeked before a fork are not removed by the child: they belong to the parent.
        """
        dir_name, _, name = entry.id.partition("/")
        state = self._current_state()
        with state.lock:
            held = state.claimed.get(dir_name)
            if held is None and state.own is not None and state.own.name == dir_name:
                held = state.own
            if held is None:
                return False
            size = _find_size(held.records, name)
            if size is None:
                return False
            _unlink_quietly(os.path.join(held.path, name))
            self._forget_record(state, held, name, size)
            return True

    def claim_abandoned(self) -> int:
        """Look now for directories of dead processes; return how many records were claimed."""
        state = self._current_state()
        with state.lock:
            return self._claim(state)

    def close(self) -> None:
        """Release this process's locks; remaining records stay for a later process to replay.

        The spool may be used again afterwards (it starts a new directory).
        """
        state = self._current_state()
        with state.lock:
            for held in state.held():
                if held.own and not held.records:
                    _delete_dir(held.path, held.lock_fd)
                else:
                    _close_quietly(held.lock_fd)
            # Reset in place rather than swapping the state: threads already waiting on this
            # lock must find the closed state, not one that still points at released dirs.
            state.own = None
            state.claimed = {}
            state.total_bytes = 0
            state.next_claim_at = 0.0

    def __enter__(self) -> "DiskSpool":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __len__(self) -> int:
        """Number of records this process holds (its own and claimed ones)."""
        state = self._current_state()
        with state.lock:
            self._maybe_claim(state)
            return sum(len(held.records) for held in state.held())

    @property
    def size_bytes(self) -> int:
        """Bytes of the record files this process holds."""
        state = self._current_state()
        with state.lock:
            self._maybe_claim(state)
            return state.total_bytes

    @property
    def dropped_records(self) -> int:
        """Records lost in this process: evicted for space, too large, unwritable or corrupt."""
        return self._current_state().dropped_records

    @property
    def dropped_bytes(self) -> int:
        """Bytes lost along with :attr:`dropped_records`."""
        return self._current_state().dropped_bytes

    # --- process and directory management ------------------------------------------------------

    def _current_state(self) -> _ProcessState:
        state = self._state
        pid = os.getpid()
        if state.pid == pid:
            return state
        # First call in a forked child. The inherited RLock may be held by a parent thread that
        # does not exist here, so it cannot guard this; a per-pid lock set atomically can.
        guard = self._fork_guards.setdefault(pid, threading.Lock())
        with guard:
            state = self._state
            if state.pid != pid:
                # Closing our copies of the parent's lock fds does not release its flocks (those
                # belong to the shared open file description) but lets its directories be
                # claimed once the parent is gone even while this child lives.
                for held in state.held():
                    _close_quietly(held.lock_fd)
                state = _ProcessState(pid=pid)
                self._state = state
                self._fork_guards = {pid: guard}
        return state

    def _ensure_root(self) -> bool:
        try:
            if not os.path.isdir(self._root):
                os.makedirs(self._root, mode=0o700, exist_ok=True)
                # makedirs' mode is filtered by the umask; make it exactly owner-only.
                os.chmod(self._root, 0o700)
            return True
        except OSError as error:
            LOGGER.warning("Could not create the Opik spool directory %s: %s", self._root, error)
            return False

    def _own_dir(self, state: _ProcessState) -> Optional[_HeldDir]:
        if state.own is not None:
            return state.own
        if not self._ensure_root():
            return None
        name = f"p{state.pid}-{secrets.token_hex(4)}"
        # Built under a staging name and renamed, so that every visible process directory
        # already has a lock file, held by its owner from the first moment.
        staging = os.path.join(self._root, _STAGING_PREFIX + name)
        final = os.path.join(self._root, name)
        fd = -1
        try:
            os.mkdir(staging, 0o700)
            lock_path = os.path.join(staging, _LOCK_NAME)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            if not _try_lock(fd, required=True):
                raise OSError("could not lock a freshly created spool directory")
            os.rename(staging, final)
        except OSError as error:
            LOGGER.warning(
                "Could not create a directory in the Opik spool %s: %s", self._root, error
            )
            if fd >= 0:
                _close_quietly(fd)
            _remove_tree_quietly(staging)
            return None
        state.own = _HeldDir(name=name, path=final, lock_fd=fd, own=True)
        return state.own

    def _forget_own(self, state: _ProcessState) -> None:
        own = state.own
        if own is None:
            return
        _close_quietly(own.lock_fd)
        state.total_bytes -= sum(size for _, size in own.records)
        state.own = None

    def _maybe_claim(self, state: _ProcessState) -> None:
        if time.monotonic() >= state.next_claim_at:
            self._claim(state)

    def _claim(self, state: _ProcessState) -> int:
        state.next_claim_at = time.monotonic() + self._claim_interval
        if fcntl is None:
            return 0
        try:
            names = sorted(os.listdir(self._root))
        except FileNotFoundError:
            return 0
        except OSError as error:
            LOGGER.warning("Could not list the Opik spool directory %s: %s", self._root, error)
            return 0
        claimed = 0
        for name in names:
            if name in state.claimed or (state.own is not None and name == state.own.name):
                continue
            path = os.path.join(self._root, name)
            if name.startswith(_STAGING_PREFIX):
                _remove_abandoned_staging(path)
                continue
            if not _PROCESS_DIR(name):
                continue
            held = _try_claim(name, path)
            if held is None:
                continue
            state.claimed[name] = held
            state.total_bytes += sum(size for _, size in held.records)
            claimed += len(held.records)
        if claimed:
            LOGGER.info(
                "Opik spool: %d requests left by earlier processes will be replayed", claimed
            )
            self._evict(state, self._max_bytes)
        return claimed

    # --- records -------------------------------------------------------------------------------

    def _next_name(self, state: _ProcessState) -> str:
        # Wall-clock time so that records of different (also earlier) processes merge in time
        # order; bumped to stay strictly increasing within this process.
        timestamp = max(time.time_ns(), state.last_timestamp + 1)
        state.last_timestamp = timestamp
        state.counter += 1
        return f"{timestamp:020d}-{state.pid:010d}-{state.counter:012d}{_RECORD_SUFFIX}"

    def _write_record(
        self, state: _ProcessState, own: _HeldDir, header_line: bytes, body: bytes, size: int
    ) -> None:
        name = self._next_name(state)
        final = os.path.join(own.path, name)
        temporary = os.path.join(own.path, _TMP_PREFIX + name)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                _write_all(fd, header_line)
                _write_all(fd, body)
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            # Make room only once the new record is safely written: a failed write must not
            # cost older records.
            self._evict(state, self._max_bytes - size)
            os.replace(temporary, final)
        except BaseException:
            _unlink_quietly(temporary)
            raise
        if self._fsync:
            _fsync_dir(own.path)
        own.records.append((name, size))
        state.total_bytes += size

    def _evict(self, state: _ProcessState, budget: int) -> None:
        count = freed = 0
        while state.total_bytes > budget:
            held = _oldest_dir(state)
            if held is None:
                break
            name, size = held.records[0]
            _unlink_quietly(os.path.join(held.path, name))
            self._forget_record(state, held, name, size)
            count += 1
            freed += size
        if count:
            self._count_dropped(state, count, freed)
            now = time.monotonic()
            # One warning per interval: the counts change with every eviction, so the logging
            # filter (which compares arguments) would not throttle these.
            if now >= state.next_drop_warning_at:
                state.next_drop_warning_at = now + _DROP_WARNING_INTERVAL_SECONDS
                LOGGER.warning(
                    "The Opik spool at %s is full (%d bytes): dropped the oldest requests; "
                    "%d requests (%d bytes) lost so far by this process",
                    self._root,
                    self._max_bytes,
                    state.dropped_records,
                    state.dropped_bytes,
                )

    def _forget_record(self, state: _ProcessState, held: _HeldDir, name: str, size: int) -> None:
        if held.records and held.records[0][0] == name:
            held.records.popleft()
        else:
            held.records.remove((name, size))
        state.total_bytes -= size
        if not held.own and not held.records:
            _delete_dir(held.path, held.lock_fd)
            del state.claimed[held.name]

    @staticmethod
    def _count_dropped(state: _ProcessState, records: int, size: int) -> None:
        state.dropped_records += records
        state.dropped_bytes += size


# --- helpers without state ------------------------------------------------------------------------


def _spoolable_headers(headers: Optional[Mapping[str, str]]) -> Dict[str, str]:
    if not headers:
        return {}
    return {
        str(name): str(value)
        for name, value in headers.items()
        if str(name).strip().lower() not in UNSPOOLED_HEADERS and not is_secret_header(str(name))
    }


def _encode_header(kind: str, headers: Mapping[str, str], body: bytes) -> bytes:
    meta = {"kind": kind, "headers": headers, "length": len(body), "crc32": zlib.crc32(body)}
    # ASCII-only JSON cannot contain a raw newline, so the first newline ends the header.
    return _MAGIC + json.dumps(meta, separators=(",", ":")).encode("ascii") + b"\n"


def _decode_record(data: bytes) -> Optional[Tuple[str, Dict[str, str], bytes]]:
    if not data.startswith(_MAGIC):
        return None
    end = data.find(b"\n")
    if end < 0:
        return None
    try:
        meta = json.loads(data[len(_MAGIC) : end].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    kind, headers = meta.get("kind"), meta.get("headers")
    length, crc = meta.get("length"), meta.get("crc32")
    if not isinstance(kind, str) or not isinstance(headers, dict):
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        return None
    if not isinstance(length, int) or not isinstance(crc, int):
        return None
    body = data[end + 1 :]
    if len(body) != length or zlib.crc32(body) != crc:
        return None
    return kind, headers, body


def _oldest_dir(state: _ProcessState) -> Optional[_HeldDir]:
    # Record names start with a wall-clock timestamp, so the smallest head is the oldest record.
    candidates = [held for held in state.held() if held.records]
    if not candidates:
        return None
    return min(candidates, key=lambda held: held.records[0][0])


def _find_size(records: Deque[Tuple[str, int]], name: str) -> Optional[int]:
    for record_name, size in records:
        if record_name == name:
            return size
    return None


def _try_lock(fd: int, required: bool = False) -> bool:
    if fcntl is None:
        return required
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _try_claim(name: str, path: str) -> Optional[_HeldDir]:
    lock_path = os.path.join(path, _LOCK_NAME)
    try:
        # Never O_CREAT: a missing lock file means the directory is being deleted.
        fd = os.open(lock_path, os.O_RDWR)
    except OSError:
        return None
    try:
        if not _try_lock(fd):
            _close_quietly(fd)  # its owner (or another claimer) is alive
            return None
        # The previous holder may have drained and deleted the directory between our open and
        # our lock; then the locked file is no longer the directory's lock file.
        if not _same_file(fd, lock_path):
            _close_quietly(fd)
            return None
        records = _load_records(path)
    except OSError as error:
        LOGGER.warning("Could not claim Opik spool directory %s: %s", path, error)
        _close_quietly(fd)
        return None
    if not records:
        _delete_dir(path, fd)
        return None
    return _HeldDir(name=name, path=path, lock_fd=fd, own=False, records=deque(records))


def _same_file(fd: int, path: str) -> bool:
    try:
        held, current = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino)


def _load_records(path: str) -> List[Tuple[str, int]]:
    records = []
    for name in os.listdir(path):
        entry = os.path.join(path, name)
        if name.startswith(_TMP_PREFIX):
            # A write its dead owner never finished.
            _unlink_quietly(entry)
        elif _RECORD_NAME(name):
            try:
                records.append((name, os.stat(entry).st_size))
            except FileNotFoundError:
                continue
    records.sort()
    return records


def _remove_abandoned_staging(path: str) -> None:
    lock_path = os.path.join(path, _LOCK_NAME)
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        try:
            if time.time() - os.stat(path).st_mtime > _STALE_STAGING_SECONDS:
                _remove_tree_quietly(path)
        except OSError:
            pass
        return
    except OSError:
        return
    if _try_lock(fd) and _same_file(fd, lock_path):
        _delete_dir(path, fd)
    else:
        _close_quietly(fd)


def _delete_dir(path: str, lock_fd: int) -> None:
    """Remove a drained process directory whose lock ``lock_fd`` we hold, then release it."""
    try:
        for name in os.listdir(path):
            if name != _LOCK_NAME and (name.startswith(_TMP_PREFIX) or _RECORD_NAME(name)):
                _unlink_quietly(os.path.join(path, name))
        # The lock file goes first, so nobody can open and lock it once we let go.
        _unlink_quietly(os.path.join(path, _LOCK_NAME))
        os.rmdir(path)
    except OSError as error:
        LOGGER.debug("Could not remove Opik spool directory %s: %s", path, error)
    finally:
        _close_quietly(lock_fd)


def _remove_tree_quietly(path: str) -> None:
    try:
        for name in os.listdir(path):
            _unlink_quietly(os.path.join(path, name))
        os.rmdir(path)
    except OSError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass

"""A delivery queue in files: records survive the death of the process that wrote them.

Layout under the queue's private directory (every directory 0700, every file 0600)::

    p<pid>-<random>/          one per live process; only its owner writes into it
        .lock                 flock()ed by the owner for as long as it lives
        <time ns>-<pid>-<counter>-<items>.rec
    quarantine/               records that could not be parsed or sent as stored

A process creates its directory on its first append (a forked child makes its own), under
a staging name with the lock already held, then renames it into place: every visible
process directory is locked from its first moment. A directory whose lock can be taken
belongs to a process that is gone; the live process that takes the lock has claimed it,
sends its records in time order with its own and removes it once drained. The held flock
*is* the claim: exclusive between processes (and between queues in one process), released
by the kernel when its holder dies, and not fooled by pid reuse.

Durability: :meth:`DiskQueue.append` writes the record to a staging file and renames it
into place before it returns, so a record survives the process being killed (SIGKILL
included) at any moment afterwards, and a half-written one is never seen. Records are
not fsync'ed: a power loss or kernel crash can lose (or leave truncated, then quarantined)
the records written in the last seconds before it, as the OS had not flushed them yet.

The size cap counts the records this process holds (its own and claimed ones); other live
processes on the same directory each keep their own cap.
"""

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from .base import LOGGER, DeliveryQueue, Tally, reset_in_forked_child
from .directories import (
    CLOEXEC,
    STAGING_PREFIX,
    TMP_PREFIX,
    HeldDir,
    claim_process_dir,
    close_quietly,
    create_process_dir,
    delete_process_dir,
    is_process_dir_name,
    release,
    remove_abandoned_staging,
    unlink_quietly,
)
from .files import read_record_file, trim_quarantine, write_all
from .location import NOFOLLOW, PrivateDirectory, UnsafeDirectory, open_private_level
from .records import Record, StoredRecord, decode_record, encode_header, storable

DEFAULT_CLAIM_INTERVAL_SECONDS = 5.0
QUARANTINE_DIRECTORY = "quarantine"


@dataclass
class _DiskState:
    """Everything that belongs to one process; a forked child gets a fresh one."""

    pid: int = field(default_factory=os.getpid)
    lock: threading.Lock = field(default_factory=threading.Lock)
    own: Optional[HeldDir] = None
    claimed: Dict[str, HeldDir] = field(default_factory=dict)
    tally: Tally = field(default_factory=Tally)
    last_timestamp: int = 0
    counter: int = 0
    next_claim_at: float = 0.0
    # The record :meth:`DiskQueue.oldest` returned last, so a sender asking again while
    # it retries does not read the file again.
    head: Optional[StoredRecord] = None
    closed: bool = False

    def held(self) -> List[HeldDir]:
        dirs = list(self.claimed.values())
        if self.own is not None:
            dirs.append(self.own)
        return dirs

    def find(self, locator: str) -> Tuple[Optional[HeldDir], str]:
        dir_name, _, name = locator.partition("/")
        if self.own is not None and self.own.name == dir_name:
            return self.own, name
        return self.claimed.get(dir_name), name


class DiskQueue(DeliveryQueue):
    """Records wait in files under a private directory until they are removed.

    Build it with :func:`opik_otel.queue.open_queue`, which finds and verifies the
    directory. Thread-safe, fork-safe, and safe to share a directory between processes.

    Args:
        root: the verified, open queue directory.
        max_bytes: cap on the bytes of the record files this process holds; the oldest
            records are evicted (and counted) to make room.
        claim_interval: how often, in seconds, :meth:`oldest` looks for directories of
            dead processes.
    """

    def __init__(
        self,
        root: PrivateDirectory,
        *,
        max_bytes: int,
        claim_interval: float = DEFAULT_CLAIM_INTERVAL_SECONDS,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._root = root
        self._max_bytes = max_bytes
        self._claim_interval = claim_interval
        self._state = _DiskState()
        reset_in_forked_child(self, "_forget_parent")

    @property
    def directory(self) -> str:
        """The queue's directory."""
        return self._root.path

    def append(self, record: Record) -> bool:
        """Write ``record`` to a file of its own; return once it is in place.

        From then on the record survives this process being killed; a power loss can
        still lose it (no fsync, see the module docstring). It costs file I/O, so call it
        from an export thread, never from the application's. ``False`` (counted and
        logged) when it is invalid, larger than the whole queue, the queue is closed, or
        the file cannot be written.
        """
        record, problem = storable(record)
        if problem is not None:
            self._state.tally.drop(1, 0)
            LOGGER.warning("A request was not queued for Opik: %s", problem)
            return False
        header = encode_header(record)
        size = len(header) + len(record.body)
        state = self._state
        with state.lock:
            if state.closed:
                state.tally.drop(1, size)
                LOGGER.warning("A request was not queued for Opik: its delivery queue was closed")
                return False
            if state.tally.refused_as_too_large(size, self._max_bytes):
                return False
            for _ in range(2):
                own = self._own_dir(state)
                if own is None:
                    break
                try:
                    self._write(state, own, header, record.body, record.items)
                    return True
                except FileNotFoundError:
                    # Our directory was removed from under us: start a fresh one, once.
                    release(own)
                    self._forget_held(state, own)
                except OSError as error:
                    LOGGER.warning("Could not write to the Opik delivery queue in %s: %s", self.directory, error)
                    break
            state.tally.drop(1, size)
            return False

    def oldest(self) -> Optional[StoredRecord]:
        """The oldest record held (own and claimed ones in time order), or ``None``.

        A record that cannot be trusted or parsed is quarantined and the next one returned.
        """
        state = self._state
        with state.lock:
            if state.closed:
                return None
            if time.monotonic() >= state.next_claim_at:
                self._claim(state)
            while True:
                held = _oldest_dir(state)
                if held is None:
                    return None
                name, size, items = held.records[0]
                locator = f"{held.name}/{name}"
                if state.head is not None and state.head.locator == locator:
                    return state.head
                try:
                    data, problem = read_record_file(held.fd, name, self._max_bytes)
                except FileNotFoundError:
                    self._forget_record(state, held, name)
                    continue
                except OSError as error:
                    data, problem = b"", f"could not be read ({error.strerror})"
                record = None
                if problem is None:
                    record, problem = decode_record(data)
                if record is None:
                    self._set_aside(state, held, name, problem or "unreadable")
                    continue
                state.head = StoredRecord(record=record, locator=locator)
                return state.head

    def remove(self, stored: StoredRecord) -> None:
        """Delete ``stored``'s file; nothing happens when this process does not hold it
        (already removed, evicted, or held by the parent of a forked child)."""
        state = self._state
        with state.lock:
            held, name = state.find(stored.locator)
            if held is None or not _holds(held, name):
                return
            unlink_quietly(name, held.fd)
            self._forget_record(state, held, name)

    def quarantine(self, stored: StoredRecord, reason: str) -> None:
        """Move ``stored``'s file to the quarantine folder; counted, one log line."""
        state = self._state
        with state.lock:
            held, name = state.find(stored.locator)
            if held is not None and _holds(held, name):
                self._set_aside(state, held, name, reason)

    def claim_abandoned(self) -> int:
        """Take over the directories of dead processes now; return how many records."""
        state = self._state
        with state.lock:
            return 0 if state.closed else self._claim(state)

    def close(self) -> None:
        """Release this process's directories; unsent records stay for a later process.

        The queue stores nothing afterwards (:meth:`append` returns ``False``).
        """
        state = self._state
        with state.lock:
            if state.closed:
                return
            for held in state.held():
                if held.own and not held.records:
                    delete_process_dir(self._root.fd, held)
                else:
                    release(held)
            state.own, state.claimed, state.head, state.closed = None, {}, None, True
            tally = state.tally
            tally.records = tally.bytes = tally.items = 0
            close_quietly(self._root.fd)

    def _tally(self) -> Tally:
        return self._state.tally

    def _forget_parent(self) -> None:
        # Closing our copies of the parent's descriptors does not release its flocks
        # (they live on the shared open file description), but lets its directories be
        # claimed once the parent is gone, even while this child lives.
        for held in self._state.held():
            release(held)
        closed = self._state.closed
        self._state = _DiskState(closed=closed)

    # --- process directories -----------------------------------------------------------

    def _own_dir(self, state: _DiskState) -> Optional[HeldDir]:
        if state.own is None:
            try:
                state.own = create_process_dir(self._root, state.pid)
            except (OSError, UnsafeDirectory) as error:
                LOGGER.warning("Could not create a directory in the Opik delivery queue %s: %s", self.directory, error)
        return state.own

    def _claim(self, state: _DiskState) -> int:
        state.next_claim_at = time.monotonic() + self._claim_interval
        try:
            names = sorted(os.listdir(self._root.fd))
        except OSError as error:
            LOGGER.warning("Could not list the Opik delivery queue %s: %s", self.directory, error)
            return 0
        claimed = 0
        for name in names:
            if name in state.claimed or (state.own is not None and name == state.own.name):
                continue
            if name.startswith(STAGING_PREFIX):
                remove_abandoned_staging(self._root.fd, name)
            elif is_process_dir_name(name):
                held = claim_process_dir(self._root, name)
                if held is not None:
                    state.claimed[name] = held
                    for _, size, items in held.records:
                        state.tally.add(size, items)
                    claimed += len(held.records)
        if claimed:
            LOGGER.info("Opik delivery queue: %d requests left by earlier processes will be sent", claimed)
            self._evict(state, self._max_bytes)
        return claimed

    @staticmethod
    def _forget_held(state: _DiskState, held: HeldDir) -> None:
        for _, size, items in held.records:
            state.tally.take(size, items)
        held.records.clear()
        if held.own:
            state.own = None
        else:
            state.claimed.pop(held.name, None)
        state.head = None

    # --- records -------------------------------------------------------------------------

    def _write(self, state: _DiskState, own: HeldDir, header: bytes, body: bytes, items: int) -> None:
        # Wall-clock time first, so that records of different (also earlier) processes
        # merge in time order; bumped to stay strictly increasing within this process.
        timestamp = max(time.time_ns(), state.last_timestamp + 1)
        state.last_timestamp = timestamp
        state.counter += 1
        name = f"{timestamp:020d}-{state.pid % 10**10:010d}-{state.counter:012d}-{items}.rec"
        temporary = TMP_PREFIX + name
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC, 0o600, dir_fd=own.fd)
        try:
            try:
                os.fchmod(fd, 0o600)  # exactly, whatever the umask
                write_all(fd, header, body)
            finally:
                os.close(fd)
            size = len(header) + len(body)
            # Make room only once the new record is written: a failed write costs nothing.
            self._evict(state, self._max_bytes - size)
            os.rename(temporary, name, src_dir_fd=own.fd, dst_dir_fd=own.fd)
        except BaseException:
            unlink_quietly(temporary, own.fd)
            raise
        own.records.append((name, size, items))
        state.tally.add(size, items)

    def _evict(self, state: _DiskState, budget: int) -> None:
        evicted = 0
        while state.tally.bytes > budget:
            held = _oldest_dir(state)
            if held is None:
                break
            name, size, _ = held.records[0]
            unlink_quietly(name, held.fd)
            self._forget_record(state, held, name)
            state.tally.drop(1, size)
            evicted += 1
        if evicted:
            state.tally.report_eviction(self.directory, self._max_bytes)

    def _forget_record(self, state: _DiskState, held: HeldDir, name: str) -> None:
        records = held.records
        if records and records[0][0] == name:
            entry = records.popleft()
        else:
            found = next((r for r in records if r[0] == name), None)
            if found is None:
                return
            entry = found
            records.remove(entry)
        state.tally.take(entry[1], entry[2])
        if state.head is not None and state.head.locator == f"{held.name}/{name}":
            state.head = None
        if not held.own and not records:
            delete_process_dir(self._root.fd, held)
            del state.claimed[held.name]

    def _set_aside(self, state: _DiskState, held: HeldDir, name: str, reason: str) -> None:
        target = f"{time.time_ns():020d}-{held.name}-{name}"
        where = os.path.join(self.directory, QUARANTINE_DIRECTORY)
        try:
            quarantine_fd = open_private_level(self._root.fd, QUARANTINE_DIRECTORY, where)
        except (OSError, UnsafeDirectory) as error:
            LOGGER.warning("Deleted an Opik queue record that cannot be sent (%s); no quarantine folder: %s", reason, error)
            unlink_quietly(name, held.fd)
        else:
            try:
                os.rename(name, target, src_dir_fd=held.fd, dst_dir_fd=quarantine_fd)
                trim_quarantine(quarantine_fd)
                LOGGER.warning("Set aside an Opik queue record that cannot be sent (%s): %s", reason, where)
            except OSError as error:
                LOGGER.warning("Deleted an Opik queue record that cannot be sent (%s); could not move it: %s", reason, error)
                unlink_quietly(name, held.fd)
            finally:
                close_quietly(quarantine_fd)
        state.tally.quarantined += 1
        self._forget_record(state, held, name)


# --- helpers without state ------------------------------------------------------------------


def _oldest_dir(state: _DiskState) -> Optional[HeldDir]:
    # Record names start with a wall-clock timestamp: the smallest head is the oldest.
    candidates = [held for held in state.held() if held.records]
    if not candidates:
        return None
    return min(candidates, key=lambda held: held.records[0][0])


def _holds(held: HeldDir, name: str) -> bool:
    return any(entry[0] == name for entry in held.records)

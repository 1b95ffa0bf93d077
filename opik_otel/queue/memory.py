"""A delivery queue held in this process's memory only."""

import os
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Optional

from .base import LOGGER, DeliveryQueue, Tally, reset_in_forked_child
from .records import Record, StoredRecord, storable


@dataclass
class _MemoryState:
    """Everything one process holds; a forked child gets a fresh one."""

    pid: int = field(default_factory=os.getpid)
    lock: threading.Lock = field(default_factory=threading.Lock)
    entries: Deque[StoredRecord] = field(default_factory=deque)
    tally: Tally = field(default_factory=Tally)
    sequence: int = 0


class MemoryQueue(DeliveryQueue):
    """Records wait in memory: what is not sent when the process ends is lost.

    Used with ``spool_directory=False`` and where no directory can be used. The size
    cap evicts the oldest records, counting the loss.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._max_bytes = max_bytes
        self._state = _MemoryState()
        reset_in_forked_child(self, "_forget_parent")

    @property
    def directory(self) -> Optional[str]:
        """Always ``None``: nothing is on disk."""
        return None

    def append(self, record: Record) -> bool:
        """Store ``record`` at the tail; ``False`` (counted, logged) when it cannot be."""
        state = self._state
        record, problem = storable(record)
        size = len(record.body) if problem is None else 0
        with state.lock:
            if problem is not None:
                state.tally.drop(1, size)
                LOGGER.warning("A request was not queued for Opik: %s", problem)
                return False
            if state.tally.refused_as_too_large(size, self._max_bytes):
                return False
            self._evict(state, self._max_bytes - size)
            state.sequence += 1
            state.entries.append(StoredRecord(record=record, locator=f"m{state.pid}-{state.sequence}"))
            state.tally.add(size, record.items)
            return True

    def oldest(self) -> Optional[StoredRecord]:
        """The oldest record held, or ``None``."""
        state = self._state
        with state.lock:
            return state.entries[0] if state.entries else None

    def remove(self, stored: StoredRecord) -> None:
        """Forget ``stored``; nothing happens when this queue does not hold it."""
        state = self._state
        with state.lock:
            self._take(state, stored)

    def quarantine(self, stored: StoredRecord, reason: str) -> None:
        """Drop ``stored`` (memory has no folder to set it aside in), counted and logged."""
        state = self._state
        with state.lock:
            if self._take(state, stored):
                state.tally.quarantined += 1
                LOGGER.warning(
                    "Dropped a request of %d %s that cannot be sent to Opik: %s",
                    stored.record.items,
                    stored.record.kind,
                    reason,
                )

    def claim_abandoned(self) -> int:
        """Always 0: no other process can leave records in memory."""
        return 0

    def close(self) -> None:
        """Nothing to release; what was not sent is given up with the process."""

    def _tally(self) -> Tally:
        return self._state.tally

    def _forget_parent(self) -> None:
        self._state = _MemoryState()

    @staticmethod
    def _take(state: _MemoryState, stored: StoredRecord) -> bool:
        entries = state.entries
        if entries and entries[0] is stored:
            entries.popleft()
        else:
            # By locator: comparing whole records would compare their bodies.
            found = next((held for held in entries if held.locator == stored.locator), None)
            if found is None:
                return False
            entries.remove(found)
        state.tally.take(len(stored.record.body), stored.record.items)
        return True

    def _evict(self, state: _MemoryState, budget: int) -> None:
        evicted = 0
        while state.entries and state.tally.bytes > budget:
            stored = state.entries.popleft()
            size = len(stored.record.body)
            state.tally.take(size, stored.record.items)
            state.tally.drop(1, size)
            evicted += 1
        if evicted:
            state.tally.report_eviction("in memory", self._max_bytes)

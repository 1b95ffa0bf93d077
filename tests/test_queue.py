"""Behaviour every delivery queue shares (memory and disk alike), through the public API."""

import logging
import os
import threading

import pytest

from opik_otel.queue import DiskQueue, MemoryQueue, Record, open_queue

MB = 1024 * 1024


def record(n, size=100, **overrides):
    fields = dict(
        kind="spans",
        body=n.to_bytes(4, "big") * (size // 4),
        destination="http://127.0.0.1:9/api/v1/private/otel/v1/traces",
        project="p",
        workspace="default",
        content_type="application/x-protobuf",
        content_encoding=None,
        items=n % 7 + 1,
    )
    fields.update(overrides)
    return Record(**fields)


def make_memory(tmp_path, max_bytes=64 * MB):
    return MemoryQueue(max_bytes=max_bytes)


def make_disk(tmp_path, max_bytes=64 * MB):
    queue = open_queue(str(tmp_path / "spool"), destination_key="k", max_bytes=max_bytes)
    assert isinstance(queue, DiskQueue)
    return queue


FACTORIES = {"memory": make_memory, "disk": make_disk}


@pytest.fixture(params=sorted(FACTORIES))
def make(request, tmp_path):
    made = []

    def factory(**kwargs):
        queue = FACTORIES[request.param](tmp_path, **kwargs)
        made.append(queue)
        return queue

    yield factory
    for queue in made:
        queue.close()


def drain(queue):
    seen = []
    while True:
        stored = queue.oldest()
        if stored is None:
            return seen
        seen.append(stored.record)
        queue.remove(stored)


def test_fifo_round_trip_keeps_records_whole(make):
    queue = make()
    records = [record(n, size=40 + n) for n in range(20)]
    records.append(record(99, kind="traces", project=None, content_encoding="gzip", content_type="application/json"))
    for item in records:
        assert queue.append(item) is True
    assert drain(queue) == records
    assert len(queue) == 0 and queue.size_bytes == 0 and queue.pending_items == 0


def test_oldest_is_stable_until_removed(make):
    queue = make()
    queue.append(record(1))
    queue.append(record(2))
    first = queue.oldest()
    assert queue.oldest().record == first.record
    queue.remove(first)
    assert queue.oldest().record == record(2)


def test_counts_are_kept_as_records_come_and_go(make):
    queue = make()
    for n in range(5):
        queue.append(record(n, size=1000))
    assert len(queue) == 5
    assert queue.pending_items == sum(n % 7 + 1 for n in range(5))
    assert queue.size_bytes >= 5000
    stats = queue.stats()
    assert stats["records"] == 5 and stats["bytes"] == queue.size_bytes
    assert stats["items"] == queue.pending_items
    queue.remove(queue.oldest())
    assert len(queue) == 4 and queue.pending_items == sum(n % 7 + 1 for n in range(1, 5))


def test_remove_out_of_order_unknown_and_twice(make):
    queue = make()
    for n in range(3):
        queue.append(record(n))
    first = queue.oldest()
    queue.remove(first)
    second = queue.oldest()
    queue.remove(first)  # twice: nothing happens
    assert queue.oldest() == second and len(queue) == 2
    other = make()
    other.append(record(7))
    queue.remove(other.oldest())  # another queue's record
    assert len(queue) == 2 and len(other) == 1


def test_cap_evicts_oldest_and_counts_the_loss(make, caplog):
    queue = make(max_bytes=10_000)
    for n in range(30):
        assert queue.append(record(n, size=1000)) is True
    kept = drain(queue)
    assert kept == [record(n, size=1000) for n in range(30 - len(kept), 30)]
    stats = queue.stats()
    assert stats["dropped_records"] == 30 - len(kept) > 0
    assert stats["dropped_bytes"] >= 1000 * stats["dropped_records"]
    full = [r for r in caplog.records if "is full" in r.getMessage()]
    assert len(full) == 1 and full[0].levelno == logging.WARNING


def test_record_larger_than_the_cap_is_dropped_alone(make, caplog):
    queue = make(max_bytes=10_000)
    queue.append(record(1))
    assert queue.append(record(2, size=20_000)) is False
    assert drain(queue) == [record(1)]
    assert queue.stats()["dropped_records"] == 1
    assert "larger than the whole" in caplog.text


@pytest.mark.parametrize(
    "bad",
    [dict(kind="logs"), dict(project="a\nb"), dict(workspace=""), dict(items=-3), dict(body="str")],
)
def test_unsendable_record_is_refused_and_counted(make, caplog, bad):
    queue = make()
    assert queue.append(record(1, **bad)) is False
    assert len(queue) == 0 and queue.stats()["dropped_records"] == 1
    assert "not queued" in caplog.text


def test_credentials_in_the_destination_are_not_kept(make):
    queue = make()
    queue.append(record(1, destination="https://user:hunter2@opik.example/v1/traces"))
    stored = queue.oldest()
    assert stored.record.destination == "https://opik.example/v1/traces"


def test_quarantine_sets_aside_counts_logs_and_moves_on(make, caplog):
    queue = make()
    for n in range(3):
        queue.append(record(n))
    queue.quarantine(queue.oldest(), "refused as stored")
    assert drain(queue) == [record(1), record(2)]
    assert queue.stats()["quarantined"] == 1
    assert "refused as stored" in caplog.text


def test_threads_append_while_one_sender_drains(make):
    queue = make()
    delivered = []
    done = threading.Event()

    def writer(base):
        for n in range(base, base + 200):
            queue.append(record(n))

    def sender():
        while not (done.is_set() and len(queue) == 0):
            stored = queue.oldest()
            if stored is not None:
                delivered.append(stored.record)
                queue.remove(stored)

    writers = [threading.Thread(target=writer, args=(k * 1000,)) for k in range(4)]
    drainer = threading.Thread(target=sender)
    drainer.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    drainer.join(timeout=60)
    assert sorted(r.body for r in delivered) == sorted(record(n).body for k in range(4) for n in range(k * 1000, k * 1000 + 200))
    for k in range(4):  # each writer's records in its own order
        mine = [r for r in delivered if r.body[:4] in {n.to_bytes(4, "big") for n in range(k * 1000, k * 1000 + 200)}]
        assert mine == [record(n) for n in range(k * 1000, k * 1000 + 200)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_forked_child_starts_empty_and_leaves_the_parent_records(make):
    queue = make()
    queue.append(record(1))
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not see (and so never send) the parent's record
        try:
            held = queue.oldest()
            queue.append(record(2))
            mine = queue.oldest()
            ok = held is None and mine.record == record(2) and len(queue) == 1
            queue.remove(mine)
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert drain(queue) == [record(1)]


def test_open_queue_false_is_memory():
    queue = open_queue(False, destination_key="k", max_bytes=MB)
    assert isinstance(queue, MemoryQueue) and queue.directory is None

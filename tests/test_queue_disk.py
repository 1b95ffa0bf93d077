"""The disk queue's files: what a later process finds, and what it refuses to send."""

import logging
import os
import stat
import sys

import pytest

from opik_otel.queue import DiskQueue, Record, open_queue

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock-based queue")

OTHER_UID = 54321


def record(n, size=64, **overrides):
    fields = dict(
        kind="spans",
        body=(b"%06d" % n) * (size // 6),
        destination="http://127.0.0.1:9/api/v1/private/otel/v1/traces",
        project="p",
        workspace="default",
        content_type="application/x-protobuf",
        content_encoding="gzip",
        items=3,
    )
    fields.update(overrides)
    return Record(**fields)


@pytest.fixture
def spool(tmp_path):
    return str(tmp_path / "spool")


@pytest.fixture
def opened(spool):
    queues = []

    def make(max_bytes=1 << 20):
        queue = open_queue(spool, destination_key="k", max_bytes=max_bytes)
        assert isinstance(queue, DiskQueue)
        queues.append(queue)
        return queue

    yield make
    for queue in queues:
        queue.close()


def left_behind(make, records):
    """Records written by a queue that then let go (as a process that exits with data)."""
    queue = make()
    for item in records:
        assert queue.append(item)
    directory = queue.directory
    queue.close()
    (process_dir,) = [d for d in os.listdir(directory) if d.startswith("p")]
    path = os.path.join(directory, process_dir)
    return path, sorted(n for n in os.listdir(path) if n.endswith(".rec"))


def drain(queue):
    seen = []
    while True:
        stored = queue.oldest()
        if stored is None:
            return seen
        seen.append(stored.record)
        queue.remove(stored)


def quarantined(directory):
    path = os.path.join(directory, "quarantine")
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def test_closed_queue_records_are_claimed_by_the_next_one(opened):
    path, names = left_behind(opened, [record(n) for n in range(5)])
    later = opened()
    assert later.claim_abandoned() == 5
    assert len(later) == 5 and later.pending_items == 15
    assert drain(later) == [record(n) for n in range(5)]
    assert not os.path.exists(path)  # drained claimed directories go away


def test_claimed_records_and_own_ones_are_sent_oldest_first(opened):
    first = opened()
    first.append(record(0))
    later = opened()
    later.append(record(1))
    first.append(record(2))
    first.close()
    later.append(record(3))
    assert drain(later) == [record(n) for n in range(4)]


def test_live_queue_directory_is_not_claimed(opened):
    first = opened()
    first.append(record(1))
    second = opened()
    assert second.claim_abandoned() == 0 and second.oldest() is None
    assert drain(first) == [record(1)]


def test_claimed_directory_is_claimed_exactly_once(opened):
    left_behind(opened, [record(n) for n in range(3)])
    one, two = opened(), opened()
    assert one.claim_abandoned() == 3
    assert two.claim_abandoned() == 0
    assert drain(two) == [] and drain(one) == [record(n) for n in range(3)]


def damage_truncate(path):
    with open(path, "r+b") as file:
        file.truncate(os.path.getsize(path) - 5)


def damage_flip(path):
    with open(path, "r+b") as file:
        file.seek(-1, os.SEEK_END)
        last = file.read(1)
        file.seek(-1, os.SEEK_END)
        file.write(bytes([last[0] ^ 0xFF]))


def damage_empty(path):
    open(path, "wb").close()


def damage_crafted_header(path):
    with open(path, "rb") as file:
        data = file.read()
    with open(path, "wb") as file:
        file.write(data.replace(b'"project":"p"', b'"project":"p\\r\\nX-Evil: 1"'))


def damage_symlink(path):
    os.unlink(path)
    os.symlink("/etc/hostname", path)


def damage_fifo(path):
    os.unlink(path)
    os.mkfifo(path, 0o600)


def damage_other_owner(path):
    os.chown(path, OTHER_UID, -1)


def damage_group_writable(path):
    os.chmod(path, 0o620)


def damage_directory(path):
    os.unlink(path)
    os.mkdir(path)


@pytest.mark.parametrize(
    "damage, reason",
    [
        (damage_truncate, "truncated"),
        (damage_flip, "checksum"),
        (damage_empty, "bad magic"),
        (damage_crafted_header, "project cannot be sent"),
        (damage_symlink, "opened safely"),
        (damage_fifo, "not a regular file"),
        (damage_other_owner, f"owned by uid {OTHER_UID}"),
        (damage_group_writable, "writable by group or others"),
        (damage_directory, "not a regular file"),
    ],
)
def test_a_bad_record_is_quarantined_and_the_ones_behind_it_are_sent(opened, caplog, damage, reason):
    path, names = left_behind(opened, [record(n) for n in range(4)])
    damage(os.path.join(path, names[1]))
    later = opened()
    assert drain(later) == [record(0), record(2), record(3)]
    assert later.stats()["quarantined"] == 1 and len(later) == 0
    assert len(quarantined(later.directory)) == 1
    assert any(reason in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_sender_quarantine_moves_the_file_aside(opened):
    queue = opened()
    for n in range(3):
        queue.append(record(n))
    stored = queue.oldest()
    queue.quarantine(stored, "Opik refused it while accepting the requests around it")
    (kept,) = quarantined(queue.directory)
    assert kept.endswith(".rec")
    target = os.path.join(queue.directory, "quarantine", kept)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(target)).st_mode) == 0o700
    assert drain(queue) == [record(1), record(2)]
    assert queue.stats()["quarantined"] == 1


def test_quarantine_keeps_only_the_newest(opened, monkeypatch):
    monkeypatch.setattr("opik_otel.queue.files.QUARANTINE_KEEP", 3)
    queue = opened()
    for n in range(5):
        queue.append(record(n))
    while queue.oldest() is not None:
        queue.quarantine(queue.oldest(), "test")
    kept = quarantined(queue.directory)
    assert len(kept) == 3 and queue.stats()["quarantined"] == 5


def test_foreign_process_directory_is_not_claimed(opened, caplog):
    path, _ = left_behind(opened, [record(1)])
    os.chown(path, OTHER_UID, -1)
    later = opened()
    assert later.claim_abandoned() == 0 and later.oldest() is None
    assert "owned by uid" in caplog.text
    assert os.path.exists(path)


def test_symlinked_process_directory_is_not_followed(opened, tmp_path):
    path, _ = left_behind(opened, [record(1)])
    moved = str(tmp_path / "elsewhere")
    os.rename(path, moved)
    os.symlink(moved, path)
    later = opened()
    assert later.claim_abandoned() == 0 and later.oldest() is None
    assert len(os.listdir(moved)) == 2  # its lock and record, untouched


def test_claimed_data_counts_against_the_cap(opened, caplog):
    left_behind(opened, [record(n, size=600) for n in range(10)])
    later = opened(max_bytes=4000)
    later.claim_abandoned()
    assert later.size_bytes <= 4000
    stats = later.stats()
    assert stats["dropped_records"] == 10 - stats["records"] > 0
    assert drain(later) == [record(n, size=600) for n in range(10 - stats["records"], 10)]
    assert "is full" in caplog.text


def test_cap_evictions_delete_the_files(opened):
    queue = opened(max_bytes=5000)
    for n in range(40):
        queue.append(record(n, size=600))
    files = [n for d, _, fs in os.walk(queue.directory) for n in fs if n.endswith(".rec")]
    assert len(files) == len(queue) < 40
    assert queue.stats()["dropped_records"] == 40 - len(queue)


def test_counts_come_from_memory_not_from_scanning(opened):
    queue = opened()
    for n in range(3):
        queue.append(record(n))
    for directory, _, names in os.walk(queue.directory):
        for name in names:
            if name.endswith(".rec"):
                os.unlink(os.path.join(directory, name))
    assert len(queue) == 3  # the files went behind its back; the queue finds out on read
    assert drain(queue) == [] and len(queue) == 0


def test_nothing_secret_reaches_the_disk(opened):
    queue = opened()
    queue.append(record(1, destination="https://alice:hunter2@opik.example/api/v1/private/otel/v1/traces"))
    contents = b""
    for directory, _, names in os.walk(queue.directory):
        for name in names:
            with open(os.path.join(directory, name), "rb") as file:
                contents += file.read()
    assert b"hunter2" not in contents and b"alice" not in contents
    assert queue.oldest().record.destination == "https://opik.example/api/v1/private/otel/v1/traces"


def test_close_removes_an_empty_own_directory_and_then_stores_nothing(opened, caplog):
    queue = opened()
    queue.append(record(1))
    queue.remove(queue.oldest())
    queue.close()
    assert os.listdir(queue.directory) == []
    assert queue.append(record(2)) is False
    assert queue.stats()["dropped_records"] == 1 and "was closed" in caplog.text
    assert queue.oldest() is None


def test_directory_removed_while_running_starts_a_fresh_one(opened):
    queue = opened()
    queue.append(record(1))
    for name in os.listdir(queue.directory):
        path = os.path.join(queue.directory, name)
        for entry in os.listdir(path):
            os.unlink(os.path.join(path, entry))
        os.rmdir(path)
    assert queue.append(record(2)) is True
    assert drain(queue) == [record(2)]


def test_unfinished_writes_and_stale_staging_are_cleaned(opened):
    path, names = left_behind(opened, [record(1)])
    with open(os.path.join(path, ".tmp-" + names[0]), "wb") as file:
        file.write(b"half")
    staging = os.path.join(os.path.dirname(path), ".new-p1-deadbeef")
    os.mkdir(staging)
    os.utime(staging, (0, 0))
    later = opened()
    assert drain(later) == [record(1)]
    assert not os.path.exists(path) and not os.path.exists(staging)


def test_unrelated_files_in_the_directory_are_left_alone(opened):
    queue = opened()
    stray = os.path.join(queue.directory, "notes.txt")
    with open(stray, "w") as file:
        file.write("mine")
    queue.append(record(1))
    assert drain(queue) == [record(1)]
    assert os.path.exists(stray)
